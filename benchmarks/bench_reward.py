#!/usr/bin/env python
"""Reward benchmark: ours against the released reward's behaviour, side by side in one run.

Inputs: N realistic responses (~300-word thinks, half correct, seeded) with ~110-word reference
rationales, and a perplexity scorer of DistilGPT-2's size (GPT-2, 6 layers, 768 wide, 12 heads,
50,257-token vocabulary, random weights, built offline with a BPE tokenizer trained here).

* reference — what RationAnomaly's released reward does per response: load the scorer from disk,
  score the whole response's perplexity on CPU one at a time (also for wrong answers, whose
  result is then thrown away), character BLEU with ``nltk``, ROUGE with ``rouge-score``, length.
  Run on ``--ref-n`` responses and extrapolated to N (it is slow), which the output says.
* ours — ``reward`` with the ``rationanomaly`` preset and ``perplexity_model``: one load,
  think tokens only, perplexity only for correct answers, length-sorted batches.

Usage::

    python benchmarks/bench_reward.py                   # N=512, reference on 48, CPU
    python benchmarks/bench_reward.py --ref-n 512       # the full reference run (minutes)
    python benchmarks/bench_reward.py --device cuda     # ours on a GPU
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from logdata.cliargs import add_flag, add_out_flag, new_parser  # noqa: E402  (after the sys.path fallback)
from reward.labels import ABNORMAL, NORMAL  # noqa: E402

_VOCAB_TEXT = (
    "the log reports a kernel panic on node R02 which indicates fatal hardware failure "
    "instruction cache parity error corrected routine heartbeat message no error keyword "
    "link failure between nodes job aborted memory address floating value placeholder "
    "therefore this entry should be marked abnormal normal because component severity "
    "interrupt ciod failed to read message prefix on control stream torus receiver "
    "generating core data TLB error interrupt machine check retry succeeded network "
    "daemon started service stopped connection reset by peer timeout warning info "
)
WORDS = tuple(_VOCAB_TEXT.split())


def make_text(rng: random.Random, n_words: int) -> str:
    out, sentence = [], 0
    for _ in range(n_words):
        out.append(rng.choice(WORDS))
        sentence += 1
        if sentence > rng.randint(8, 20):
            out[-1] += "."
            sentence = 0
    return " ".join(out)


def make_samples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        gold = ABNORMAL if i % 4 in (0, 1) else NORMAL
        correct = i % 2 == 0
        pred = gold if correct else (NORMAL if gold == ABNORMAL else ABNORMAL)
        think = make_text(rng, rng.randint(260, 340))
        samples.append(
            {
                "response": f"<think>{think}</think><answer>{pred}</answer>",
                "ground_truth": gold,
                "extra_info": {"log": make_text(rng, 12), "reference_rationale": make_text(rng, 110)},
            }
        )
    return samples


def build_scorer(out: Path, seed: int = 0) -> Path:
    """DistilGPT-2-sized GPT-2 with random weights and a BPE tokenizer trained offline."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(REPO / "scripts"))
    from build_tiny_model import build_chat_tokenizer

    rng = random.Random(seed)
    tokenizer = build_chat_tokenizer([make_text(rng, 200) for _ in range(200)], vocab_size=800)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=6, n_head=12)
    GPT2LMHeadModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# --- the released reward's behaviour -------------------------------------------------------------
