"""``model_train.sh``: dry runs compose real configs; no GPU means a pointer to the local backend."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "model_train.sh"), *args], capture_output=True, text=True,
        timeout=180, cwd=REPO, env={**os.environ, **(env or {})},
    )


def test_dry_run_default_recipe_prints_a_valid_config():
    checks = {"actor_rollout_ref.rollout.n": 16, "data.train_batch_size": 32,
              "actor_rollout_ref.actor.optim.lr": 4.0e-7, "trainer.n_gpus_per_node": 8,
              "trainer.nnodes": 2}
    proc = _run("--dry-run", "trainer.nnodes=2")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    reward_path = Path(cfg["reward"]["custom_reward_function"]["path"])
    assert reward_path.is_absolute() and reward_path.is_file()
    assert "custom_reward_function" not in cfg or not cfg["custom_reward_function"]["path"]
    for key, value in checks.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert Path(cfg["data"]["train_files"]).is_absolute()


def test_dry_run_sft_lora():
    proc = _run("sft_lora", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["lora_rank"] == 16 and Path(cfg["data"]["train_files"]).is_absolute()


def test_dry_run_local_prints_the_local_config(tmp_path):
    proc = _run("local", "--dry-run", f"model={tmp_path}", "trainer.max_steps=2", "reward.preset=answer_only")
    assert proc.returncode == 0, proc.stderr
    assert '"max_steps": 2' in proc.stdout and '"preset": "answer_only"' in proc.stdout


def test_bad_inputs_give_one_line_errors():
    proc = _run("--dry-run", "data.train_batch_size=3")  # below ppo_mini_batch_size 8
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("local", "--dry-run", "no_such_key=1")
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present")
def test_real_run_without_gpu_points_to_local_backend():
    proc = _run("rationanomaly_grpo")
    assert proc.returncode == 3
    assert "bash model_train.sh local" in proc.stderr
