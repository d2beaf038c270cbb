"""A soak run of the real-time service: minutes of steady load, memory and lag sampled.

One real ``redis-server``, ``workers`` ONNX ``detect`` workers and ``replay --loop`` of a log at a
fixed rate for ``seconds``. Every ``sample_s`` the script records the workers' resident memory
(``/proc/<pid>/status``), Redis's memory (``INFO memory``), the streams' lag and pending entries,
the counters and the latency of the events committed since the previous sample. After replay ends
it waits for the workers to drain. The run passes when nothing was lost (every ingested event has
a verdict, nothing pending, no lag) and the workers' memory is flat: the median of the last
minute is within ``flat_mib`` of the median of the first minute after warm-up.

Used by ``benchmarks/real_stream.py`` (stage ``soak``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class SoakConfig:
    """Sizes of one soak run.

    Attributes:
        rate: Offered lines per second.
        seconds: How long replay offers the load.
        workers: ONNX worker processes.
        sample_s: Seconds between samples.
        session_timeout: Worker ``--session-timeout`` (s).
        retention: Worker ``--retention`` (s): verdict hashes expire, so Redis stays bounded.
        partitions: Stream partitions.
        k: Top-K of the detector.
        warmup_s: Samples before this are left out of the memory trend.
        flat_mib: Largest rise of a worker's median RSS (last minute vs first minute) called flat.
        drain_timeout: Longest wait for the workers to drain after replay ended (s).
    """

    rate: int
    seconds: float
    workers: int = 2
    sample_s: float = 5.0
    session_timeout: float = 2.0
    retention: int = 120
    partitions: int = 4
    k: int = 7
    warmup_s: float = 60.0
    flat_mib: float = 20.0
    drain_timeout: float = 300.0


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (``VmRSS``), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def histogram_delta(before: Mapping[int, int], after: Mapping[int, int]) -> dict[int, int]:
    """The events per latency bucket added between two readings of the workers' histogram.

    >>> histogram_delta({1: 5, 2: 1}, {1: 7, 2: 1, 3: 4})
    {1: 2, 3: 4}
    """
    return {b: n - before.get(b, 0) for b, n in after.items() if n - before.get(b, 0) > 0}


def window_medians(samples: Sequence[Mapping[str, Any]], key: str, start_s: float, window_s: float
                   ) -> tuple[float | None, float | None]:
    """Median of ``key`` over the first ``window_s`` after ``start_s`` and over the last
    ``window_s`` of the samples (``t`` in seconds; None where a window holds no value).

    >>> rows = [{"t": t, "m": 100 + (t >= 50)} for t in range(0, 100, 5)]
    >>> window_medians(rows, "m", 10, 20)
    (100.0, 101.0)
    """
    values = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
    if not values:
        return None, None
    end = values[-1][0]
    first = [v for t, v in values if start_s <= t < start_s + window_s]
    last = [v for t, v in values if t > end - window_s]
    return (statistics.median(first) if first else None, statistics.median(last) if last else None)


def slope_per_minute(samples: Sequence[Mapping[str, Any]], key: str, start_s: float) -> float | None:
    """Least-squares slope of ``key`` per minute over the samples from ``start_s`` on.

    >>> slope_per_minute([{"t": t, "m": 2.0 * t / 60} for t in range(0, 300, 5)], "m", 60)
    2.0
    """
    points = [(s["t"], s[key]) for s in samples if s["t"] >= start_s and s.get(key) is not None]
    if len(points) < 2:
        return None
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return round(60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var, 6)


def verdict(summary: Mapping[str, Any], config: SoakConfig) -> dict[str, bool]:
    """Whether the run lost nothing and the workers' memory stayed flat."""
    lost = summary["ingested"] - summary["processed"]
    flat = all(w["first_mib"] is not None and w["last_mib"] is not None
               and w["last_mib"] - w["first_mib"] <= config.flat_mib for w in summary["workers"])
    return {"nothing_lost": lost == 0 and summary["pending_at_end"] == 0 and summary["lag_at_end"] == 0
            and summary["drained"], "memory_flat": flat}


