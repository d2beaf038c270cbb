"""The report of `make real-keyseq`: results JSON, a markdown table and a PNG.

Every top-K detector (DeepLog, pretrained LogGPT, the RL variants) is judged from its per-sequence
``max_rank`` (the worst rank of a judged true key): a sequence is abnormal at K when
``max_rank >= K``, so one ``scores.parquet`` gives the whole K sweep. Seeds are aggregated as
mean ± sample standard deviation. RL is compared with the pretrained model of the same seed over
the whole sweep: F1 at every K; the best precision among the K whose recall is at least the
pretrained model's recall at the reference K ("fewer false alarms at equal recall"), beside the
pretrained model's own best precision over its sweep at that recall; and the same for recall at
its precision ("more recall at equal precision").
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reward.labels import ABNORMAL, NORMAL
from validation import metrics as M

#: published HDFS anchors (full HDFS, each paper's own protocol)
PUBLISHED: dict[str, float] = {"LogGPT (arXiv 2309.14482)": 0.901,
                               "LogNEO (arXiv 2606.08153)": 0.927}
PROTOCOL_DIFFERENCES: tuple[str, ...] = (
    "data: LogLead's 2 % block sample (11,501 blocks, 350 anomalous), not the full HDFS "
    "(575,061 blocks)",
    "model: LogGPT's GPT-2 shape (6 layers, width 60) for every variant; LogNEO uses GPT-Neo 1.3B",
    "RL: 100 steps of 32 episodes on 2 CPU cores, not the papers' epochs on GPUs",
    "DeepLog: our implementation (embedding input, the judged positions of our detector)",
)
BASELINE_NAMES = ("new_key", "pca", "isolation_forest", "local_outlier_factor")
DEEPLOG_G = 9


def sweep(scores: pd.DataFrame, ks: Sequence[int]) -> list[dict[str, Any]]:
    """P/R/F1 at every K from per-sequence ``max_rank`` (abnormal when ``max_rank >= K``).

    >>> s = pd.DataFrame({"label": ["abnormal", "normal", "normal"], "max_rank": [5, 1, 3]})
    >>> [(r["k"], r["tp"], r["fp"]) for r in sweep(s, [1, 2, 4, 6])]
    [(1, 1, 2), (2, 1, 1), (4, 1, 0), (6, 0, 0)]
    """
    labels = scores["label"].tolist()
    out = []
    for k in ks:
        pred = np.where(scores["max_rank"].to_numpy() >= k, ABNORMAL, NORMAL).tolist()
        out.append({"k": int(k), **M.binary_metrics(labels, pred)})
    return out


def at_k(rows: Sequence[Mapping[str, Any]], k: int) -> Mapping[str, Any]:
    """The sweep row of ``k``."""
    return next(r for r in rows if r["k"] == k)


def best_precision_at_recall(rows: Sequence[Mapping[str, Any]], recall: float) -> float | None:
    """The best precision among the K whose recall is at least ``recall`` (None: no such K).

    >>> best_precision_at_recall([{"precision": 0.9, "recall": 0.5}, {"precision": 0.7,
    ...                            "recall": 1.0}], 0.8)
    0.7
    """
    kept = [r["precision"] or 0.0 for r in rows if (r["recall"] or 0.0) >= recall - 1e-9]
    return max(kept) if kept else None


def best_recall_at_precision(rows: Sequence[Mapping[str, Any]], precision: float) -> float | None:
    """The best recall among the K whose precision is at least ``precision`` (None: no such K)."""
    kept = [r["recall"] or 0.0 for r in rows if (r["precision"] or 0.0) >= precision - 1e-9]
    return max(kept) if kept else None


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and count of the defined values."""
    kept = [float(v) for v in values if v is not None]
    return {"mean": round(statistics.fmean(kept), 4) if kept else None,
            "sd": round(statistics.stdev(kept), 4) if len(kept) > 1 else None, "n": len(kept)}


def read_scores(path: Path) -> pd.DataFrame | None:
    """A ``scores.parquet`` (None when absent)."""
    return pd.read_parquet(path) if path.is_file() else None


def topk_methods(records: Mapping[str, Any], work: Path, protocol: str,
                 seeds: Sequence[int]) -> dict[str, dict[int, Path]]:
    """``{method: {seed: scores.parquet}}`` of the top-K detectors that ran on ``protocol``."""
    from real_keyseq import RL_VARIANTS

    where = {"deeplog": ("deeplog", "scores.parquet"), "pretrain": ("pretrain", "detect/scores.parquet")}
    for variant in RL_VARIANTS:
        where[f"{variant} (best/)"] = (variant, "detect_best/scores.parquet")
        where[f"{variant} (last/)"] = (variant, "detect_last/scores.parquet")
    out: dict[str, dict[int, Path]] = {}
    for method, (prefix, rel) in where.items():
        found = {s: work / f"{prefix}_{protocol}_s{s}" / rel for s in seeds
                 if f"{prefix}_{protocol}_s{s}" in records}
        if found:
            out[method] = found
    return out


