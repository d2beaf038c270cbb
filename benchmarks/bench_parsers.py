"""Parser benchmark on loghub's 2k samples: our grouping accuracy next to Drain's published one.

For every system under ``../shared/data/loghub_2k`` that has a ``*_structured.csv``, the format
file ``logdata/formats/loghub/<System>.yaml`` (logparser's published Drain settings: log_format,
masks, similarity, depth) parses the raw 2k log through the data stage's reader and miner, and the
cluster of each line is compared with loghub's ground-truth ``EventId``.

Grouping accuracy as loghub defines it: a line is correct when the set of lines in its predicted
group equals the set of lines in its ground-truth group. Throughput is lines/s of read + field
split + masking + mining of the 2k sample with a fresh miner, best of ``--repeats`` runs in this
process, one thread (a small sample: fixed costs weigh; ``bench_parse.py`` measures mining speed on
a million lines against drain3).

    .venv/bin/python benchmarks/bench_parsers.py            # table on stdout
    .venv/bin/python benchmarks/bench_parsers.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from logdata.drain import TemplateMiner, grouping_accuracy  # noqa: E402
from logdata.formats import LOGHUB_DIR, DatasetFormat, load_format_file  # noqa: E402
from logdata.parse import miner_settings  # noqa: E402
from logdata.readers import ReadStats, iter_raw  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "loghub_2k"
#: Drain's published grouping accuracy on loghub 2k (logparser's benchmark; Zhu et al., ICSE-SEIP
#: 2019). Mean over the 16 systems: 0.865.
DRAIN_PUBLISHED: dict[str, float] = {
    "HDFS": 0.9975, "Hadoop": 0.9475, "Spark": 0.92, "Zookeeper": 0.9665, "BGL": 0.9625,
    "HPC": 0.887, "Thunderbird": 0.955, "Windows": 0.997, "Linux": 0.69, "Android": 0.911,
    "HealthApp": 0.78, "Apache": 1.0, "Proxifier": 0.5265, "OpenSSH": 0.7875,
    "OpenStack": 0.7325, "Mac": 0.7865,
}


def systems(data: Path) -> list[str]:
    """Systems under ``data`` with a raw 2k log, a structured CSV and a shipped format file."""
    return sorted(p.name for p in data.iterdir() if p.is_dir()
                  and (p / f"{p.name}_2k.log_structured.csv").exists()
                  and (LOGHUB_DIR / f"{p.name}.yaml").exists())


def mine(log: Path, fmt: DatasetFormat) -> tuple[pa.Table, list[int], int]:
    """Read and mine ``log``; return (line table, cluster id per kept line, templates)."""
    table = pa.concat_tables(list(iter_raw(log, fmt, ReadStats())))
    miner = TemplateMiner(miner_settings(fmt))
    ids = miner.add_batch(table["content"])
    return table, ids.tolist(), len(miner)


def accuracy(system: str, data: Path) -> dict:
    """Grouping accuracy of ``system``'s 2k sample (and how many lines the format kept)."""
    fmt = load_format_file(LOGHUB_DIR / f"{system}.yaml")
    table, ids, n_templates = mine(data / system / f"{system}_2k.log", fmt)
    truth = pd.read_csv(data / system / f"{system}_2k.log_structured.csv").set_index("LineId")
    gold = truth.loc[table["line_no"].to_numpy(), "EventId"].tolist()
    return {"system": system, "lines": len(truth), "kept": table.num_rows,
            "templates": n_templates, "truth_templates": int(truth["EventId"].nunique()),
            "accuracy": grouping_accuracy(gold, ids)}


def throughput(system: str, data: Path, repeats: int) -> float:
    """Lines/s of read + split + mask + mine of the 2k sample with a fresh miner, best of N."""
    fmt = load_format_file(LOGHUB_DIR / f"{system}.yaml")
    log = data / system / f"{system}_2k.log"
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        table, _, _ = mine(log, fmt)
        best = min(best, time.perf_counter() - start)
    return table.num_rows / best


def table(rows: list[dict]) -> str:
    """The markdown table printed (and pasted into the README)."""
    out = ["| system | lines kept | templates (truth) | grouping accuracy | Drain published | Δ | "
           "lines/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        published = DRAIN_PUBLISHED[r["system"]]
        out.append(f"| {r['system']} | {r['kept']:,}/{r['lines']:,} | {r['templates']} "
                   f"({r['truth_templates']}) | {r['accuracy']:.4f} | {published:.4f} | "
                   f"{r['accuracy'] - published:+.4f} | {r['lines_per_s']:,.0f} |")
    ours = sum(r["accuracy"] for r in rows) / len(rows)
    theirs = sum(DRAIN_PUBLISHED[r["system"]] for r in rows) / len(rows)
    out.append(f"| **mean ({len(rows)} systems)** | | | **{ours:.4f}** | **{theirs:.4f}** | "
               f"{ours - theirs:+.4f} | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="loghub_2k folder")
    parser.add_argument("--repeats", type=int, default=5, help="throughput runs (best kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no loghub 2k data at {args.data}; nothing to measure", file=sys.stderr)
        return 1
    rows = []
    for system in systems(args.data):
        row = accuracy(system, args.data)
        row["lines_per_s"] = throughput(system, args.data, args.repeats)
        rows.append(row)
        print(f"{system}: accuracy {row['accuracy']:.4f}, {row['lines_per_s']:,.0f} lines/s",
              file=sys.stderr, flush=True)
    print(table(rows))
    worst = min(r["accuracy"] - DRAIN_PUBLISHED[r["system"]] for r in rows)
    print(f"\nworst gap to Drain's published figure: {worst:+.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
