"""The demo's data stages: its test sessions hold normal and abnormal ones (issue 11, item 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def test_demo_test_sessions_hold_both_classes(tmp_path: Path) -> None:
    """With 100-line windows every demo test session was abnormal: session F1 could not show a
    false alarm. The demo's own settings (scripts/demo.sh, stopped after `prepare`) must give
    both classes a real share."""
    demo = tmp_path / "demo"
    env = {**os.environ, "DEMO_DIR": str(demo), "DEMO_STOP_AFTER": "prepare",
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (demo / "tiny-qwen2").exists(), "DEMO_STOP_AFTER=prepare ran later stages"
    sessions = pd.read_parquet(demo / "data" / "sessions_test.parquet")
    counts = sessions["label"].value_counts().to_dict()
    assert set(counts) == {"normal", "abnormal"}, counts
    assert min(counts.values()) >= 0.2 * len(sessions), counts
