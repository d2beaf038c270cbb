"""Template-mining and `prepare` benchmark: our parser vs drain3, side by side in one run.

Part 1 (parser): loghub BGL 2k is replicated with varied numbers (each copy maps the digits
through its own seeded permutation) to ``--lines`` lines; the contents are extracted once, then
each parser runs in its own subprocess that loads the contents into memory and mines them, so
only the mining is timed; peak RSS is the subprocess's ``ru_maxrss``. drain3 runs from
``.venv-bench`` (created on demand from ``benchmarks/requirements-bench.txt``; drain3 never goes
into ``.venv``), ours from the current interpreter, both single-threaded with the same mask.
Grouping accuracy of both on the loghub 2k samples is printed beside the speed.

Part 2 (prepare): ``python -m logdata prepare --dataset synthetic`` on synthetic BGL-like files of
``--prepare-lines`` lines (default 1M and 5M): wall time and peak RSS, against the targets
(5M within 90 s, peak RSS within 2 GB, RSS(5M) within 1.5x RSS(1M)).

    .venv/bin/python benchmarks/bench_parse.py                       # everything
    .venv/bin/python benchmarks/bench_parse.py --drain3-lines 200000 # drain3 on fewer lines
    .venv/bin/python benchmarks/bench_parse.py --skip-prepare

The venv for drain3 can also be made by hand:
``python3 -m venv .venv-bench && .venv-bench/bin/pip install -r benchmarks/requirements-bench.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "loghub_2k"
BENCH_VENV = REPO / ".venv-bench"
REQUIREMENTS = REPO / "benchmarks" / "requirements-bench.txt"
ACCURACY_SETS = {"bgl": "BGL", "hdfs": "HDFS", "thunderbird": "Thunderbird"}
BATCH = 100_000
PREPARE_TIME_TARGET_S = 90.0
PREPARE_RSS_TARGET_MB = 2048.0
RSS_GROWTH_TARGET = 1.5


# -- workers (run in subprocesses) -----------------------------------------------------------
def worker_ours(content_file: Path, dataset: str) -> dict:
    import pyarrow as pa

    from logdata.drain import TemplateMiner
    from logdata.formats import FORMATS
    from logdata.parse import miner_settings

    lines = content_file.read_text(encoding="utf-8").split("\n")[:-1]
    batches = [pa.array(lines[i:i + BATCH], pa.string()) for i in range(0, len(lines), BATCH)]
    miner = TemplateMiner(miner_settings(FORMATS[dataset]))
    start = time.perf_counter()
    ids = [miner.add_batch(b) for b in batches]
    seconds = time.perf_counter() - start
    return {"lines": len(lines), "seconds": seconds, "templates": len(miner),
            "ids": [int(i) for part in ids for i in part] if len(lines) <= 10_000 else None}


def worker_drain3(content_file: Path, mask: str) -> dict:
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()
    config.drain_sim_th = 0.5
    config.drain_depth = 4
    config.drain_max_children = 100
    # a named mask ("<NUM>") compares as an ordinary token in drain3; "<*>" would make a line
    # made only of parameters never match its own cluster
    config.masking_instructions = [MaskingInstruction(mask, "NUM")]
    config.profiling_enabled = False
    config.parametrize_numeric_tokens = True
    miner = TemplateMiner(config=config)
    lines = content_file.read_text(encoding="utf-8").split("\n")[:-1]
    start = time.perf_counter()
    ids = [miner.add_log_message(line)["cluster_id"] for line in lines]
    seconds = time.perf_counter() - start
    return {"lines": len(lines), "seconds": seconds, "templates": len(miner.drain.clusters),
            "ids": ids if len(lines) <= 10_000 else None}


# -- helpers ---------------------------------------------------------------------------------
# A small launcher measures the command's peak RSS: a child forked straight from this (large)
# process would inherit its high-water mark across exec and report it instead.
LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "sys.stderr.write('\\nMAXRSS_KB=%d\\n' % "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[dict | None, float, float]:
    """Run ``cmd``; return (its JSON stdout or None, wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.run(["python3", "-c", LAUNCHER, *cmd], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss_kb = int(proc.stderr.strip().splitlines()[-1].split("=")[1])
    try:
        payload = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        payload = None
    return payload, wall, rss_kb / 1024


def ensure_bench_venv() -> Path:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BENCH_VENV} with {REQUIREMENTS.name} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                       check=True)
    return python