def reference_score(sample: dict, model_path: Path) -> tuple[float, dict[str, float]]:
    """One response the released way: load, full-response PPL for every answer, nltk/rouge-score."""
    import torch
    from nltk.translate.bleu_score import sentence_bleu
    from rouge_score import rouge_scorer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reward import extract_think, parse_answer
    from reward.context import check_format

    timings = {}
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).eval()
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = tokenizer(sample["response"], return_tensors="pt")["input_ids"][:, :1024]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    ppl = math.exp(min(float(loss), 50.0))
    timings["forward"] = time.perf_counter() - t0
    timings["tokens"] = ids.shape[1]
    t0 = time.perf_counter()
    think, ref = extract_think(sample["response"]), sample["extra_info"]["reference_rationale"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        char_bleu = sentence_bleu([list(ref)], list(think))
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(ref, think)
    semantic = (char_bleu + sum(v.fmeasure for v in rouge.values())) / 8 - 0.5
    p, r = len(think), len(ref)
    v = 2 * abs(p - r) / (p + r)
    length = v if r < p < 3 * r else -v
    fmt_ok = check_format(sample["response"])
    pred = parse_answer(sample["response"])
    score = 0.1 if fmt_ok else -1.0
    if pred == sample["ground_truth"]:
        score += 1.0 + 0.5 * (semantic + length + (100 - ppl) / 100)
    else:
        score += -1 / 0.15
    timings["components"] = time.perf_counter() - t0
    return score, timings


def run_interleaved(
    samples: list[dict], model_path: Path, ref_n: int, device: str, int8: bool, dtype: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Time the reference on ``ref_n`` responses and ours on all, interleaved block by block.

    The machine is shared, so load varies over minutes: block ``i`` runs the reference on one
    response, then ours on the next ``len(samples) / ref_n`` responses (batched within the block),
    so both see the same conditions.
    """
    from reward.context import ScoreContext
    from reward.perplexity import clear_scorers, get_scorer
    from reward.scorer import clear_cache, get_composite

    clear_scorers()
    clear_cache()
    t0 = time.perf_counter()
    scorer = get_scorer(model_path, device=device, int8=int8, dtype=dtype)
    ours = {"load": time.perf_counter() - t0, "components": 0.0, "model": 0.0}
    options = {"device": device, "int8": int8, "dtype": dtype}
    composite = get_composite(
        {"preset": "rationanomaly", "perplexity_model": str(model_path), "perplexity_options": options}
    )
    ref = {"load": 0.0, "forward": 0.0, "components": 0.0, "tokens": 0.0}
    block = len(samples) // ref_n
    before, correct = scorer.forward_passes, []
    for i in tqdm(range(ref_n), desc="blocks", mininterval=10):
        chunk = samples[i * block : (i + 1) * block if i < ref_n - 1 else len(samples)]
        _, timings = reference_score(chunk[i % len(chunk)], model_path)
        for key, value in timings.items():
            ref[key] += value
        contexts = [
            ScoreContext.build(s["response"], s["ground_truth"], "bgl", s["extra_info"]) for s in chunk
        ]
        composite.score_many(contexts, timings=ours)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        correct += [c for c in contexts if c.correct]
    ref["total"] = ref["load"] + ref["forward"] + ref["components"]
    ours["forward"] = ours.pop("model")
    ours["total"] = ours["load"] + ours["forward"] + ours["components"]
    ours.update(
        forward_passes=scorer.forward_passes - before,
        dtype=str(scorer.dtype),
        perplexity_scored=len(correct),
        ppl_rel_diff_vs_fp32=ppl_agreement(scorer, [c.think for c in correct[:16]], model_path),
    )
    return ref, ours


def ppl_agreement(scorer, texts: list[str], model_path: Path) -> float:
    """Largest relative perplexity difference between ``scorer`` and an fp32 CPU scorer."""
    from reward.perplexity import PerplexityScorer

    reference = PerplexityScorer(str(model_path), device="cpu", dtype="float32", batch_size=1)
    ours = scorer.log_perplexity(texts)
    exact = reference.log_perplexity(texts)
    return max(abs(math.exp(a - b) - 1.0) for a, b in zip(ours, exact, strict=True))


def components_throughput(samples: list[dict], repeats: int = 3) -> float:
    """Responses/s of every component except perplexity, one thread."""
    import torch

    from reward.context import ScoreContext
    from reward.scorer import get_composite

    torch.set_num_threads(1)
    composite = get_composite({"preset": "rationanomaly"})
    best = math.inf
    for _ in range(repeats):
        contexts = [
            ScoreContext.build(s["response"], s["ground_truth"], "bgl", s["extra_info"]) for s in samples
        ]
        t0 = time.perf_counter()
        composite.score_many(contexts)
        best = min(best, time.perf_counter() - t0)
    return len(samples) / best


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--n", type=int, default=512, help="responses (half correct)")
    add_flag(parser, "--ref-n", type=int, default=48, metavar="N",
             help="responses the reference runs on")
    add_flag(parser, "--device", default="cpu", help="device for ours (cpu, cuda)")
    add_flag(parser, "--threads", type=int, default=2, metavar="N", help="torch CPU threads")
    add_flag(parser, "--dtype", default="auto", help="ours: scorer dtype (auto, float32, bfloat16)")
    add_flag(parser, "--int8", action="store_true", help="ours: int8 dynamic quantisation (CPU)")
    add_out_flag(parser, "also write the numbers here as JSON (default: print only)",
                 required=False, aliases=("--json",))
    args = parser.parse_args(argv)
    if args.n < 2 or not 0 < args.ref_n <= args.n:
        print("error: need --n >= 2 and 0 < --ref-n <= --n", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    samples = make_samples(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = build_scorer(Path(tmp) / "scorer")
        # warm-up (imports, allocator) outside the timings
        run_interleaved(samples[:4], model_path, 1, args.device, args.int8, args.dtype)
        ref, ours = run_interleaved(samples, model_path, args.ref_n, args.device, args.int8, args.dtype)
    torch.set_num_threads(args.threads)
    comp_rate = components_throughput(samples)
    scale = args.n / args.ref_n
    ref_total = ref["total"] * scale
    rows = [
        ("load scorer", ref["load"] * scale, ours["load"]),
        ("perplexity forward", ref["forward"] * scale, ours["forward"]),
        ("other components", ref["components"] * scale, ours["components"]),
        ("total", ref_total, ours["total"]),
    ]
    print(
        f"{args.n} responses (half correct), DistilGPT-2-sized scorer, torch threads={args.threads}, "
        f"ours on {args.device} {ours['dtype']}{' int8' if args.int8 else ''}"
    )
    print(
        f"reference measured on {args.ref_n} responses (interleaved with ours) and scaled x{scale:.2f}; "
        f"mean {ref['tokens'] / args.ref_n:.0f} tokens per response"
    )
    print(f"{'':22s}{'reference s':>14s}{'ours s':>10s}{'ratio':>9s}")
    for name, r, o in rows:
        print(f"{name:22s}{r:14.2f}{o:10.2f}{(r / o if o > 0 else math.inf):9.1f}x")
    print(
        f"reference per response: {ref['total'] / args.ref_n:.3f} s; ours per response: "
        f"{ours['total'] / args.n * 1000:.1f} ms; perplexity on {ours['perplexity_scored']} correct "
        f"answers in {ours['forward_passes']} forward passes"
    )
    print(f"components without perplexity, 1 thread: {comp_rate:,.0f} responses/s")
    print(f"ours vs fp32 perplexity on 16 thinks: max relative difference {ours['ppl_rel_diff_vs_fp32']:.2%}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"reference": ref, "ours": ours, "components_per_s": comp_rate, "scale": scale}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
