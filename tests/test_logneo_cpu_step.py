"""One logneo_ppo step of verl's real main_ppo on CPU (scripts/logneo_cpu_step.sh, ~1.5 minutes).

Checks what verl itself logged: our registered trainer ran (token-reward gap metric), the actor
loss held the gold cross-entropy (``actor/loss = actor/pg_loss + μ · actor/ce_loss``), the
critic trained and the policy received a gradient.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MU = 0.5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def step_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("logneo_cpu") / "run"
    env = {**os.environ, "LOGNEO_DIR": str(out), "LOGNEO_STEPS": "1", "LOGNEO_CE_COEF": str(MU)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "logneo_cpu_step.sh")], cwd=out.parent,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in rows if "actor/ce_loss" in r["data"]]
    assert [r["step"] for r in steps] == [1]
    return steps[0]["data"]


def test_logneo_trainer_placed_token_rewards(step_metrics: dict) -> None:
    assert step_metrics["logneo/token_reward_gap"] < 1e-4
    assert math.isfinite(step_metrics["critic/score/mean"])


def test_actor_loss_is_ppo_plus_mu_gold_cross_entropy(step_metrics: dict) -> None:
    ce, pg, loss = (step_metrics[k] for k in ("actor/ce_loss", "actor/pg_loss", "actor/loss"))
    assert ce > 0.5  # a random model is far from the gold keys
    assert loss == pytest.approx(pg + MU * ce, rel=1e-2, abs=1e-3)
    assert step_metrics["actor/grad_norm"] > 0 and step_metrics["critic/grad_norm"] > 0
