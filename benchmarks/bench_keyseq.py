#!/usr/bin/env python
"""Top-K detection throughput: batched ranks vs a per-position loop, side by side, one run.

The model is LogGPT's GPT-2 (6 layers, 6 heads, width 60), randomly initialised (speed does not
depend on the weights) over a vocabulary of ``--vocab`` keys. Sequences are random keys of length
``--length``.

* batched: ``validation.keyseq_detect.score_chunks``: one padded forward pass per batch of
  sequences, every true key's rank from one comparison against all logits;
* loop (reference): for every position, forward the prefix alone and rank the true key in Python
  (``validation.keyseq_detect.loop_ranks``).

Both produce the same miss counts (checked). Prints sequences/s, keys/s and the ratio.

Usage::

    python benchmarks/bench_keyseq.py [--sequences 256] [--length 40] [--vocab 400] [--k 80]
"""

from __future__ import annotations

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
from validation.keyseq_detect import cap_k, loop_ranks, n_real_keys, score_chunks
from verl_recipes.local.keyseq.model import build_keyseq_model


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--sequences", type=int, default=256, metavar="N",
             help="batched: sequences scored")
    add_flag(parser, "--loop-sequences", type=int, default=16, metavar="N",
             help="loop: sequences scored")
    add_flag(parser, "--length", type=int, default=40, metavar="N", help="keys per sequence")
    add_flag(parser, "--vocab", type=int, default=400, metavar="N", help="keys in the vocabulary")
    add_flag(parser, "--k", type=int, default=80, help="top-K of the detector")
    add_flag(parser, "--batch-size", type=int, default=32, metavar="N",
             help="sequences per forward pass")
    add_flag(parser, "--arch", default="loggpt", help="next-key model architecture")
    add_flag(parser, "--device", default="cpu", help="torch device")
    add_seed_flag(parser, "seed of the random model")
    add_flag(parser, "--threads", type=int, default=1, metavar="N",
             help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    vocab = KeyVocab.build([[f"E{i}" for i in range(args.vocab)]])
    model, tok = build_keyseq_model(vocab, args.arch, context=max(64, args.length + 2),
                                    seed=args.seed)
    model.to(args.device).eval()
    k = cap_k(args.k, n_real_keys(tok))
    rng = np.random.default_rng(args.seed)
    seqs = [[tok.bos_token_id, *rng.integers(4, len(vocab), size=args.length).tolist()]
            for _ in range(args.sequences)]
    score_chunks(model, seqs[: args.batch_size], [k], tok.pad_token_id, args.batch_size,
                 args.device)  # warm-up

    start = time.perf_counter()
    batched = score_chunks(model, seqs, [k], tok.pad_token_id, args.batch_size, args.device)
    t_batched = time.perf_counter() - start

    loop_model = model.to("cpu")
    subset = seqs[: args.loop_sequences]
    start = time.perf_counter()
    loop_misses = [sum(r >= k for r in loop_ranks(loop_model, ids)) for ids in subset]
    t_loop = time.perf_counter() - start
    assert loop_misses == batched.misses[: len(subset), 0].tolist(), "batched != loop"

    rows = [("batched", args.sequences, t_batched), ("per-position loop", len(subset), t_loop)]
    print(f"model {args.arch} ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"vocab {len(vocab)}, K={k}, {args.length} keys/sequence, torch threads "
          f"{torch.get_num_threads()}, device {args.device}")
    print(f"{'method':<20}{'sequences':>10}{'seconds':>10}{'seq/s':>12}{'keys/s':>12}")
    rates = {}
    for name, n, seconds in rows:
        rates[name] = n / seconds
        print(f"{name:<20}{n:>10}{seconds:>10.3f}{n / seconds:>12.1f}"
              f"{n * args.length / seconds:>12.1f}")
    print(f"speed-up batched / loop: {rates['batched'] / rates['per-position loop']:.1f}x "
          "(same miss counts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
