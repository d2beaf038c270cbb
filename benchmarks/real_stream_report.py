"""The results of ``benchmarks/real_stream.py``: JSON, a markdown summary and the soak's plot."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stage_runner import write_results


def collect(records: Mapping[str, Any], profile: Mapping[str, Any], work: Path | None = None
            ) -> dict[str, Any]:
    """The results payload from the stage records (stages that did not run are left out)."""
    summary = {name: record["summary"] for name, record in records.items() if record}
    out: dict[str, Any] = {"profile": dict(profile),
                           "stage_seconds": {n: r["seconds"] for n, r in records.items() if r}}
    out["offline"] = summary.get("offline")
    out["consistency"] = {n.removeprefix("consistency_"): s for n, s in summary.items()
                          if n.startswith("consistency_")}
    out["search"] = {n.removeprefix("search_"): s for n, s in summary.items() if n.startswith("search_")}
    out["soak"] = summary.get("soak")
    if work is not None and (work / "soak" / "samples.json").is_file():
        out["soak_samples"] = json.loads((work / "soak" / "samples.json").read_text())
    return out


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(results: Mapping[str, Any]) -> str:
    """Consistency, rate-search and soak tables."""
    lines = ["Real HDFS 2 % log through `python -m serving` (`benchmarks/real_stream.py`).", ""]
    if results.get("consistency"):
        lines += ["Every block's session verdict vs the offline detector (`pred`, `misses`, "
                  "`first_miss`, `max_rank`):", "",
                  "| backend | blocks offline | blocks served | differing | events | replay as fast "
                  "as possible: events/s | s |", "|---|---|---|---|---|---|---|"]
        for backend, c in sorted(results["consistency"].items()):
            lines.append(f"| {backend} | {c['blocks_offline']:,} | {c['blocks_served']:,} "
                         f"| {c['differences']} | {c['events']:,} | {_num(c['events_per_s'])} "
                         f"| {c['seconds']:.0f} |")
        lines.append("")
    for case, s in sorted(results.get("search", {}).items()):
        lines += [f"Rate search, {case} log (p99 ≤ 45 ms and kept up; each repeat a bisection):", "",
                  "| workers | highest rate held, per repeat | mean | std | min–max |",
                  "|---|---|---|---|---|"]
        for row in s["search"]:
            each = ", ".join("none" if r is None else f"{r:,}" for r in row["highest_held"])
            lines.append(f"| {row['workers']} | {each} | {row['mean']:,.0f} | {_num(row['std'])} "
                         f"| {row['min']:,}–{row['max']:,} |")
        lines.append("")
    soak = results.get("soak")
    if soak:
        c = soak["config"]
        lines += [f"Soak: {c['seconds'] / 60:g} min at {c['rate']:,} lines/s, {c['workers']} ONNX "
                  f"workers, real log looped ({soak['replay']}):", "",
                  "| processed | ingested | lost | p50 ms | p99 ms | worst 5-s p99 ms | max lag "
                  "| worker RSS first → last min (MiB) | slope MiB/min | Redis used MiB | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        rss = "; ".join(f"{_num(w['first_mib'], 1)} → {_num(w['last_mib'], 1)}" for w in soak["workers"])
        slope = "; ".join(_num(w["slope_mib_per_min"], 2) for w in soak["workers"])
        redis_first, redis_last = soak["redis_used_mib"]
        verdict = ", ".join(k.replace("_", " ") + (" ✓" if v else " ✗")
                            for k, v in soak["verdict"].items())
        lines.append(f"| {soak['processed']:,} | {soak['ingested']:,} "
                     f"| {soak['ingested'] - soak['processed']:,} | {_num(soak['p50_ms'], 1)} "
                     f"| {_num(soak['p99_ms'], 1)} | {_num(soak['worst_window_p99_ms'], 1)} "
                     f"| {_num(soak['max_lag'])} | {rss} | {slope} "
                     f"| {_num(redis_first, 0)} → {_num(redis_last, 0)} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Worker RSS, Redis memory and lag over the soak (an empty figure without a soak)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, lag) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    samples = results.get("soak_samples") or []
    t = [s["t"] / 60 for s in samples]
    for key in sorted({k for s in samples for k in s if k.endswith("_mib")}):
        mem.plot(t, [s.get(key) for s in samples], label=key.removesuffix("_mib"))
    mem.set_ylabel("MiB")
    mem.legend(fontsize=7)
    lag.plot(t, [s["lag"] for s in samples], label="lag (entries)")
    lag.plot(t, [s["pending"] for s in samples], label="pending")
    lag.set_xlabel("minutes")
    lag.legend(fontsize=7)
    mem.set_title("soak on the real HDFS log", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(records: Mapping[str, Any], profile: Mapping[str, Any], out: Path,
                 work: Path | None = None) -> list[Path]:
    """Write ``real_stream.{json,md,png}`` into ``out``; return their paths."""
    return write_results(out, "real_stream", collect(records, profile, work), markdown, plot)