def method_row(name: str, sweeps: Mapping[int, list[dict[str, Any]]], k: int,
               seconds: Sequence[float]) -> dict[str, Any]:
    """One table row: metrics at ``k`` and the best F1 over the sweep, aggregated over seeds."""
    picked = [at_k(rows, k) for rows in sweeps.values()]
    best = [max(rows, key=lambda r: (r["f1"] or 0.0, -r["k"])) for rows in sweeps.values()]
    return {"method": name, "k": k, "seeds": sorted(sweeps),
            **{m: mean_sd([p[m] for p in picked]) for m in ("precision", "recall", "f1")},
            "fp": mean_sd([p["fp"] for p in picked]),
            "best_f1": mean_sd([b["f1"] for b in best]), "best_k": [b["k"] for b in best],
            "seconds": mean_sd(list(seconds))}


def baseline_rows(work: Path, protocol: str, seconds: float | None) -> list[dict[str, Any]]:
    """Rows of the simple detectors (no K; seeded ones aggregated)."""
    rows = []
    for name in BASELINE_NAMES:
        folder = work / f"baselines_{protocol}"
        runs = [pd.read_parquet(p) for p in sorted(folder.glob(f"{name}_s*.parquet"))]
        if not runs:
            continue
        metrics = [M.binary_metrics(r["label"].tolist(), r["pred"].tolist()) for r in runs]
        rows.append({"method": name, "k": None, "seeds": list(range(len(runs))),
                     **{m: mean_sd([x[m] for x in metrics]) for m in ("precision", "recall", "f1")},
                     "fp": mean_sd([x["fp"] for x in metrics]), "best_f1": None, "best_k": None,
                     "seconds": mean_sd([seconds] if seconds is not None else [])})
    return rows


def rl_comparison(sweeps: Mapping[str, Mapping[int, list[dict[str, Any]]]], k: int
                  ) -> list[dict[str, Any]]:
    """Each RL variant against the pretrained model of the same seed, over the whole sweep."""
    base = sweeps.get("pretrain") or {}
    out = []
    for method, per_seed in sweeps.items():
        if method in ("pretrain", "deeplog"):
            continue
        seeds = [s for s in per_seed if s in base]
        if not seeds:
            continue
        ks = [r["k"] for r in base[seeds[0]]]
        delta_f1 = [[(at_k(per_seed[s], kk)["f1"] or 0.0) - (at_k(base[s], kk)["f1"] or 0.0)
                     for kk in ks] for s in seeds]
        ref = {s: at_k(base[s], k) for s in seeds}
        out.append({
            "method": method, "seeds": seeds, "ks": ks,
            "delta_f1_per_k": [round(float(v), 4) for v in np.mean(delta_f1, axis=0)],
            "delta_f1_at_k": mean_sd([at_k(per_seed[s], k)["f1"] - ref[s]["f1"] for s in seeds]),
            "precision_at_equal_recall": mean_sd([best_precision_at_recall(per_seed[s], ref[s]["recall"])
                                                  for s in seeds]),
            # the pretrained model's own best over its sweep at the same recall (not only at K)
            "pretrain_precision": mean_sd([best_precision_at_recall(base[s], ref[s]["recall"])
                                           for s in seeds]),
            "recall_at_equal_precision": mean_sd([best_recall_at_precision(per_seed[s], ref[s]["precision"])
                                                  for s in seeds]),
            "pretrain_recall": mean_sd([best_recall_at_precision(base[s], ref[s]["precision"])
                                        for s in seeds]),
        })
    return out


