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


@pytest.mark.parametrize("capacity", [1500, 2000, 2500, 6999, 7000, 10_000, 12_000])
def test_the_search_finds_the_highest_held_rate_of_the_grid(bench, capacity):
    probed = []

    def probe(rate):
        probed.append(rate)
        return rate <= capacity

    best, tried = bench.highest_held(probe, 2000, 10_000, 1000)
    grid = range(2000, 10_001, 1000)
    expected = max((r for r in grid if r <= capacity), default=None)
    assert best == expected
    assert [r for r, _ in tried] == probed and all(ok == (r <= capacity) for r, ok in tried)
    assert len(probed) <= 2 + 3 and len(set(probed)) == len(probed)  # bisection, no rate twice


def test_a_run_holds_only_when_it_kept_up_under_the_target_at_the_offered_rate(bench):
    good = {"kept_up": True, "p99_ms": 40.0, "offered": 9950.0, "rate": 10_000}
    assert bench.held(good, 45.0)
    assert not bench.held({**good, "p99_ms": 46.0}, 45.0)
    assert not bench.held({**good, "p99_ms": None}, 45.0)
    assert not bench.held({**good, "kept_up": False}, 45.0)
    assert not bench.held({**good, "offered": 9000.0}, 45.0)  # replay could not offer the load


def test_search_summary_and_table(bench):
    summary = bench.search_summary([14000, 15000, None], hi=24000)
    assert summary["highest_held"] == [14000, 15000, None]
    assert summary["min"] == 0 and summary["max"] == 15000 and abs(summary["mean"] - 29000 / 3) < 1e-9
    assert abs(summary["std"] - (140_666_666.67 / 2) ** 0.5) < 1e-3 and not summary["capped_at_hi"]
    lines = bench.search_table([{"case": "real", "backend": "onnx", "workers": 2, **summary}]
                               ).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["real", "onnx", "2", "14,000, 15,000, none", "9,667", "8,386", "0–15,000"]
    assert bench.search_summary([24000, 23000], hi=24000)["capped_at_hi"]
