#!/usr/bin/env python
"""Real-time detection (``python -m serving``): sustained events/s and latency vs offered load.

One real ``redis-server`` (:class:`serving.redis_server.RedisServer`, a free port) and, for every
backend (torch, onnx) × workers (1, 2) × offered load (5k, 10k, 15k, 20k events/s):

1. ``detect`` worker process(es) under a fresh ``--prefix`` (``--threads 1``, ``--partitions 4``,
   ``--session-timeout``, ``--exit-when-idle``); the run starts when every worker announced
   itself and holds a lease (2 workers: 2 partitions each);
2. ``replay --rate R --max-lines R*seconds --no-end`` of a synthetic HDFS-like log (block
   sessions). Sessions close by ``--session-timeout`` (the workers' sweeps, as in a live
   service), not by an end marker: closing every open session at once at the end would delay the
   last events of the other partitions and is no part of the steady state (``--end-markers``
   sends them anyway);
3. the counters in ``<prefix>:stats`` are polled every ``--poll`` s until the workers drained
   (every entry acknowledged), stalled or ``--drain-timeout`` passed.

Per run: the offered rate replay achieved, the **sustained** rate (events processed / time from
the first ingested event to the last verdict), p50/p99 latency (ingest timestamp → verdict
committed, the workers' ``<prefix>:latency`` histogram), the backlog when replay finished
(``ingest:events - events`` and the streams' ``lag``) and how long the drain took after it. A run
*kept up* when it drained and its backlog at the end of replay was under ``--keep-up-ms`` of load.

The workers, replay, Redis and this script share the machine's cores (recorded with the CPU model
in the JSON): on a 2-core box two workers compete with replay and Redis.

The case (log, ``logdata parse``, ``logdata sequences --window block``, a LogGPT-size model
pretrained for a few seconds with ``--arch loggpt``, its ONNX export) is built once and cached in
``--out`` (default ``outputs/bench_stream/case``). Results: a markdown table on stdout and in
``--results`` (``bench_stream.md``, ``bench_stream.json``), and the latency-vs-load plot
(``--plot``, default ``serving/bench_stream_latency.png``). ``--quick``: one short run per backend
(1 worker, 5k events/s, 3 s), results in ``--out`` only.

Usage::

    python benchmarks/bench_stream.py [--rates 5000 10000 15000 20000] [--workers 1 2]
        [--backends torch onnx] [--seconds 8] [--lines 200000] [--out outputs/bench_stream]
    python benchmarks/bench_stream.py --quick
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from logdata.cliargs import add_flag, new_parser  # noqa: E402

CASE_VERSION = 1
PARTITIONS = 4
TARGET_MS = 45.0
REPLAY_LINE = re.compile(r"replayed ([\d,]+) lines in ([\d.]+) s \(([\d,]+) lines/s\)")


# -- the case ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """The benchmark's log, data-stage folders and model."""

    log: Path
    parsed: Path
    sequences: Path
    model: Path


def _run(args: Sequence[object], what: str) -> None:
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")


def build_case(folder: Path, lines: int, seed: int, epochs: int) -> Case:
    """Build the case in ``folder`` unless a finished one with the same settings is there."""
    from logdata.synthetic import generate_logs

    case = Case(folder / "hdfs.log", folder / "parsed", folder / "seq", folder / "model")
    stamp = folder / "case.json"
    settings = {"version": CASE_VERSION, "lines": lines, "seed": seed, "epochs": epochs}
    if stamp.is_file() and json.loads(stamp.read_text()) == settings \
            and (case.model / "model.onnx").is_file():
        print(f"case: cached in {folder}")
        return case
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    started = time.perf_counter()
    print(f"case: {lines:,} synthetic HDFS lines in {folder} ...", flush=True)
    generate_logs(case.log, lines, fmt="hdfs", anomaly_rate=0.05, seed=seed)
    _run(["-m", "logdata", "parse", "--dataset", "hdfs", "--input", case.log, "--labels",
          folder / "anomaly_label.csv", "--out", case.parsed, "--no-progress"], "logdata parse")
    _run(["-m", "logdata", "sequences", "--input", case.parsed / "structured.parquet", "--out",
          case.sequences, "--window", "block", "--n-train", 2000, "--context", 64, "--seed", seed],
         "logdata sequences")
    _run(["-m", "verl_recipes.local.keyseq.pretrain", "--input", case.sequences, "--out", case.model,
          "--arch", "loggpt", "--epochs", epochs, "--lr", "3e-3", "--batch-size", 16,
          "--threads", 2, "--device", "cpu", "--seed", seed, "--no-progress"], "pretrain")
    _run(["-m", "serving", "export-onnx", "--model", case.model], "export-onnx")
    stamp.write_text(json.dumps(settings) + "\n")
    print(f"case: built in {time.perf_counter() - started:.0f} s", flush=True)
    return case


