"""benchmarks/real_stream.py and stream_soak.py (issue 21): the service on the real HDFS log.

The pure parts (verdict comparison, the soak's memory and loss verdict) run everywhere. The smoke
replays the first 30,000 lines of the real HDFS 2 % sample through a real ``redis-server`` and an
ONNX worker, and checks every block against the offline detector; it skips when the data is
absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_stream  # noqa: E402
import stream_soak  # noqa: E402


def test_differences_name_missing_and_changed_blocks_only():
    offline = {"b1": {"pred": "normal", "misses": 0, "first_miss": None, "max_rank": 3, "label": "normal"},
               "b2": {"pred": "abnormal", "misses": 2, "first_miss": 4, "max_rank": 9, "label": "abnormal"},
               "b3": {"pred": "normal", "misses": 0, "first_miss": None, "max_rank": 1, "label": "normal"}}
    served = {"b1": {"pred": "normal", "misses": 0, "first_miss": None, "max_rank": 3, "closed_by": "end"},
              "b2": {"pred": "abnormal", "misses": 2, "first_miss": 5, "max_rank": 9},
              "extra": {"pred": "normal"}}
    found = real_stream.differences(offline, served)
    assert [d["session"] for d in found] == ["b2", "b3"]
    assert found[0]["served"]["first_miss"] == 5 and found[1]["served"] is None
    assert real_stream.differences({"b1": offline["b1"]}, served) == []


def test_offline_verdicts_read_every_split_and_refuse_a_block_in_two(tmp_path):
    for split, ids in (("train", ["a"]), ("val", ["b"]), ("test", ["c", "d"])):
        (tmp_path / split).mkdir()
        pd.DataFrame({"sequence_id": ids, "pred": "normal", "misses": 0, "first_miss": None,
                      "max_rank": [1] * len(ids), "label": "normal"}).to_parquet(
            tmp_path / split / "scores.parquet")
    verdicts = real_stream.offline_verdicts(tmp_path)
    assert sorted(verdicts) == ["a", "b", "c", "d"]
    assert verdicts["c"] == {"pred": "normal", "misses": 0, "first_miss": None, "max_rank": 1,
                             "label": "normal"}
    assert type(verdicts["c"]["max_rank"]) is int  # numpy scalars compare with the served JSON
    pd.DataFrame({"sequence_id": ["a"], "pred": "normal", "misses": 0, "first_miss": None,
                  "max_rank": [1], "label": "normal"}).to_parquet(tmp_path / "val" / "scores.parquet")
    with pytest.raises(SystemExit, match="two splits"):
        real_stream.offline_verdicts(tmp_path)


def _samples(rss, lag_end=0, pending_end=0, processed_end=None):
    """One sample every 5 s over 5 minutes; ``rss(t)`` gives the worker's MiB."""
    rows = [{"t": float(t), "processed": 1000 * t, "ingested": 1000 * t, "lag": 3, "pending": 1,
             "p99_ms": 20.0, "worker0_mib": rss(t)} for t in range(5, 305, 5)]
    rows[-1].update(lag=lag_end, pending=pending_end)
    if processed_end is not None:
        rows[-1]["processed"] = processed_end
    return rows


def _summary(samples, processed, ingested=300_000):
    config = stream_soak.SoakConfig(rate=1000, seconds=300, workers=1)
    return stream_soak.summarize(samples, {"events": processed, "ingest:events": ingested}, {10: 5},
                                 config, replay_end=290.0, drained=True, replay_lines=["replayed"])


def test_the_soak_passes_a_flat_lossless_run_and_fails_a_leak_or_a_loss():
    flat = _summary(_samples(lambda t: 200.0 + (t % 10) / 10), processed=300_000)
    assert flat["verdict"] == {"nothing_lost": True, "memory_flat": True}
    assert abs(flat["workers"][0]["slope_mib_per_min"]) < 0.1
    leak = _summary(_samples(lambda t: 200.0 + t / 6), processed=300_000)  # +10 MiB a minute
    assert leak["verdict"]["memory_flat"] is False
    assert abs(leak["workers"][0]["slope_mib_per_min"] - 10.0) < 1e-6
    lost = _summary(_samples(lambda t: 200.0), processed=299_999)
    assert lost["verdict"]["nothing_lost"] is False
    pending = _summary(_samples(lambda t: 200.0, pending_end=2), processed=300_000)
    assert pending["verdict"]["nothing_lost"] is False


def test_histogram_delta_keeps_only_new_events():
    assert stream_soak.histogram_delta({}, {3: 2}) == {3: 2}
    assert stream_soak.histogram_delta({3: 2, 4: 1}, {3: 2, 4: 5}) == {4: 4}


@pytest.mark.slow
def test_real_log_served_equals_offline_on_every_block(tmp_path: Path, shared_data: Path,
                                                       real_keyseq_smoke_work: Path) -> None:
    if not (shared_data / "hdfs_2pct" / "HDFS_2pct.log.gz").is_file():
        pytest.skip("real HDFS sample (hdfs_2pct) absent")
    args = [sys.executable, str(ROOT / "benchmarks" / "real_stream.py"), "--profile", "smoke",
            "--work", str(tmp_path / "work"), "--keyseq-work", str(real_keyseq_smoke_work),
            "--data", str(shared_data), "--results", str(tmp_path / "results"),
            "--only", "offline,consistency_onnx"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads((tmp_path / "results" / "real_stream.json").read_text())
    check = out["consistency"]["onnx"]
    assert check["blocks_offline"] == out["offline"]["blocks"] > 1000
    assert out["offline"]["abnormal_predicted"] > 0  # the comparison covers both verdicts
    assert check["differences"] == 0, check["examples"]
    assert check["blocks_served"] == check["blocks_offline"] and check["served_only"] == 0
    assert check["closed_by"] == ["end"] and check["events"] == check["ingested"] > 20_000