def soak(case: Any, config: SoakConfig, folder: Path) -> dict[str, Any]:
    """Run the soak of ``case`` (a :class:`bench_stream.Case`) in ``folder``; return its summary
    (the samples are written to ``folder/samples.json``)."""
    import redis
    from bench_stream import read_counters, stop_all, wait_ready

    from serving.redis_server import RedisServer
    from serving.status import latency_histogram
    from serving.transport import RedisStreams
    from serving.worker import percentile_from_histogram

    folder.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    with RedisServer(folder / "redis") as server:
        client = redis.Redis.from_url(server.url)
        transport = RedisStreams(client, "logrl", config.partitions)
        logs = [folder / f"worker{i}.log" for i in range(config.workers)]
        procs = [_start_worker(case, config, server.url, f"w{i}", log) for i, log in enumerate(logs)]
        try:
            wait_ready(transport, procs, logs)
            replay_log = folder / "replay.log"
            with replay_log.open("wb") as out:
                replay = subprocess.Popen(
                    [sys.executable, "-m", "serving", "replay", "--redis", server.url, "--input",
                     str(case.log), "--rate", str(config.rate), "--loop", "--max-seconds",
                     str(config.seconds), "--no-end", "--no-progress"],
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            started = time.monotonic()
            hist = latency_histogram(transport)
            drained, replay_end = False, None
            while True:
                time.sleep(config.sample_s)
                now = time.monotonic() - started
                fresh = latency_histogram(transport)
                window = histogram_delta(hist, fresh)
                hist = fresh
                stats = read_counters(client, transport.key("stats"))
                lag = transport.lag()
                memory = client.info("memory")
                samples.append({
                    "t": round(now, 2), "processed": stats.get("events", 0),
                    "ingested": stats.get("ingest:events", 0),
                    "lag": sum(r["lag"] or 0 for r in lag), "pending": sum(r["pending"] for r in lag),
                    "p99_ms": percentile_from_histogram(window, 0.99), "events": sum(window.values()),
                    "redis_used_mib": memory["used_memory"] / 2**20,
                    "redis_rss_mib": memory["used_memory_rss"] / 2**20,
                    **{f"worker{i}_mib": rss_mib(p.pid) for i, p in enumerate(procs)}})
                if replay.poll() is not None and replay_end is None:
                    replay_end = now
                if replay_end is not None:
                    last = samples[-1]
                    drained = last["lag"] == 0 and last["pending"] == 0 \
                        and last["processed"] >= last["ingested"]
                    if drained or now - replay_end > config.drain_timeout:
                        break
            if replay.returncode:
                raise SystemExit(f"replay failed:\n{replay_log.read_text()[-3000:]}")
            stats = read_counters(client, transport.key("stats"))
            total_hist = latency_histogram(transport)
        finally:
            stop_all(procs, grace=30.0)
    (folder / "samples.json").write_text(json.dumps(samples) + "\n")
    return summarize(samples, stats, total_hist, config, replay_end, drained,
                     (folder / "replay.log").read_text(errors="replace").strip().splitlines()[-1:])


def summarize(samples: Sequence[Mapping[str, Any]], stats: Mapping[str, int],
              total_hist: Mapping[int, int], config: SoakConfig, replay_end: float | None,
              drained: bool, replay_lines: Sequence[str]) -> dict[str, Any]:
    """The soak's figures and verdict from its samples and final counters."""
    from serving.worker import percentile_from_histogram

    workers = []
    for i in range(config.workers):
        key = f"worker{i}_mib"
        first, last = window_medians(samples, key, config.warmup_s, 60.0)
        workers.append({"first_mib": first, "last_mib": last,
                        "max_mib": max((s[key] for s in samples if s.get(key)), default=None),
                        "slope_mib_per_min": slope_per_minute(samples, key, config.warmup_s)})
    busy = [s for s in samples if replay_end is None or s["t"] <= replay_end]
    summary = {
        "config": asdict(config), "replay": replay_lines[0] if replay_lines else None,
        "replay_s": replay_end, "processed": stats.get("events", 0),
        "ingested": stats.get("ingest:events", 0),
        "skipped": {k: v for k, v in stats.items() if "skipped:" in k},
        "drained": drained, "lag_at_end": samples[-1]["lag"] if samples else None,
        "pending_at_end": samples[-1]["pending"] if samples else None,
        "max_lag": max((s["lag"] for s in busy), default=None),
        "p50_ms": percentile_from_histogram(dict(total_hist), 0.5),
        "p99_ms": percentile_from_histogram(dict(total_hist), 0.99),
        "worst_window_p99_ms": max((s["p99_ms"] for s in busy if s["p99_ms"] is not None),
                                   default=None),
        "workers": workers,
        "redis_used_mib": window_medians(samples, "redis_used_mib", config.warmup_s, 60.0),
        "samples": len(samples),
    }
    summary["sustained"] = summary["processed"] / replay_end if replay_end else None
    summary["verdict"] = verdict(summary, config)
    return summary


def _start_worker(case: Any, config: SoakConfig, url: str, name: str, log: Path) -> subprocess.Popen:
    from bench_stream import worker_command

    cmd = worker_command(url, case, "onnx", config.partitions, config.session_timeout, 60,
                         "--k", config.k, "--retention", config.retention, "--name", name)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