def collect(records: Mapping[str, Any], profile: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    from real_keyseq import SWEEP

    k, seeds = int(profile["k"]), list(profile["seeds"])
    protocols: dict[str, Any] = {}
    for protocol in profile["protocols"]:
        if f"data_{protocol}" not in records:
            continue
        base = records.get(f"baselines_{protocol}")
        rows = baseline_rows(work, protocol, base["seconds"] if base else None)
        sweeps: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for method, paths in topk_methods(records, work, protocol, seeds).items():
            sweeps[method] = {s: sweep(pd.read_parquet(p), SWEEP) for s, p in paths.items()
                              if p.is_file()}
            prefix = method.split(" ")[0]
            seconds = [records[f"{prefix}_{protocol}_s{s}"]["seconds"] for s in sweeps[method]]
            rows.append(method_row(method, sweeps[method], DEEPLOG_G if method == "deeplog" else k,
                                   seconds))
            if method == "deeplog":
                rows.append({**method_row(method, sweeps[method], k, seconds),
                             "method": f"deeplog (K = {k})"})
        protocols[protocol] = {
            "data": (records[f"data_{protocol}"].get("summary") or {}),
            "rows": rows, "rl_vs_pretrain": rl_comparison(sweeps, k),
            "f1_per_k": {m: [mean_sd([at_k(per[s], kk)["f1"] for s in per])["mean"] for kk in SWEEP]
                         for m, per in sweeps.items()},
        }
    training = {name: rec["summary"].get("training") for name, rec in records.items()
                if (rec.get("summary") or {}).get("training")}
    return {"profile": json.loads(json.dumps(profile, default=str)), "sweep_k": list(SWEEP),
            "protocols": protocols, "rl_training": training,
            "stage_seconds": {name: rec.get("seconds") for name, rec in records.items()},
            "published": dict(PUBLISHED), "protocol_differences": list(PROTOCOL_DIFFERENCES)}


def fmt(cell: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``mean ± sd`` of a :func:`mean_sd` cell (``–`` when empty)."""
    if not cell or cell.get("mean") is None:
        return "–"
    text = f"{cell['mean']:.{digits}f}"
    return text + (f" ± {cell['sd']:.{digits}f}" if cell.get("sd") is not None else "")


def markdown(results: Mapping[str, Any]) -> str:
    """The report as markdown tables."""
    lines: list[str] = [f"K is fixed in advance (LogGPT's K = {results['profile']['k']} for HDFS; "
                        f"DeepLog's g = {DEEPLOG_G}); seeds: mean ± sd.", ""]
    k = results["profile"]["k"]
    for protocol, part in results["protocols"].items():
        counts = (part["data"].get("counts") or {}).get("test") or {}
        lines += [f"**{protocol} protocol** (test: {counts.get('sequences', '?')} blocks, "
                  f"{counts.get('abnormal', '?')} anomalous)", "",
                  "| detector | K | precision | recall | F1 | false alarms | test-set oracle: best F1 "
                  "over K (K), not a result | s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in part["rows"]:
            best = "–" if row["best_f1"] is None else (
                f"{fmt(row['best_f1'])} ({', '.join(map(str, row['best_k']))})")
            lines.append(f"| {row['method']} | {row['k'] or '–'} | {fmt(row['precision'])} | "
                         f"{fmt(row['recall'])} | {fmt(row['f1'])} | {fmt(row['fp'], 1)} | {best} | "
                         f"{fmt(row['seconds'], 0)} |")
        if part["rl_vs_pretrain"]:
            lines += ["", f"RL against the pretrained model of the same seed: ΔF1 at the fixed K = {k} "
                      "and at every K of the sweep; the curve comparisons read the test sweep of "
                      "both models with the same rule:", "",
                      "| variant | ΔF1 at K | ΔF1 per K (" + ", ".join(
                          map(str, part["rl_vs_pretrain"][0]["ks"])) + ") | precision at "
                      "pretrain's recall (pretrain's) | recall at pretrain's precision (pretrain's) |",
                      "|---|---|---|---|---|"]
            for c in part["rl_vs_pretrain"]:
                lines.append(
                    f"| {c['method']} | {fmt(c['delta_f1_at_k'])} | "
                    f"{' '.join(f'{v:+.3f}' for v in c['delta_f1_per_k'])} | "
                    f"{fmt(c['precision_at_equal_recall'])} ({fmt(c['pretrain_precision'])}) | "
                    f"{fmt(c['recall_at_equal_precision'])} ({fmt(c['pretrain_recall'])}) |")
        lines.append("")
    lines.append("Published (full HDFS, their protocols): " + ", ".join(
        f"{name} F1 {value}" for name, value in results["published"].items()))
    lines += ["", "Protocol differences: " + "; ".join(results["protocol_differences"]) + "."]
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: Path) -> None:
    """F1 against K (mean over seeds) per top-K detector, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = results["protocols"]
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(6.5 * max(1, len(parts)), 4.5),
                             squeeze=False)
    for ax, (protocol, part) in zip(axes[0], parts.items(), strict=False):
        for method, values in part["f1_per_k"].items():
            ax.plot(results["sweep_k"], [v if v is not None else np.nan for v in values],
                    marker="o", label=method)
        for row in part["rows"]:
            if row["k"] is None and row["f1"]["mean"] is not None:
                ax.axhline(row["f1"]["mean"], linestyle=":", linewidth=1, color="grey")
                ax.annotate(row["method"], (results["sweep_k"][-1], row["f1"]["mean"]), fontsize=7,
                            ha="right", va="bottom")
        ax.set(xlabel="K (top-K)", ylabel="test F1 (mean over seeds)", ylim=(0, 1.02),
               title=f"real HDFS 2 %, {protocol} protocol")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(records: Mapping[str, Any], profile: Mapping[str, Any], work: Path,
                 out: Path) -> list[Path]:
    """Write ``real_keyseq.{json,md,png}`` into ``out``; return their paths."""
    from stage_runner import write_results

    return write_results(out, "real_keyseq", collect(records, profile, work), markdown, plot)
