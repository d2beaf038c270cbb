#!/usr/bin/env python
"""Fuzz the reward with >= 100,000 generated model outputs; count exceptions and bound violations.

Outputs are seeded random mixtures of the answer tags (nested, repeated, truncated, wrong case),
label words, hedges, unicode (emoji, CJK, RTL, combining marks, zero-width), punctuation-only
text, and occasionally very long thinks (10,000 words, or 50,000 characters without a break).
Every preset is exercised (without a perplexity model). Exits 1 on any exception or violation.

Usage::

    python benchmarks/fuzz_reward.py               # 100,000 outputs, seed 0
    python benchmarks/fuzz_reward.py --n 200000 --seed 3
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from logdata.cliargs import add_flag, add_progress_flag, add_seed_flag, new_parser  # noqa: E402
from reward.labels import LABELS  # noqa: E402  (after the sys.path fallback)

PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<THINK>",
    "</Answer>",
    "<answer >",
    "< answer>",
    "normal",
    "abnormal",
    "Normal.",
    "ABNORMAL!!",
    "uncertain",
    "unknown",
    "not sure",
    "ab normal",
    "the kernel panicked",
    "log",
    " ",
    "\n",
    "\t",
    "...",
    "!?",
    "—",
    "…",
    "<",
    ">",
    "/",
    "</",
    "<>",
    "🙂",
    "日志异常",
    "שגיאה",
    "e\u0301",
    "\u200b",
    "\ufeff",
    "\x00",
    "\\",
    "'",
    '"',
    "{}",
    "[*]",
]


def long_think(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " ".join(rng.choice(["word", "error", "node", "ok."]) for _ in range(10_000))
    return "a" * 50_000


def random_text(rng: random.Random, max_pieces: int = 40) -> str:
    parts = []
    for _ in range(rng.randint(0, max_pieces)):
        roll = rng.random()
        if roll < 0.7:
            parts.append(rng.choice(PIECES))
        elif roll < 0.95:
            parts.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 12))))
        else:
            parts.append(chr(rng.randint(0x1F300, 0x1FAFF)))
    return "".join(parts)


def random_output(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.002:
        return f"<think>{long_think(rng)}</think><answer>{rng.choice(LABELS)}</answer>"
    if roll < 0.4:  # near-valid structure with noise inside
        think, answer = random_text(rng, 12), rng.choice([*LABELS, random_text(rng, 3)])
        text = f"<think>{think}</think><answer>{answer}</answer>"
        return text[: rng.randint(0, len(text))] if rng.random() < 0.2 else text
    return random_text(rng)


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--n", type=int, default=100_000, help="number of outputs")
    add_seed_flag(parser, "seed of the fuzzed outputs")
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    if args.n <= 0:
        print("error: --n must be positive", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    from tqdm import tqdm

    from reward import compute_score
    from reward.presets import PRESETS
    from reward.scorer import get_composite, score_bounds

    rng = random.Random(args.seed)
    presets = sorted(PRESETS)
    errors: Counter[str] = Counter()
    preds: Counter[str] = Counter()
    start = time.perf_counter()
    for i in tqdm(range(args.n), mininterval=5, desc="fuzz", disable=args.no_progress):
        preset = presets[i % len(presets)]
        extra = {
            "log": random_text(rng, 8) if rng.random() < 0.8 else None,
            "reference_rationale": random_text(rng, 20)
            if rng.random() < 0.8
            else rng.choice([None, "", "..."]),
        }
        try:
            result = compute_score("bgl", random_output(rng), rng.choice(LABELS), extra, preset=preset)
        except Exception as exc:  # the point of the run: count, never stop
            errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
            continue
        low, high = score_bounds({"preset": preset})
        keys = get_composite({"preset": preset}).keys
        if not (math.isfinite(result["score"]) and low - 1e-9 <= result["score"] <= high + 1e-9):
            errors[f"score out of bounds for {preset}"] += 1
        if tuple(result) != keys:
            errors[f"keys differ for {preset}"] += 1
        preds[result["pred"]] += 1
    elapsed = time.perf_counter() - start
    print(
        f"{args.n:,} fuzzed outputs over presets {presets} in {elapsed:.1f} s "
        f"({args.n / elapsed:,.0f}/s); predictions {dict(preds)}"
    )
    print(f"exceptions or violations: {sum(errors.values())}")
    for message, count in errors.most_common(10):
        print(f"  {count:6d}  {message}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
