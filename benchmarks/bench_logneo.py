#!/usr/bin/env python
"""Local next-key RL throughput: PPO (LogNEO) vs REINFORCE (LogGPT), side by side, one run.

The policy is LogGPT's GPT-2 (6 layers, 6 heads, width 60), randomly initialised (speed does not
depend on the weights) over a vocabulary of ``--vocab`` keys; the frozen reference is a copy.
Episodes are random keys: a ``--prompt``-key prompt and a ``--gold``-key gold continuation.

Each algorithm runs ``verl_recipes.local.keyseq.rl.KeyseqRL.step`` (draw, sample with a KV cache,
reward, reference log-probabilities, and the update) for one warm-up step and ``--steps`` timed
steps:

* ppo: ``logneo`` rewards, critic (a second GPT-2 with a value head), GAE, ``--ppo-epochs``
  clipped updates of actor and critic, KL penalty, CE regulariser (μ = 0.1);
* reinforce: ``loggpt`` rewards, one update, no critic, no CE.

Prints steps/s and generated tokens/s (tokens sampled per second of whole steps) and the ratio.

Usage::

    python benchmarks/bench_logneo.py [--steps 10] [--batch-size 32] [--gold 16] [--threads 1]
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from logdata.cliargs import add_flag, add_seed_flag, new_parser
from logdata.keyseq.vocab import KeyVocab
from verl_recipes.local.keyseq.model import build_keyseq_model
from verl_recipes.local.keyseq.rl import Episode, KeyseqRL, RLConfig


def episodes(vocab: KeyVocab, tokenizer, n: int, prompt: int, gold: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        keys = [vocab.keys[i] for i in rng.integers(0, len(vocab.keys), size=prompt + gold)]
        ids = tokenizer.convert_tokens_to_ids(keys)
        out.append(Episode((tokenizer.bos_token_id, *ids[:prompt]), tuple(keys[prompt:]),
                           tuple(ids[prompt:])))
    return out


def measure(algorithm: str, args) -> tuple[float, int, float]:
    """(seconds, generated tokens, steps) of ``args.steps`` timed steps."""
    vocab = KeyVocab.build([[f"E{i}" for i in range(args.vocab)]])
    model, tok = build_keyseq_model(vocab, args.arch, context=64, seed=args.seed)
    config = RLConfig(algorithm=algorithm, batch_size=args.batch_size, ppo_epochs=args.ppo_epochs,
                      seed=args.seed, device="cpu").resolved()
    trainer = KeyseqRL(model, copy.deepcopy(model), tok,
                       episodes(vocab, tok, 256, args.prompt, args.gold, args.seed), config)
    trainer.step(0)  # warm-up
    started, tokens = time.perf_counter(), 0
    for step in range(1, args.steps + 1):
        tokens += trainer.step(step)["tokens"]
    return time.perf_counter() - started, tokens, args.steps


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--steps", type=int, default=10, metavar="N", help="timed steps per algorithm")
    add_flag(parser, "--batch-size", type=int, default=32, metavar="N", help="episodes per step")
    add_flag(parser, "--ppo-epochs", type=int, default=2, metavar="N", help="PPO epochs")
    add_flag(parser, "--prompt", type=int, default=4, metavar="N", help="prompt keys")
    add_flag(parser, "--gold", type=int, default=16, metavar="N", help="gold continuation keys")
    add_flag(parser, "--vocab", type=int, default=50, metavar="N", help="keys in the vocabulary")
    add_flag(parser, "--arch", default="loggpt", help="next-key model architecture")
    add_seed_flag(parser, "seed of the model and the episodes")
    add_flag(parser, "--threads", type=int, default=1, metavar="N",
             help="torch CPU threads (0: torch's default; 1 is fastest on a shared 2-core box)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    results = {name: measure(name, args) for name in ("ppo", "reinforce")}
    print(f"model {args.arch}, vocab {args.vocab} keys, batch {args.batch_size}, prompt "
          f"{args.prompt} + gold {args.gold} keys, {args.ppo_epochs} PPO epochs, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"{'algorithm':<12}{'steps':>7}{'seconds':>10}{'s/step':>9}{'steps/s':>9}{'tokens/s':>10}")
    rates = {}
    for name, (seconds, tokens, steps) in results.items():
        rates[name] = steps / seconds
        print(f"{name:<12}{steps:>7}{seconds:>10.2f}{seconds / steps:>9.3f}{steps / seconds:>9.2f}"
              f"{tokens / seconds:>10.0f}")
    print(f"reinforce / ppo steps/s: {rates['reinforce'] / rates['ppo']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