#: the finished real-keyseq stages a real case is built from (``benchmarks/real_keyseq.py``):
#: role -> (stage, its output folder)
REAL_STAGES = {"parsed": ("parse", "parsed"), "sequences": ("data_loggpt", "seq"),
               "model": ("pretrain_loggpt_s0", "model")}
#: the real log under the data folder
REAL_LOG = Path("hdfs_2pct") / "HDFS_2pct.log.gz"


def real_case(folder: Path, keyseq_work: Path, data: Path) -> Case:
    """The real HDFS 2 % log (replayed from its ``.gz``) with the parse, sequences and pretrained
    model of ``make real-keyseq`` (seed 0, LogGPT protocol); the model is copied into ``folder``
    and exported to ONNX there, so the real-keyseq stage stays as it verified."""
    import shutil

    log = data / REAL_LOG
    found = {name: keyseq_work / stage / sub for name, (stage, sub) in REAL_STAGES.items()}
    missing = [str(path) for path in [log, *found.values()] if not path.exists()]
    if missing:
        raise SystemExit("error: the real case needs " + ", ".join(missing) + " (run `make "
                         "real-keyseq`, or `python benchmarks/real_keyseq.py --only parse,"
                         "data_loggpt,pretrain_loggpt_s0`; --data names the folder holding hdfs_2pct/)")
    model = folder / "model"
    source = json.dumps({"model": str(found["model"].resolve()),
                         "mtime": found["model"].stat().st_mtime})
    stamp = folder / "case.json"
    if not (stamp.is_file() and stamp.read_text() == source and (model / "model.onnx").is_file()):
        shutil.rmtree(model, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(found["model"], model)
        _run(["-m", "serving", "export-onnx", "--model", model], "export-onnx")
        stamp.write_text(source)
    return Case(log, found["parsed"], found["sequences"], model)


# -- watching a run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One poll of a run.

    Attributes:
        t: Clock time of the poll (s).
        processed: Events the workers committed (``events`` in ``<prefix>:stats``).
        ingested: Events replay published (``ingest:events``).
        replay_done: Whether the replay process has exited.
        drained: Whether every published entry (end markers too) was acknowledged.
    """

    t: float
    processed: int
    ingested: int
    replay_done: bool
    drained: bool


@dataclass
class Watch:
    """What :func:`watch` saw.

    Attributes:
        reason: ``drained``, ``stalled`` (nothing processed for ``stall_s`` after replay ended)
            or ``timeout``.
        processed: Events committed at the end.
        first_ingest: Time of the first poll that saw an ingested event (None: never).
        last_change: Time of the first poll that saw the final ``processed`` count.
        replay_end: Time of the first poll that saw replay finished.
        backlog: Events ingested but not yet processed at ``replay_end``.
    """

    reason: str
    processed: int = 0
    first_ingest: float | None = None
    last_change: float | None = None
    replay_end: float | None = None
    backlog: int | None = None
    at_replay_end: dict[str, Any] = field(default_factory=dict)
    trace: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def sustained(self) -> float | None:
        """Events per second from the first ingested event to the last verdict."""
        if self.first_ingest is None or self.last_change is None or self.last_change <= self.first_ingest:
            return None
        return self.processed / (self.last_change - self.first_ingest)

    @property
    def drain_s(self) -> float | None:
        """Seconds from the end of replay to the last verdict (0 when already done)."""
        if self.replay_end is None or self.last_change is None:
            return None
        return max(0.0, self.last_change - self.replay_end)


def watch(sample: Callable[[], Sample], *, poll_s: float = 0.02, stall_s: float = 10.0,
          timeout_s: float = 300.0, on_replay_end: Callable[[], dict[str, Any]] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> Watch:
    """Poll ``sample`` until the run drained, stalled after replay ended, or timed out.

    The first poll's time is the start of the timeout; ``on_replay_end`` is called once, at the
    first poll that sees replay finished, and its result kept in ``at_replay_end``.
    """
    out = Watch(reason="timeout")
    start = None
    last = None
    while True:
        s = sample()
        start = s.t if start is None else start
        out.trace.append((s.t, s.processed, s.ingested))
        if out.first_ingest is None and s.ingested > 0:
            out.first_ingest = s.t
        if last is None or s.processed != last:
            last, out.last_change = s.processed, s.t
        out.processed = s.processed
        if s.replay_done and out.replay_end is None:
            out.replay_end, out.backlog = s.t, max(0, s.ingested - s.processed)
            if on_replay_end is not None:
                out.at_replay_end = on_replay_end()
        if s.replay_done and s.drained:
            out.reason = "drained"
            return out
        if out.replay_end is not None and s.t - max(out.last_change, out.replay_end) >= stall_s:
            out.reason = "stalled"
            return out
        if s.t - start >= timeout_s:
            return out
        sleep(poll_s)


# -- one run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    backend: str
    workers: int
    rate: int
    seconds: float


def read_counters(client: Any, key: str) -> dict[str, int]:
    """A Redis hash of integer counters (the service's ``stats``) as ``{name: value}``."""
    return {k.decode(): int(v) for k, v in client.hgetall(key).items()}


def worker_command(url: str, case: Case, backend: str, partitions: int, session_timeout: float,
                   exit_when_idle: float, *extra: object) -> list[str]:
    """``python -m serving detect`` on ``case`` with one thread; ``extra`` flags are appended."""
    return [sys.executable, "-m", "serving", "detect", "--redis", url, "--parsed", str(case.parsed),
            "--model", str(case.model), "--sequences", str(case.sequences), "--backend", backend,
            "--threads", "1", "--partitions", str(partitions), "--session-timeout",
            str(session_timeout), "--exit-when-idle", str(exit_when_idle), *map(str, extra)]


def stop_all(procs: Sequence[subprocess.Popen], grace: float = 20.0) -> list[int | None]:
    """SIGTERM every process still running, kill those not gone after ``grace`` s; exit codes."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return [p.returncode for p in procs]


def _tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def wait_ready(transport: Any, procs: Sequence[subprocess.Popen], logs: Sequence[Path],
               timeout_s: float = 120.0) -> float:
    """Wait until every worker printed its start line and the partitions are shared out
    (every partition leased, each worker holding at least one); returns the seconds waited."""
    started = time.monotonic()
    want = min(len(procs), transport.partitions)
    while time.monotonic() - started < timeout_s:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                raise SystemExit(f"worker exited with {p.returncode} before the run:\n{_tail(log)}")
        announced = all("detection on" in _tail(log, 100_000) for log in logs)
        leases = [transport.client.get(transport.key("lease", partition=p))
                  for p in range(transport.partitions)]
        owners = set(leases) - {None}
        if announced and len(owners) >= want and None not in leases:
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"workers not ready after {timeout_s:.0f} s:\n{_tail(logs[0])}")


def _profile(pid: int, out: Path, seconds: float) -> subprocess.Popen:
    """``py-spy record`` of a process for ``seconds`` (collapsed stacks, idle frames too)."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy if spy.is_file() else "py-spy"), "record", "--pid", str(pid),
                             "--duration", str(int(seconds + 0.999)), "--rate", "200", "--idle",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(collapsed: str, top: int = 15) -> list[tuple[str, float, float]]:
    """``(function, self %, total %)`` of the ``top`` functions by self time in py-spy's raw
    (collapsed) output: lines ``frame;frame;...;leaf count``. Only the main thread counts (stacks
    starting at ``Thread._bootstrap`` are background threads, e.g. tqdm's idle monitor).

    >>> profile_summary("main (a.py:1);f (a.py:2) 3\\nmain (a.py:1) 1", top=2)
    [('f (a.py)', 75.0, 75.0), ('main (a.py)', 25.0, 100.0)]
    """
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    n = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or stack.startswith("Thread._bootstrap "):
            continue
        c = int(count)
        n += c
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            total[f] = total.get(f, 0) + c
    best = sorted(own, key=lambda f: -own[f])[:top]
    return [(f, 100 * own[f] / n, 100 * total[f] / n) for f in best] if n else []


def run_one(cfg: RunConfig, case: Case, url: str, prefix: str, folder: Path, args: Any) -> dict:
    """Workers + replay for one configuration; returns the measurements."""
    import redis

    from serving.status import latency_histogram
    from serving.transport import RedisStreams
    from serving.worker import percentile_from_histogram

    folder.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(url)
    transport = RedisStreams(client, prefix, PARTITIONS)
    base = [sys.executable, "-m", "serving"]
    logs = [folder / f"worker{i}.log" for i in range(cfg.workers)]
    procs = []
    for i, log in enumerate(logs):
        cmd = worker_command(url, case, cfg.backend, PARTITIONS, args.session_timeout,
                             args.exit_when_idle, "--prefix", prefix, "--name", f"w{i}")
        with log.open("wb") as out:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
    seen = spy = None
    try:
        ready_s = wait_ready(transport, procs, logs)
        spy = _profile(procs[0].pid, folder / "worker0.pyspy.txt", cfg.seconds + 3) \
            if args.profile else None
        max_lines = int(cfg.rate * cfg.seconds)
        replay_log = folder / "replay.log"
        with replay_log.open("wb") as out:
            replay = subprocess.Popen(
                [*base, "replay", "--redis", url, "--prefix", prefix, "--input", str(case.log),
                        "--rate", str(cfg.rate), "--max-lines", str(max_lines), "--no-progress",
                        "--loop",
                        *([] if args.end_markers else ["--no-end"])],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        stats = transport.key("stats")
        # the workers count the end markers as entries (one per partition)
        markers = PARTITIONS if args.end_markers else 0
        fields = ("events", "ingest:events", "entries", "ingest:entries")

        def sample() -> Sample:
            done = replay.poll() is not None
            t = time.monotonic()
            events, ingested, entries, published = (int(v or 0) for v in client.hmget(stats, fields))
            drained = False
            if done and entries >= published + markers:
                drained = all(r["lag"] == 0 and r["pending"] == 0 for r in transport.lag())
            return Sample(t, events, ingested, done, drained)

        def at_replay_end() -> dict[str, Any]:
            rows = transport.lag()
            return {"lag": sum(r["lag"] or 0 for r in rows),
                    "pending": sum(r["pending"] for r in rows)}

        seen = watch(sample, poll_s=args.poll, stall_s=args.stall, timeout_s=args.drain_timeout,
                     on_replay_end=at_replay_end)
        if replay.poll() is None:
            replay.kill()
        replay.wait()
        if replay.returncode:
            raise SystemExit(f"replay failed ({replay.returncode}):\n{_tail(replay_log)}")
    finally:
        codes = stop_all(procs)
        if spy is not None:
            spy.wait(timeout=60)
    if seen is not None:  # counters over time, for a closer look at one run
        t0 = seen.trace[0][0] if seen.trace else 0.0
        (folder / "trace.json").write_text(json.dumps(
            {"replay_end": None if seen.replay_end is None else seen.replay_end - t0,
             "samples": [(round(t - t0, 4), p, i) for t, p, i in seen.trace]}) + "\n")
    found = REPLAY_LINE.search(_tail(replay_log))
    hist = latency_histogram(transport)
    counters = read_counters(client, stats)
    achieved = float(found.group(3).replace(",", "")) if found else None
    backlog_ms = 1000 * seen.backlog / cfg.rate if seen.backlog is not None else None
    return {
        **asdict(cfg), "prefix": prefix, "ready_s": round(ready_s, 2),
        "lines": int(found.group(1).replace(",", "")) if found else None,
        "replay_s": float(found.group(2)) if found else None,
        "offered": achieved, "sustained": seen.sustained,
        "processed": seen.processed, "ingested": counters.get("ingest:events", 0),
        "p50_ms": percentile_from_histogram(hist, 0.5), "p99_ms": percentile_from_histogram(hist, 0.99),
        "latency_events": sum(hist.values()),
        "backlog": seen.backlog, "backlog_ms": backlog_ms, **{f"{k}_at_replay_end": v
                                                             for k, v in seen.at_replay_end.items()},
        "drain_s": seen.drain_s, "end": seen.reason,
        "kept_up": seen.reason == "drained" and backlog_ms is not None and backlog_ms <= args.keep_up_ms,
        "worker_exit_codes": codes, "counters": counters,
        **({"profile_top": profile_summary((folder / "worker0.pyspy.txt").read_text())}
           if spy is not None and (folder / "worker0.pyspy.txt").is_file() else {}),
    }


# -- the rate search ----------------------------------------------------------------------------
def held(row: dict[str, Any], target_ms: float = TARGET_MS, min_offered: float = 0.97) -> bool:
    """A run held its rate: it kept up, its p99 is at most ``target_ms`` and replay offered at
    least ``min_offered`` of the target (a producer that cannot offer the load proves nothing)."""
    return bool(row["kept_up"]) and row["p99_ms"] is not None and row["p99_ms"] <= target_ms \
        and row["offered"] is not None and row["offered"] >= min_offered * row["rate"]


def highest_held(probe: Callable[[int], bool], lo: int, hi: int, step: int
                 ) -> tuple[int | None, list[tuple[int, bool]]]:
    """The highest rate of the grid ``lo, lo + step, …, hi`` that ``probe`` holds, by bisection.

    Assumes a rate held implies every lower one is; ``lo`` is probed first (None when it fails),
    then ``hi``, then midpoints. Returns the rate and every ``(rate, held)`` probed, in order.

    >>> highest_held(lambda r: r <= 7000, 2000, 10000, 1000)
    (7000, [(2000, True), (10000, False), (6000, True), (8000, False), (7000, True)])
    """
    grid = list(range(lo, hi + 1, step))
    if not grid:
        raise ValueError(f"empty rate grid: lo {lo}, hi {hi}, step {step}")
    tried: list[tuple[int, bool]] = []

    def test(i: int) -> bool:
        tried.append((grid[i], probe(grid[i])))
        return tried[-1][1]

    if not test(0):
        return None, tried
    if len(grid) == 1 or test(len(grid) - 1):
        return grid[-1], tried
    good, bad = 0, len(grid) - 1
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if test(mid) else (good, mid)
    return grid[good], tried


def search_summary(found: Sequence[int | None], hi: int) -> dict[str, Any]:
    """Mean, spread and range of the highest held rates of the repeats (None: not even ``lo``)."""
    import statistics

    rates = [0 if r is None else r for r in found]
    return {"highest_held": list(found), "mean": statistics.fmean(rates),
            "std": statistics.stdev(rates) if len(rates) > 1 else None,
            "min": min(rates), "max": max(rates), "capped_at_hi": any(r == hi for r in found)}


def search_table(summaries: Sequence[dict[str, Any]], target_ms: float = TARGET_MS) -> str:
    """One line per configuration: the highest rate held at p99 ≤ target in each repeat."""
    head = (f"| case | backend | workers | highest rate held at p99 ≤ {target_ms:g} ms, per repeat "
            "| mean | std | min–max |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for s in summaries:
        each = ", ".join("none" if r is None else f"{r:,}" for r in s["highest_held"])
        std = "–" if s["std"] is None else f"{s['std']:,.0f}"
        top = " (≥: the search's upper end)" if s["capped_at_hi"] else ""
        lines.append(f"| {s['case']} | {s['backend']} | {s['workers']} | {each}{top} "
                     f"| {s['mean']:,.0f} | {std} | {s['min']:,}–{s['max']:,} |")
    return "\n".join(lines)


# -- output -----------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table (one line per run)."""
    head = ("| backend | workers | offered target /s | offered achieved /s | sustained events/s "
            "| p50 ms | p99 ms | backlog at replay end | drain s | kept up |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        kept = "yes" if r["kept_up"] else "no" + ("" if r["end"] == "drained" else f" ({r['end']})")
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['rate']:,} | {_num(r['offered'])} "
            f"| {_num(r['sustained'])} | {_num(r['p50_ms'], 1)} | {_num(r['p99_ms'], 1)} "
            f"| {_num(r['backlog'])} ({_num(r['backlog_ms'])} ms) | {_num(r['drain_s'], 2)} "
            f"| {kept} |")
    return "\n".join(lines)


def median_by_rate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per offered rate with the median p50 and p99 of its runs, sorted by rate.

    >>> median_by_rate([{"rate": 2, "p50_ms": 1, "p99_ms": 5}, {"rate": 1, "p50_ms": 1, "p99_ms": 2},
    ...                 {"rate": 2, "p50_ms": 3, "p99_ms": 7}])
    [{'rate': 1, 'p50_ms': 1, 'p99_ms': 2}, {'rate': 2, 'p50_ms': 2.0, 'p99_ms': 6.0}]
    """
    import statistics

    out = []
    for rate in sorted({r["rate"] for r in rows}):
        runs = [r for r in rows if r["rate"] == rate]
        out.append({"rate": rate, **{k: statistics.median(r[k] for r in runs)
                                     if all(r[k] is not None for r in runs) else None
                                     for k in ("p50_ms", "p99_ms")}})
    return out


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """p50 (solid) and p99 (dashed) latency vs offered load per backend × workers (the median of
    a rate's runs), log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    configs = sorted({(r["backend"], r["workers"]) for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (backend, workers) in enumerate(configs):
        mine = median_by_rate([r for r in rows if (r["backend"], r["workers"]) == (backend, workers)])
        x = [r["rate"] / 1000 for r in mine]
        label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
        color = colors[i % len(colors)]
        ax.plot(x, [r["p50_ms"] for r in mine], "o-", color=color, label=f"{label} p50")
        ax.plot(x, [r["p99_ms"] for r in mine], "s--", color=color, label=f"{label} p99")
    ax.axhline(TARGET_MS, color="black", linestyle=":", linewidth=1)
    ax.text(ax.get_xlim()[0], TARGET_MS * 1.08, f" {TARGET_MS:.0f} ms target", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (k events/s)")
    ax.set_ylabel("latency ingest → verdict (ms)")
    ax.set_title("LogGPT-size key model over Redis Streams, " + f"{os.cpu_count()} CPU cores",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shown_path(path: Path) -> str:
    """``path`` as results files record it: relative to the repository, else its name only.

    >>> shown_path(ROOT / "outputs" / "x"), shown_path(Path("/home/someone/run"))
    ('outputs/x', 'run')
    """
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def machine() -> dict[str, Any]:
    """CPU count and model, versions."""
    import onnxruntime
    import torch

    from serving.redis_server import find_redis_server

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True,
                                   check=False).stdout.strip()
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "redis_server": redis_version}


def build_arg_parser() -> Any:
    """The benchmark's flags."""
    parser = new_parser(description=__doc__.splitlines()[0])
    add_flag(parser, "--rates", type=int, nargs="+", default=None, metavar="R",
             help="fixed offered loads (events/s) instead of the rate search")
    add_flag(parser, "--lo", type=int, default=2000, help="search: lowest rate probed (events/s)")
    add_flag(parser, "--hi", type=int, default=24000, help="search: highest rate probed (events/s)")
    add_flag(parser, "--step", type=int, default=1000, help="search: resolution (events/s)")
    add_flag(parser, "--repeats", type=int, default=3,
             help="independent searches (or passes over --rates) per setting")
    add_flag(parser, "--target-ms", type=float, default=TARGET_MS, help="search: the p99 a rate must hold")
    add_flag(parser, "--workers", type=int, nargs="+", default=[1, 2], metavar="N",
             help="worker processes per run")
    add_flag(parser, "--backends", nargs="+", default=["onnx"], choices=("torch", "onnx"),
             help="inference backends")
    add_flag(parser, "--case", choices=("synthetic", "real"), default="synthetic",
             help="synthetic HDFS-like log, or the real HDFS 2 %% log with make real-keyseq's model")
    add_flag(parser, "--keyseq-work", type=Path, default=ROOT / "outputs" / "real_keyseq",
             metavar="PATH", help="real case: the work folder of benchmarks/real_keyseq.py")
    add_flag(parser, "--data", type=Path, default=None, metavar="PATH",
             help="real case: the folder holding hdfs_2pct/ (default: $LOGRL_TEST_DATA or ../shared/data)")
    add_flag(parser, "--seconds", type=float, default=8.0, help="seconds of load per run")
    add_flag(parser, "--lines", type=int, default=200_000,
             help="lines of the synthetic log (at least the highest rate × seconds)")
    add_flag(parser, "--epochs", type=int, default=5, help="pretraining epochs of the synthetic model")
    add_flag(parser, "--seed", type=int, default=0, help="seed of the synthetic log and model")
    add_flag(parser, "--out", type=Path, default=ROOT / "outputs" / "bench_stream", metavar="PATH",
             help="work folder: the cached case, Redis, per-run logs")
    add_flag(parser, "--results", type=Path, default=None, metavar="PATH",
             help="folder for bench_stream[_real].md/.json (default: benchmarks/results; --quick: --out)")
    add_flag(parser, "--plot", type=Path, default=None, metavar="PATH",
             help="latency plot (default: serving/bench_stream[_real]_latency.png; --quick: in --out)")
    add_flag(parser, "--session-timeout", type=float, default=2.0,
             help="worker --session-timeout (a synthetic block lasts ~100 lines)")
    add_flag(parser, "--end-markers", action="store_true",
             help="replay sends its end markers (workers close every session at the end)")
    add_flag(parser, "--exit-when-idle", type=float, default=30.0,
             help="worker --exit-when-idle (a safety net: the script stops them once drained)")
    add_flag(parser, "--poll", type=float, default=0.02, help="seconds between counter polls")
    add_flag(parser, "--stall", type=float, default=15.0,
             help="give up on a run when nothing was processed this long after replay ended")
    add_flag(parser, "--drain-timeout", type=float, default=240.0, help="longest run (s)")
    add_flag(parser, "--keep-up-ms", type=float, default=100.0,
             help="kept up: backlog at the end of replay under this much load")
    add_flag(parser, "--profile", action="store_true",
             help="py-spy record worker 0 of every run (worker0.pyspy.txt in the run folder)")
    add_flag(parser, "--quick", action="store_true",
             help="smoke test: 1 worker, 5000/s for 3 s per backend, a 20k-line log")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.workers, args.seconds, args.repeats = [5000], [1], 3.0, 1
        args.lines = min(args.lines, 20_000)
    if args.repeats < 1 or args.step < 1 or args.lo > args.hi:
        parser.error("--repeats and --step must be ≥ 1 and --lo ≤ --hi")
    stem = "bench_stream" if args.case == "synthetic" else "bench_stream_real"
    results_dir = args.results or (args.out if args.quick else ROOT / "benchmarks" / "results")
    plot_path = args.plot or (args.out / f"{stem}_latency.png" if args.quick
                              else ROOT / "serving" / f"{stem}_latency.png")
    need = int(max(args.rates or [args.hi]) * args.seconds)
    if args.case == "synthetic" and args.lines < need:
        parser.error(f"--lines {args.lines:,} < highest rate × seconds = {need:,}")

    from serving.redis_server import RedisServer

    started = time.perf_counter()
    if args.case == "synthetic":
        case = build_case(args.out / f"case-{args.lines}", args.lines, args.seed, args.epochs)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from stage_runner import default_data

        case = real_case(args.out / "case-real", args.keyseq_work.resolve(),
                         (args.data or default_data(ROOT)).resolve())
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    stamp = time.strftime("%H%M%S")
    runs_dir = args.out / f"runs-{time.strftime('%Y%m%d')}-{stamp}"
    configs = [(b, w) for b in args.backends for w in args.workers]
    with RedisServer(args.out / "redis") as server:
        print(f"redis-server on {server.url}", flush=True)

        def measure(backend: str, workers: int, rate: int, tag: str) -> dict[str, Any]:
            cfg = RunConfig(backend, workers, rate, args.seconds)
            name = f"{tag}{backend}-w{workers}-r{rate}"
            t0 = time.perf_counter()
            row = run_one(cfg, case, server.url, f"bench:{stamp}:{name}", runs_dir / name, args)
            row.update(run_s=round(time.perf_counter() - t0, 1), repeat=tag.rstrip("-") or None,
                       held=held(row, args.target_ms))
            rows.append(row)
            print(f"{name}: offered {_num(row['offered'])}/s, sustained "
                  f"{_num(row['sustained'])}/s, p50 {_num(row['p50_ms'], 1)} ms, p99 "
                  f"{_num(row['p99_ms'], 1)} ms, backlog {_num(row['backlog'])}, "
                  f"{row['end']}, held {'yes' if row['held'] else 'no'} ({row['run_s']} s)", flush=True)
            for func, own, total in row.get("profile_top", []):
                print(f"    {own:5.1f}% self {total:5.1f}% total  {func}")
            # a fresh prefix per run; drop the previous run's keys to keep Redis small
            server.client().flushdb()
            return row

        if args.rates:
            for repeat in range(args.repeats):  # interleaved, as the search's repeats
                for backend, workers in configs:
                    for rate in args.rates:
                        measure(backend, workers, rate, f"rep{repeat}-" if args.repeats > 1 else "")
        else:
            found: dict[tuple[str, int], list[int | None]] = {c: [] for c in configs}
            for repeat in range(args.repeats):  # repeats interleaved: drift hits every setting
                for backend, workers in configs:
                    best, _ = highest_held(
                        lambda rate, b=backend, w=workers, r=repeat: measure(b, w, rate, f"rep{r}-")["held"],
                        args.lo, args.hi, args.step)
                    found[(backend, workers)].append(best)
                    print(f"repeat {repeat}: {backend}, {workers} worker(s): highest held "
                          f"{'none' if best is None else f'{best:,}'}/s", flush=True)
            summaries = [{"case": args.case, "backend": b, "workers": w,
                          **search_summary(found[(b, w)], args.hi)} for b, w in configs]
    total = time.perf_counter() - started
    info = machine()
    what = "synthetic HDFS-like log" if args.case == "synthetic" else "real HDFS 2 % log"
    header = (f"`bench_stream.py`: {info['cpu_count']} CPU cores ({info['cpu_model']}), {what}, "
              f"{args.seconds:g} s of load per run, LogGPT-size model, {PARTITIONS} partitions, "
              f"1 thread per worker; total {total:.0f} s.")
    if summaries:
        header += (f" Rate search: {args.repeats} repeats, bisection over {args.lo:,}–{args.hi:,}/s "
                   f"in steps of {args.step:,}; held = kept up and p99 ≤ {args.target_ms:g} ms.")
    body = (search_table(summaries, args.target_ms) + "\n\nEvery run:\n\n" if summaries else "") \
        + markdown_table(rows)
    print("\n" + header + "\n\n" + body)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{stem}.md").write_text(header + "\n\n" + body + "\n")
    payload = {"machine": info, "settings": {k: shown_path(v) if isinstance(v, Path) else v
                                             for k, v in vars(args).items()},
               "load_average_at_end": os.getloadavg(), "total_s": total, "search": summaries,
               "runs": rows}
    (results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, plot_path)
    print(f"\nresults: {results_dir / (stem + '.md')}, {results_dir / (stem + '.json')}; "
          f"plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
