"""The report of `make real-bench`: results JSON, a markdown table and a PNG.

    python benchmarks/real_templates_report.py outputs/real_templates   # rewrite from the stages

Reads only what the stages wrote: each stage's ``stage.json`` summary, its
``predictions.parquet`` (for bootstrap intervals, re-parsed with the shared answer parser), and for
GRPO verl's own files: ``grpo_metrics.jsonl`` (file logger: score, entropy, response length,
step time) and ``rollouts/<step>.jsonl`` (``trainer.rollout_data_dir``: every sampled response
with its reward components), from which the format rate and reward per component per step come.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reward.labels import ABNORMAL  # noqa: E402
from reward.parsing import parse_answer  # noqa: E402

#: RationAnomaly's published BGL template-level ablation (arXiv 2509.14693, Llama-2-7B-chat)
PUBLISHED: tuple[tuple[str, float], ...] = (
    ("zero-shot", 0.686),
    ("SFT only", 0.866),
    ("SFT + GRPO", 0.887),
)

#: how this benchmark's protocol differs from the paper's (quoted in the README)
PROTOCOL_DIFFERENCES: tuple[str, ...] = (
    "model: SmolLM2-135M-Instruct (dequantised from Q4_1 GGUF) instead of Llama-2-7B-chat",
    "split: LogPrompt's 1,766 BGL templates with RationAnomaly's patch (111 abnormal), seeded "
    "stratified 60/10/30 split; the paper's 2,000/8,000 split is not published",
    "teacher: label-conditioned rule rationales (and R-Log's where they cover a train template) "
    "instead of the paper's GPT-4-class teacher",
    "GRPO: a few CPU steps of 8 prompts x 4 samples, no KL/reference model, LoRA-free full update "
    "of the merged SFT model, instead of 2 epochs of 32 x 16 on 8 A100s",
)

#: verl file-logger keys kept per GRPO step. No entropy and no KL to a reference: on CPU the run
#: skips the old-log-prob pass (bypass mode; verl logs entropy there) and the reference model
STEP_KEYS: tuple[str, ...] = ("critic/score/mean", "response_length/mean",
                              "response_length/clip_ratio", "actor/pg_loss", "actor/grad_norm",
                              "actor/ppo_kl", "timing_s/step")

BOOTSTRAP_SAMPLES = 1000


# ----------------------------------------------------------------------------- metrics


def f1_of(gold: Sequence[str], pred: Sequence[str]) -> float:
    """F1 of the ``abnormal`` class, ``unknown`` counted wrong (the project's convention).

    >>> f1_of(["abnormal", "normal", "abnormal"], ["abnormal", "abnormal", "unknown"])
    0.5
    """
    tp = sum(g == ABNORMAL and p == ABNORMAL for g, p in zip(gold, pred, strict=True))
    fp = sum(g != ABNORMAL and p == ABNORMAL for g, p in zip(gold, pred, strict=True))
    fn = sum(g == ABNORMAL and p != ABNORMAL for g, p in zip(gold, pred, strict=True))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def bootstrap(statistic: Callable[..., float], columns: Sequence[Sequence[str]], seed: int = 0,
              samples: int = BOOTSTRAP_SAMPLES) -> list[float]:
    """``statistic(*columns)`` over test rows resampled with replacement (seeded), sorted."""
    rng = random.Random(seed)
    n = len(columns[0])
    values = []
    for _ in range(samples):
        idx = rng.choices(range(n), k=n)
        values.append(statistic(*([col[i] for i in idx] for col in columns)))
    return sorted(values)


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """The 2.5 % and 97.5 % percentiles of sorted bootstrap ``values``."""
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def bootstrap_f1(gold: Sequence[str], pred: Sequence[str], seed: int = 0,
                 samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile interval of F1 over test rows resampled with replacement (seeded)."""
    return interval95(bootstrap(f1_of, (gold, pred), seed, samples))


def paired_bootstrap(gold: Sequence[str], a: Sequence[str], b: Sequence[str], seed: int = 0,
                     samples: int = BOOTSTRAP_SAMPLES) -> dict[str, float]:
    """F1(b) − F1(a) on the same rows, with its 95 % interval and P(difference ≤ 0)."""
    diffs = bootstrap(lambda g, x, y: f1_of(g, y) - f1_of(g, x), (gold, a, b), seed, samples)
    low, high = interval95(diffs)
    return {"difference": round(f1_of(gold, b) - f1_of(gold, a), 4),
            "ci95": [round(low, 4), round(high, 4)],
            "p_not_better": round(sum(d <= 0 for d in diffs) / samples, 4)}


def read_predictions(stage_dir: Path) -> tuple[list[str], list[str], list[str]] | None:
    """``(logs, gold, parsed predictions)`` of a stage's ``predictions.parquet`` (None if absent)."""
    import pandas as pd

    path = stage_dir / "predictions.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path, columns=["log", "label", "response"])
    return (frame["log"].tolist(), frame["label"].tolist(),
            [parse_answer(r if isinstance(r, str) else "") for r in frame["response"]])


# ----------------------------------------------------------------------------- GRPO curves


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verl_steps(metrics: Path) -> list[dict[str, float]]:
    """Per training step, the :data:`STEP_KEYS` verl's file logger wrote (in step order)."""
    if not metrics.is_file():
        return []
    rows = [r for r in read_jsonl(metrics) if "critic/score/mean" in r.get("data", {})]
    return [{"step": r["step"], **{k: r["data"].get(k) for k in STEP_KEYS}}
            for r in sorted(rows, key=lambda r: r["step"])]


def match_log(prompt: str, extra_by_log: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ``extra_info`` whose log the decoded prompt holds (the longest such log), or None."""
    found = [log for log in extra_by_log if f"Log: {log}" in prompt]
    return extra_by_log[max(found, key=len)] if found else None


def rollout_steps(folder: Path, extra_by_log: Mapping[str, Mapping[str, Any]] | None = None,
                  reward_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per step, from verl's rollout dump (``trainer.rollout_data_dir``): format rate (``unknown``
    = no parsable answer), answer accuracy, share flagged abnormal, verl's mean ``reward/score``.

    verl 0.9.1 dumps no reward components for training steps, so with ``extra_by_log`` (the GRPO
    rows' ``extra_info`` by log) and ``reward_kwargs`` each response is scored again with our
    ``compute_score`` and the mean of every component is ``component/<name>`` (without a
    perplexity model the perplexity term is absent: ``component/score`` then differs from
    ``reward/score`` by it).
    """
    from reward.api import compute_score

    out = []
    files = sorted(folder.glob("*.jsonl"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    for path in files:
        rows = read_jsonl(path)
        if not rows:
            continue
        preds = [parse_answer(r.get("output", "")) for r in rows]
        gold = [r.get("gts") for r in rows]
        step: dict[str, Any] = {
            "step": int(path.stem), "samples": len(rows),
            "unknown_rate": sum(p == "unknown" for p in preds) / len(rows),
            "accuracy": sum(p == g for p, g in zip(preds, gold, strict=True)) / len(rows),
            "abnormal_rate": sum(p == ABNORMAL for p in preds) / len(rows),
            "reward/score": statistics.fmean(float(r["score"]) for r in rows)}
        if extra_by_log is not None and reward_kwargs is not None:
            parts: dict[str, list[float]] = {}
            for row in rows:
                info = match_log(row.get("input", ""), extra_by_log)
                result = compute_score("bgl", row.get("output", ""), row.get("gts"), info or {},
                                       **reward_kwargs)
                for key, value in result.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        parts.setdefault(key, []).append(float(value))
            step.update({f"component/{k}": statistics.fmean(v) for k, v in parts.items()})
        out.append(step)
    return out


def grpo_extra(work: Path) -> dict[str, Mapping[str, Any]]:
    """``{log: extra_info}`` of the GRPO prompts of the data stage (empty when absent)."""
    import pandas as pd

    path = work / "data" / "grpo_train.parquet"
    if not path.is_file():
        return {}
    return {info["log"]: dict(info) for info in pd.read_parquet(path)["extra_info"]}


# ----------------------------------------------------------------------------- tables


def stage_row(name: str, record: Mapping[str, Any], work: Path) -> dict[str, Any] | None:
    """One result row of a stage that has test metrics (None otherwise)."""
    summary = record.get("summary") or {}
    metrics = summary.get("metrics")
    if not metrics:
        return None
    row = {"stage": name, **{k: metrics.get(k) for k in ("precision", "recall", "f1", "accuracy",
                                                          "unknown_rate", "n")},
           "seconds": record.get("seconds"), "response_tokens": summary.get("response_tokens"),
           "capped_rate": summary.get("capped_rate"), "max_tokens": summary.get("max_tokens")}
    preds = read_predictions(work / name)
    if preds is not None:
        row["f1_ci95"] = [round(v, 4) for v in bootstrap_f1(preds[1], preds[2])]
    return row


def flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"a.b": value}``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def superseded_rows(work: Path, records: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Earlier tries of a stage (``<work>/superseded/``): their metrics and what differed."""
    rows = []
    for path in sorted((work / "superseded").glob("*.json")):
        old = json.loads(path.read_text(encoding="utf-8"))
        metrics = (old.get("summary") or {}).get("metrics") or {}
        now = flat((records.get(old["name"]) or {}).get("settings") or {})
        then = flat(old.get("settings") or {})
        changed = {k: then.get(k) for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)}
        rows.append({"stage": old["name"], "finished_at": old.get("finished_at"),
                     "settings_then": changed, "seconds": old.get("seconds"),
                     "capped_rate": (old.get("summary") or {}).get("capped_rate"),
                     **{k: metrics.get(k) for k in ("precision", "recall", "f1", "unknown_rate")}})
    return sorted(rows, key=lambda r: str(r["finished_at"]))


def seed_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows named ``<group>_s<seed>`` gathered: F1 mean, sample std, min, max and the seeds."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        base, sep, seed = row["stage"].rpartition("_s")
        if sep and seed.isdigit():
            groups.setdefault(base, []).append(row)
    out = {}
    for base, members in groups.items():
        f1 = [float(m["f1"]) for m in members]
        out[base] = {"seeds": [m["stage"] for m in members], "f1_mean": round(statistics.fmean(f1), 4),
                     "f1_std": round(statistics.stdev(f1), 4) if len(f1) > 1 else None,
                     "f1_min": round(min(f1), 4), "f1_max": round(max(f1), 4),
                     "unknown_mean": round(statistics.fmean(float(m["unknown_rate"]) for m in members), 4)}
    return out


def grpo_comparisons(records: Mapping[str, Any], work: Path,
                     profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each GRPO run against the SFT run it started from, on the same test rows."""
    if not profile.get("grpo_from"):
        return []
    source, seed = profile["grpo_from"]
    base = f"sft_{source}_s{seed}"
    start = read_predictions(work / base)
    out = []
    for name in records:
        if not name.startswith("grpo_"):
            continue
        after = read_predictions(work / name)
        if start is None or after is None or start[0] != after[0]:
            continue
        out.append({"grpo": name, "sft": base, **paired_bootstrap(start[1], start[2], after[2])})
    return out


def fmt(value: Any, digits: int = 3) -> str:
    """A number for the markdown table (``–`` for none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: Mapping[str, Any]) -> str:
    """The results as markdown: stage table, seed spread, GRPO − SFT, per-step table, anchors."""
    lines = ["| stage | P | R | F1 (95 % CI) | acc | unknown | tokens (capped) | time s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["stages"]:
        ci = row.get("f1_ci95")
        f1 = fmt(row["f1"]) + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
        tokens = ("–" if row.get("response_tokens") is None
                  else f"{row['response_tokens']:.0f} ({row['capped_rate']:.0%})")
        lines.append(f"| {row['stage']} | {fmt(row['precision'])} | {fmt(row['recall'])} | {f1} | "
                     f"{fmt(row['accuracy'])} | {fmt(row['unknown_rate'])} | {tokens} | "
                     f"{fmt(row['seconds'], 0)} |")
    if results["seed_groups"]:
        lines += ["", "| runs | seeds | F1 mean | F1 std | F1 min–max | unknown mean |",
                  "|---|---|---|---|---|---|"]
        for base, g in results["seed_groups"].items():
            lines.append(f"| {base} | {len(g['seeds'])} | {g['f1_mean']:.3f} | {fmt(g['f1_std'])} | "
                         f"{g['f1_min']:.3f}–{g['f1_max']:.3f} | {g['unknown_mean']:.3f} |")
    for cmp in results["grpo_vs_sft"]:
        lines += ["", f"{cmp['grpo']} − {cmp['sft']}: ΔF1 {cmp['difference']:+.3f} (paired bootstrap "
                      f"95 % CI {cmp['ci95'][0]:+.3f} to {cmp['ci95'][1]:+.3f}, "
                      f"P(Δ ≤ 0) = {cmp['p_not_better']:.2f})"]
    for name, run in results["grpo_runs"].items():
        lines += ["", f"{name} per step (verl's file logger and rollout dump):", "",
                  "| step | score | format ok | acc | flagged abnormal | resp len | capped | grad norm | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        rollouts = {r["step"]: r for r in run["rollouts"]}
        for step in run["steps"]:
            r = rollouts.get(step["step"], {})
            fmt_ok = None if "unknown_rate" not in r else 1 - r["unknown_rate"]
            lines.append(f"| {step['step']} | {fmt(step['critic/score/mean'])} | {fmt(fmt_ok, 2)} | "
                         f"{fmt(r.get('accuracy'), 2)} | {fmt(r.get('abnormal_rate'), 2)} | "
                         f"{fmt(step['response_length/mean'], 0)} | "
                         f"{fmt(step['response_length/clip_ratio'], 2)} | {fmt(step['actor/grad_norm'])} | "
                         f"{fmt(step['timing_s/step'], 0)} |")
    if results.get("step_time"):
        st = results["step_time"]
        lines += ["", f"GRPO step time, same model and batch: verl main_ppo {st['verl_s']:.0f} s, "
                      f"local TRL {st['trl_s']:.0f} s (verl / TRL = {st['ratio']:.2f})"]
    if results.get("superseded"):
        lines += ["", "Earlier tries, replaced by the settings above (their settings then):", "",
                  "| stage | settings then | P | R | F1 | unknown | capped | time s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in results["superseded"]:
            then = ", ".join(f"{k}={v}" for k, v in row["settings_then"].items()) or "same"
            lines.append(f"| {row['stage']} | {then} | {fmt(row['precision'])} | {fmt(row['recall'])} | "
                         f"{fmt(row['f1'])} | {fmt(row['unknown_rate'])} | {fmt(row['capped_rate'], 2)} | "
                         f"{fmt(row['seconds'], 0)} |")
    lines += ["", "RationAnomaly (BGL templates, Llama-2-7B-chat): "
              + ", ".join(f"{name} F1 {f1:.3f}" for name, f1 in PUBLISHED)]
    return "\n".join(lines) + "\n"


def step_time(records: Mapping[str, Any], runs: Mapping[str, Any]) -> dict[str, float] | None:
    """Median verl step (after the first) against the median local TRL step."""
    trl = (records.get("trl_step") or {}).get("summary", {}).get("step_seconds") or []
    verl = [s["timing_s/step"] for run in runs.values() for s in run["steps"][1:]
            if s.get("timing_s/step")]
    if not trl or not verl:
        return None
    v, t = statistics.median(verl), statistics.median(trl)
    return {"verl_s": round(v, 1), "trl_s": round(t, 1), "ratio": round(v / t, 3)}


def plot(results: Mapping[str, Any], path: Path) -> None:
    """F1 per stage (bars, bootstrap interval) and, per GRPO step, reward, format rate, length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    rows = results["stages"]
    ax = axes[0][0]
    names = [r["stage"] for r in rows]
    f1 = [r["f1"] for r in rows]
    err = [[r["f1"] - r["f1_ci95"][0] if r.get("f1_ci95") else 0 for r in rows],
           [r["f1_ci95"][1] - r["f1"] if r.get("f1_ci95") else 0 for r in rows]]
    ax.bar(range(len(rows)), f1, yerr=err, capsize=3, color="#4c72b0")
    for name, value in PUBLISHED:
        ax.axhline(value, ls=":", lw=1, color="grey")
        ax.text(len(rows) - 0.5, value, f"paper {name}", fontsize=7, va="bottom", ha="right")
    ax.set_xticks(range(len(rows)), names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("test F1 (abnormal)")
    ax.set_ylim(0, 1)
    ax.set_title("F1 per stage (95 % bootstrap interval)")
    panels = ((axes[0][1], "critic/score/mean", "steps", "mean reward (verl critic/score/mean)"),
              (axes[1][0], "format_ok", "rollouts", "format rate / accuracy of rollouts"),
              (axes[1][1], "response_length/mean", "steps", "response length (tokens)"))
    for ax, key, source, title in panels:
        for name, run in results["grpo_runs"].items():
            if source == "rollouts":
                xs = [r["step"] for r in run["rollouts"]]
                ax.plot(xs, [1 - r["unknown_rate"] for r in run["rollouts"]], marker="o",
                        label=f"{name} format ok")
                ax.plot(xs, [r["accuracy"] for r in run["rollouts"]], marker="s",
                        label=f"{name} accuracy")
            else:
                ax.plot([s["step"] for s in run["steps"]], [s[key] for s in run["steps"]],
                        marker="o", label=name)
        ax.set_xlabel("GRPO step")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(records: Mapping[str, Any], profile: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    rows = [r for r in (stage_row(name, rec, work) for name, rec in records.items()) if r]
    extra = grpo_extra(work)
    def reward_kwargs(name: str) -> dict[str, Any]:
        # each run's own class weights (an ablation changes them), else the profile's
        grpo = (records[name].get("settings") or {}).get("grpo") or profile.get("grpo") or {}
        return {"preset": "rationanomaly", "class_weights": grpo.get("class_weights")}

    runs = {name: {"steps": verl_steps(work / name / "grpo_metrics.jsonl"),
                   "rollouts": rollout_steps(work / name / "rollouts", extra, reward_kwargs(name))}
            for name in records if name.startswith("grpo_")}
    data = (records.get("data") or {}).get("summary", {})
    results = {"profile": json.loads(json.dumps(profile, default=str)), "data": data,
               "stages": rows, "seed_groups": seed_groups(rows),
               "grpo_vs_sft": grpo_comparisons(records, work, profile), "grpo_runs": runs,
               "stage_seconds": {name: rec.get("seconds") for name, rec in records.items()},
               "published": dict(PUBLISHED), "protocol_differences": list(PROTOCOL_DIFFERENCES),
               "superseded": superseded_rows(work, records)}
    results["step_time"] = step_time(records, runs)
    return results


def write_report(records: Mapping[str, Any], profile: Mapping[str, Any], work: Path,
                 out: Path) -> list[Path]:
    """Write ``real_templates.{json,md,png}`` into ``out``; return their paths."""
    from stage_runner import write_results

    return write_results(out, "real_templates", collect(records, profile, work), markdown, plot)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the report from the stage folders of a finished (or partial) run."""
    import argparse

    from real_templates import PROFILES, RESULTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the benchmark's --work folder")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    records = {}
    for path in sorted(args.work.glob("*/stage.json")):
        records[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    for path in write_report(records, PROFILES[args.profile], args.work, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
