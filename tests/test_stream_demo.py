"""`make stream-demo` (scripts/stream_demo.sh): Redis, a detect worker and a replay; alerts appear."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd


def test_stream_demo_raises_alerts_for_abnormal_blocks(tmp_path, repo_root, redis_binary):
    env = {**os.environ, "PYTHON": sys.executable, "STREAM_DEMO_OUT": str(tmp_path / "demo"),
           "STREAM_DEMO_LINES": "6000", "STREAM_DEMO_RATE": "4000"}
    done = subprocess.run(["bash", "scripts/stream_demo.sh"], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    alerts = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(alerts) == 5 and all(a["misses"] >= 1 for a in alerts)
    # the alerted blocks are mostly truly abnormal ones (labels the service never saw)
    labels = pd.read_csv(tmp_path / "demo" / "anomaly_label.csv")
    abnormal = set(labels.loc[labels["Label"] == "Anomaly", "BlockId"])
    assert sum(a["session"] in abnormal for a in alerts) >= 3
    assert "processed 6,000 events" in done.stdout
    # the server the demo started is gone
    assert not (tmp_path / "demo" / "redis" / "port").exists()