def replicate_bgl(out: Path, n_lines: int, seed: int = 0) -> Path:
    if out.exists():
        with open(out, "rb") as fh:
            if sum(1 for _ in fh) == n_lines:
                return out
    lines = (SHARED / "BGL" / "BGL_2k.log").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    written = 0
    with open(out, "w", encoding="utf-8") as fh:
        while written < n_lines:
            digits = list("0123456789")
            rng.shuffle(digits)
            table = str.maketrans("0123456789", "".join(digits))
            take = lines[: n_lines - written]
            # keep the label field, vary every number after it
            fh.write("\n".join(line[:2] + line[2:].translate(table) for line in take) + "\n")
            written += len(take)
    return out


def extract_contents(log: Path, out: Path, dataset: str) -> Path:
    from logdata.formats import FORMATS
    from logdata.readers import ReadStats, iter_raw

    with open(out, "w", encoding="utf-8") as fh:
        for table in iter_raw(log, FORMATS[dataset], ReadStats()):
            fh.write("\n".join(table["content"].to_pylist()) + "\n")
    return out


def accuracy_rows(workdir: Path, drain3_python: Path | None) -> list[tuple]:
    import csv

    from logdata.drain import grouping_accuracy
    from logdata.formats import FORMATS

    rows = []
    for dataset, folder in ACCURACY_SETS.items():
        src = SHARED / folder / f"{folder}_2k.log_structured.csv"
        with open(src, encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        contents = workdir / f"acc_{dataset}.txt"
        contents.write_text("\n".join(r["Content"] for r in records) + "\n", encoding="utf-8")
        truth = [r["EventId"] for r in records]
        ours, _, _ = run_measured([sys.executable, __file__, "--worker", "ours", "--content",
                                   str(contents), "--dataset", dataset])
        row = [dataset, grouping_accuracy(truth, ours["ids"])]
        if drain3_python is not None:
            mask = FORMATS[dataset].masks[0][0]
            d3, _, _ = run_measured([str(drain3_python), __file__, "--worker", "drain3",
                                     "--content", str(contents), "--mask", mask])
            row.append(grouping_accuracy(truth, d3["ids"]))
        rows.append(tuple(row))
    return rows


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(REPO))
    from logdata.cliargs import add_flag, add_out_flag, new_parser

    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--lines", type=int, default=1_000_000, metavar="N",
             help="parser benchmark lines")
    add_flag(parser, "--drain3-lines", type=int, metavar="N",
             help="lines for drain3 (default --lines)")
    add_flag(parser, "--prepare-lines", type=int, nargs="*", default=[1_000_000, 5_000_000],
             metavar="N", help="log sizes timed through prepare")
    add_out_flag(parser, "folder for the generated logs and results.json", required=False,
                 default=REPO / "outputs" / "bench_parse", aliases=("--workdir",))
    add_flag(parser, "--skip-drain3", action="store_true", help="do not run drain3")
    add_flag(parser, "--skip-prepare", action="store_true", help="do not time prepare")
    parser.add_argument("--worker", choices=("ours", "drain3"), help=argparse.SUPPRESS)
    parser.add_argument("--content", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="bgl", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.content, args.dataset)))
        return
    if args.worker == "drain3":
        print(json.dumps(worker_drain3(args.content, args.mask)))
        return

    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the parser benchmark needs loghub's BGL 2k")
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"cpu_count": os.cpu_count()}
    drain3_python = None if args.skip_drain3 else ensure_bench_venv()

    print(f"# parser: loghub BGL 2k replicated to {args.lines:,} lines", flush=True)
    log = replicate_bgl(work / f"bgl_replicated_{args.lines}.log", args.lines)
    contents = extract_contents(log, work / f"contents_{args.lines}.txt", "bgl")
    ours, _, ours_rss = run_measured([sys.executable, __file__, "--worker", "ours", "--content",
                                      str(contents)])
    ours_rate = ours["lines"] / ours["seconds"]
    results["ours"] = {**ours, "lines_per_s": ours_rate, "peak_rss_mb": ours_rss}
    print(f"{'parser':<10}{'lines':>12}{'seconds':>10}{'lines/s':>14}{'peak RSS MB':>14}"
          f"{'templates':>11}")
    print(f"{'ours':<10}{ours['lines']:>12,}{ours['seconds']:>10.2f}{ours_rate:>14,.0f}"
          f"{ours_rss:>14.0f}{ours['templates']:>11}")
    if drain3_python is not None:
        d3_lines = args.drain3_lines or args.lines
        d3_contents = contents
        if d3_lines != args.lines:
            d3_contents = work / f"contents_{d3_lines}.txt"
            with open(contents, encoding="utf-8") as src, open(d3_contents, "w",
                                                               encoding="utf-8") as dst:
                for _, line in zip(range(d3_lines), src, strict=False):
                    dst.write(line)
        from logdata.formats import FORMATS

        d3, _, d3_rss = run_measured([str(drain3_python), __file__, "--worker", "drain3",
                                      "--content", str(d3_contents), "--mask",
                                      FORMATS["bgl"].masks[0][0]])
        d3_rate = d3["lines"] / d3["seconds"]
        results["drain3"] = {**d3, "lines_per_s": d3_rate, "peak_rss_mb": d3_rss}
        print(f"{'drain3':<10}{d3['lines']:>12,}{d3['seconds']:>10.2f}{d3_rate:>14,.0f}"
              f"{d3_rss:>14.0f}{d3['templates']:>11}")
        results["speedup"] = ours_rate / d3_rate
        print(f"speed-up ours/drain3: {ours_rate / d3_rate:.1f}x (target >= 10x)")

    print("\n# grouping accuracy on loghub 2k (same mask for both)")
    rows = accuracy_rows(work, drain3_python)
    results["accuracy"] = {r[0]: list(r[1:]) for r in rows}
    print(f"{'dataset':<13}{'ours':>8}" + (f"{'drain3':>9}" if drain3_python else ""))
    for row in rows:
        print(f"{row[0]:<13}{row[1]:>8.4f}" + (f"{row[2]:>9.4f}" if len(row) > 2 else ""))

    if not args.skip_prepare:
        print("\n# prepare --dataset synthetic (BGL-like)", flush=True)
        prep = {}
        for n in args.prepare_lines:
            log = work / f"synthetic_{n}.log"
            if not log.exists():
                subprocess.run([sys.executable, "-m", "logdata", "synthetic", "--out", str(log),
                                "--lines", str(n), "--seed", "0", "--no-progress"], cwd=REPO,
                               check=True, capture_output=True)
            _, wall, rss = run_measured([sys.executable, "-m", "logdata", "prepare", "--dataset",
                                         "synthetic", "--input", str(log), "--out",
                                         str(work / f"prepared_{n}"), "--no-progress",
                                         "--overwrite"])
            prep[n] = {"seconds": wall, "peak_rss_mb": rss}
            print(f"{n:>12,} lines: {wall:7.1f} s  peak RSS {rss:7.0f} MB  "
                  f"({n / wall:,.0f} lines/s)", flush=True)
        results["prepare"] = prep
        if len(prep) >= 2:
            small, large = min(prep), max(prep)
            growth = prep[large]["peak_rss_mb"] / prep[small]["peak_rss_mb"]
            print(f"RSS({large:,}) / RSS({small:,}) = {growth:.2f} (target <= "
                  f"{RSS_GROWTH_TARGET}); {large:,} lines in {prep[large]['seconds']:.1f} s "
                  f"(target <= {PREPARE_TIME_TARGET_S:.0f} s), peak "
                  f"{prep[large]['peak_rss_mb']:.0f} MB (target <= {PREPARE_RSS_TARGET_MB:.0f})")
    for key in ("ours", "drain3"):
        results.get(key, {}).pop("ids", None)
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
