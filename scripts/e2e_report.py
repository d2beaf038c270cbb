"""Summarise a `make e2e` run: stage times, verl's GRPO reward per step, final metrics.

    python scripts/e2e_report.py outputs/e2e        # prints, and writes outputs/e2e/report.md

Reads only what the run wrote: ``timings.tsv``, ``grpo_metrics.jsonl`` (verl's file logger, one
``{"step", "data"}`` record per training step) and ``eval/metrics.json``. Exits 1 when a logged
``critic/score/mean`` leaves the bounds of the recipe's reward (``reward.scorer`` computes them
from the configured components and class weights): a logged score outside them means something
other than the reward reached verl's metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCORE_KEYS = ("critic/score/mean", "critic/score/min", "critic/score/max")
# Ray class name of verl's colocated actor/ref workers (one per FSDP rank)
FSDP_WORKER_CLASS = "create_colocated_worker_cls.<locals>.WorkerDict"


def read_steps(path: Path) -> list[dict[str, Any]]:
    """Training-step records of verl's file logger, in step order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted((r for r in rows if "critic/score/mean" in r.get("data", {})), key=lambda r: r["step"])


def read_validation(path: Path) -> dict[str, float]:
    """The last validation record's metrics (``val-core/…``, ``val-aux/…``)."""
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line).get("data", {})
            out.update({k: v for k, v in data.items() if k.startswith("val-")})
    return out


def reward_bounds() -> tuple[float, float]:
    """Bounds of the rationanomaly_grpo recipe's reward as configured (components, class weights)."""
    from reward.scorer import get_composite
    from verl_recipes.local.chat.config import recipe_reward_kwargs

    composite = get_composite(recipe_reward_kwargs())
    return composite.low, composite.high


def step_rows(steps: list[dict[str, Any]], low: float, high: float) -> tuple[list[str], bool]:
    """One line per logged step (score mean/min/max, step seconds); and whether all means are in bounds."""
    lines, inside = [], True
    for row in steps:
        data = row["data"]
        ok = low - 1e-6 <= data["critic/score/mean"] <= high + 1e-6
        inside &= ok
        lines.append(
            f"  {row['step']:>4}" + "".join(f"{data[k]:>10.3f}" for k in SCORE_KEYS)
            + f"{data.get('timing_s/step', float('nan')):>9.1f}" + ("" if ok else "  OUT OF BOUNDS")
        )
    return lines, inside


def metric_text(value: float | None) -> str:
    """A metric with 3 decimals; ``n/a`` when undefined (``null`` in metrics.json).

    >>> metric_text(0.5), metric_text(None)
    ('0.500', 'n/a')
    """
    return "n/a" if value is None else f"{value:.3f}"


def render(e2e: Path) -> tuple[str, bool]:
    """Return the report text and whether every logged score lies inside the reward's bounds."""
    lines = ["== Stage times (s) =="]
    total = 0.0
    for row in (e2e / "timings.tsv").read_text(encoding="utf-8").splitlines():
        name, secs = row.split("\t")
        total += float(secs)
        lines.append(f"  {name:<11}{float(secs):>8.1f}")
    lines.append(f"  {'total':<11}{total:>8.1f}")

    low, high = reward_bounds()
    steps = read_steps(e2e / "grpo_metrics.jsonl")
    lines += ["", f"== GRPO reward per step (verl's own log; reward bounds [{low:.2f}, {high:.2f}]) =="]
    lines.append(f"  {'step':>4}" + "".join(f"{k.split('/')[-1]:>10}" for k in SCORE_KEYS) + f"{'step s':>9}")
    rows, inside = step_rows(steps, low, high)
    lines += rows
    inside &= bool(steps)
    validation = read_validation(e2e / "grpo_metrics.jsonl")
    if validation:
        lines += ["", "== Validation after the last step (verl) =="]
        lines += [f"  {key}: {value:.4f}" for key, value in sorted(validation.items())]

    multinode = e2e / "multinode"
    if (multinode / "grpo_metrics.jsonl").is_file():
        placement = json.loads((multinode / "placement.json").read_text(encoding="utf-8"))
        workers = placement["actor_nodes"].get(FSDP_WORKER_CLASS, [])
        lines += ["", f"== Multi-node: RAY_ADDRESS, trainer.nnodes=2, {placement['nodes']} raylets; "
                  f"FSDP workers on {len(workers)} distinct nodes =="]
        rows, multinode_inside = step_rows(read_steps(multinode / "grpo_metrics.jsonl"), low, high)
        lines += rows
        inside &= multinode_inside

    metrics = json.loads((e2e / "eval" / "metrics.json").read_text(encoding="utf-8"))
    overall = metrics["template"]["overall"]
    keys = ("precision", "recall", "f1", "accuracy", "unknown_rate", "n")
    lines += ["", "== Test templates (model_predict.py --backend vllm, model_evaluate.py) =="]
    lines.append("  " + "".join(f"{k:>13}" for k in keys))
    lines.append("  " + "".join(f"{overall[k]:>13d}" if k == "n" else f"{metric_text(overall[k]):>13}"
                                for k in keys))
    return "\n".join(lines) + "\n", inside


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("e2e_dir", type=Path, help="the run's folder (outputs/e2e)")
    args = parser.parse_args(argv)
    text, inside = render(args.e2e_dir)
    (args.e2e_dir / "report.md").write_text(text, encoding="utf-8")
    print(text, end="")
    if not inside:
        print("error: a logged critic/score/mean lies outside the reward's bounds", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
