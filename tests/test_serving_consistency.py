"""Replaying a log through the real service gives the offline detector's verdict for every session.

A real ``redis-server``, a real ``detect`` worker process and ``replay`` (the README's commands) on
a synthetic HDFS-like log; the offline reference is ``validation/keyseq_detect.py`` on the
``logdata sequences`` test split of the same log.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import run_python

COMPARED = ("pred", "misses", "first_miss", "max_rank")


def _session_verdicts(client) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall("logrl:session-verdicts").items()}


def _differences(offline: pd.DataFrame, served: dict[str, dict]) -> list:
    return [(row["sequence_id"], {c: row[c] for c in COMPARED}, served.get(row["sequence_id"]))
            for row in offline.to_dict("records")
            if served.get(row["sequence_id"]) is None
            or any(served[row["sequence_id"]][c] != row[c] for c in COMPARED)]


def _serve(serving_cli, server, case, log, *flags) -> dict[str, dict]:
    worker = serving_cli.worker(server.url, case, *flags, "--exit-when-idle", 5, log=log)
    try:
        done = serving_cli.run("replay", "--redis", server.url, "--input", case.log, "--rate", 4000,
                               "--no-progress")
        assert done.returncode == 0, done.stderr
        assert worker.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        worker.kill()
    return _session_verdicts(server.client())


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_replay_gives_the_offline_verdict_of_every_session(backend, redis_server, stream_case,
                                                           serving_cli, tmp_path):
    worker = serving_cli.worker(redis_server.url, stream_case, "--backend", backend,
                                "--partitions", 3, "--exit-when-idle", 5, log=tmp_path / "w.log")
    try:
        done = serving_cli.run("replay", "--redis", redis_server.url, "--input", stream_case.log,
                               "--rate", 4000, "--no-progress")
        assert done.returncode == 0, done.stderr
        assert worker.wait(timeout=180) == 0, (tmp_path / "w.log").read_text()[-3000:]
    finally:
        worker.kill()
    offline = pd.read_parquet(stream_case.offline)
    served = _session_verdicts(redis_server.client())
    assert len(offline) > 300 and (offline["pred"] == "abnormal").sum() > 10
    differ = _differences(offline, served)
    assert not differ, differ[:5]
    # every session of the log got a verdict (the train split too), each closed by the end marker
    assert len(served) >= len(offline) and {v["closed_by"] for v in served.values()} == {"end"}
    # one verdict per (event, session): the hash fields are "<event id>@<session>"
    client = redis_server.client()
    fields = [f.decode() for key in client.scan_iter("logrl:verdicts:*") for f in client.hkeys(key)]
    assert len(fields) == len(set(fields)) == sum(v["n_events"] for v in served.values())
    # an alert per abnormal session, carrying the event id of its first miss
    alerts = {k.decode(): json.loads(v) for k, v in client.hgetall("logrl:alerts").items()}
    abnormal = {s for s, v in served.items() if v["pred"] == "abnormal"}
    assert set(alerts) == abnormal
    assert client.xlen("logrl:alerts:stream") == len(abnormal)


@pytest.fixture(scope="module")
def count_case(tmp_path_factory, repo_root):
    """BGL-like log, overlapping count windows (50 lines every 20) longer than the model context
    (16 tokens: chunks of 14 keys), chronological split; offline scores with K=2."""
    from logdata.synthetic import generate_logs

    root = tmp_path_factory.mktemp("count_case")
    log = generate_logs(root / "bgl.log", 4000, fmt="bgl", anomaly_rate=0.05, seed=2)
    run = run_python
    run("-m", "logdata", "parse", "--dataset", "bgl", "--input", log, "--out", root / "parsed",
        "--no-progress")
    run("-m", "logdata", "sequences", "--input", root / "parsed" / "structured.parquet", "--out",
        root / "seq", "--protocol", "chronological", "--window", "count", "--window-size", "50",
        "--window-step", "20", "--context", "16", "--long-sequences", "chunk")
    run("-m", "verl_recipes.local.keyseq.pretrain", "--input", root / "seq", "--out", root / "model",
        "--arch", "loggpt", "--epochs", "2", "--lr", "3e-3", "--batch-size", "16", "--threads", "1",
        "--seed", "0", "--no-progress")
    run(repo_root / "validation" / "keyseq_detect.py", "--model", root / "model", "--input",
        root / "seq" / "test.parquet", "--out", root / "offline", "--k", "2", "--no-progress")
    return SimpleNamespace(log=log, parsed=root / "parsed", sequences=root / "seq",
                           model=root / "model", offline=root / "offline" / "scores.parquet", k=2)


def test_overlapping_count_windows_longer_than_the_context_match_offline(redis_server, count_case,
                                                                          serving_cli, tmp_path):
    offline = pd.read_parquet(count_case.offline)
    test_chunks = pd.read_parquet(count_case.sequences / "test.parquet")
    assert test_chunks["n_chunks"].max() > 1  # the case exercises chunking
    served = _serve(serving_cli, redis_server, count_case, tmp_path / "w.log", "--partitions", 4)
    assert not _differences(offline, served), _differences(offline, served)[:5]
    # every line sits in 50/20 → 2 or 3 windows: full windows close as soon as they are full
    assert {v["closed_by"] for v in served.values()} == {"full", "end"}
    assert offline["misses"].nunique() > 3  # miss counts (compared exactly) vary by window
