"""``benchmarks/bench_stream.py``'s pure parts: the drain watch (what "sustained" and "backlog"
are measured from) and the results table. The benchmark itself needs minutes (see its docstring)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_stream", REPO / "benchmarks" / "bench_stream.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_stream"] = module
    spec.loader.exec_module(module)
    return module


def _sampler(bench, rows):
    """A ``sample`` callable replaying ``(t, processed, ingested, replay_done, drained)`` rows."""
    it = iter(rows)
    return lambda: bench.Sample(*next(it))


def test_watch_measures_from_first_ingest_to_last_verdict(bench):
    rows = [(0.0, 0, 0, False, False), (0.5, 0, 0, False, False),   # workers idle, replay starting
            (1.0, 0, 100, False, False), (2.0, 80, 1100, False, False),
            (9.0, 7000, 8000, True, False),                          # replay ended, 1000 behind
            (9.5, 8000, 8000, True, False), (9.6, 8000, 8000, True, False),
            (9.7, 8000, 8000, True, True)]
    calls = []
    seen = bench.watch(_sampler(bench, rows), sleep=lambda s: None,
                       on_replay_end=lambda: calls.append(1) or {"lag": 1000})
    assert seen.reason == "drained" and seen.processed == 8000
    assert seen.first_ingest == 1.0 and seen.last_change == 9.5 and seen.replay_end == 9.0
    assert seen.sustained == pytest.approx(8000 / 8.5)
    assert seen.backlog == 1000 and seen.drain_s == pytest.approx(0.5)
    assert calls == [1] and seen.at_replay_end == {"lag": 1000}
    assert len(seen.trace) == len(rows)


def test_watch_gives_up_on_a_stalled_or_endless_run(bench):
    # still progressing 3 s after replay ended: the stall clock starts at the last change
    stalled = [(0.0, 0, 20, False, False), (1.0, 5, 20, True, False), (4.0, 15, 20, True, False),
               (12.0, 15, 20, True, False), (14.5, 15, 20, True, False)]
    seen = bench.watch(_sampler(bench, stalled), stall_s=10.0, sleep=lambda s: None)
    assert seen.reason == "stalled" and seen.processed == 15 and seen.backlog == 15
    assert seen.trace[-1][0] == 14.5 and seen.last_change == 4.0
    endless = [(float(t), t, 10 * t, False, False) for t in range(20)]
    seen = bench.watch(_sampler(bench, endless), timeout_s=5.0, sleep=lambda s: None)
    assert seen.reason == "timeout" and seen.processed == 5 and seen.replay_end is None
    assert seen.drain_s is None and seen.backlog is None


def test_markdown_table(bench):
    row = {"backend": "onnx", "workers": 2, "rate": 15000, "offered": 14990.4, "sustained": 14100.0,
           "p50_ms": 4.25, "p99_ms": None, "backlog": 12, "backlog_ms": 0.8, "drain_s": 0.05,
           "kept_up": False, "end": "stalled"}
    lines = bench.markdown_table([row]).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["onnx", "2", "15,000", "14,990", "14,100", "4.2", "–", "12 (1 ms)", "0.05",
                     "no (stalled)"]
