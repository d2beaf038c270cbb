"""`make e2e` in the suite: verl's SFT trainer and main_ppo on CPU, our recipe, reward and launcher.

One run of scripts/e2e.sh (about 5 minutes on 2 cores; hard timeouts per stage and here), then
checks on what verl itself wrote: its file-logger metrics, its FSDP checkpoint, the export, the
vLLM predictions and the evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
GRPO_STEPS = 3
RANKS = 2
# rationanomaly preset without a perplexity model: format [-0.5, 0.1] + correctness [-2.2, 1.0] + four
# think terms of weight 0.1 paid only when correct → [-2.7, 1.5], x the recipe's class weight 2.0 for
# abnormal gold, as float32: verl logs float32 scores (a score at -5.4 logs as -5.4000001 in float64)
SCORE_LOW, SCORE_HIGH = np.float32(-2.7 * 2.0), np.float32(1.5 * 2.0)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    env = {**os.environ, "E2E_DIR": str(out), "E2E_GRPO_STEPS": str(GRPO_STEPS), "E2E_RANKS": str(RANKS)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "e2e.sh")], cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return out


def _steps(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "grpo_metrics.jsonl").read_text().splitlines() if line]
    return [r for r in rows if "critic/score/mean" in r["data"]]


def test_grpo_logged_every_step_with_scores_inside_the_reward_bounds(e2e_run: Path) -> None:
    steps = _steps(e2e_run)
    assert [r["step"] for r in steps] == list(range(1, GRPO_STEPS + 1))
    for row in steps:
        data = row["data"]
        for key in ("critic/score/mean", "critic/score/min", "critic/score/max", "critic/rewards/mean"):
            assert SCORE_LOW <= np.float32(data[key]) <= SCORE_HIGH, (row["step"], key, data[key])
        assert data["actor/grad_norm"] > 0  # the policy really received a gradient


def test_grpo_checkpoint_is_sharded_and_exported(e2e_run: Path) -> None:
    from safetensors.torch import load_file

    actor = e2e_run / "grpo_ckpt" / f"global_step_{GRPO_STEPS}" / "actor"
    shards = sorted(p.name for p in actor.glob("model_world_size_*_rank_*.pt"))
    assert shards == [f"model_world_size_{RANKS}_rank_{r}.pt" for r in range(RANKS)]
    grpo = load_file(e2e_run / "model" / "model.safetensors")
    sft = load_file(e2e_run / "sft_model" / "model.safetensors")
    assert grpo.keys() == sft.keys()
    assert all(grpo[k].shape == sft[k].shape for k in sft)  # shards merged back to full tensors
    assert max(float((grpo[k].float() - sft[k].float()).abs().max()) for k in sft) > 0  # GRPO updated


def test_vllm_predictions_and_metrics(e2e_run: Path) -> None:
    test = pd.read_parquet(e2e_run / "data" / "test.parquet")
    predictions = pd.read_parquet(e2e_run / "predictions.parquet")
    assert len(predictions) == len(test)
    assert predictions["response"].str.len().gt(0).all()
    assert set(predictions["pred"]) <= {"normal", "abnormal", "unknown"}
    metrics = json.loads((e2e_run / "eval" / "metrics.json").read_text())
    assert metrics["template"]["overall"]["n"] == len(test)
    # the SFT'd model answers in the expected format (a random model never does)
    assert metrics["template"]["overall"]["unknown_rate"] < 0.5


def test_report_shows_stage_times_steps_and_metrics(e2e_run: Path) -> None:
    report = (e2e_run / "report.md").read_text()
    for stage in ("sft", "grpo", "predict", "evaluate"):
        assert f"  {stage} " in report
    assert "GRPO reward per step" in report and "OUT OF BOUNDS" not in report
    assert "FSDP workers on 2 distinct nodes" in report


def test_multinode_grpo_through_ray_address_places_one_rank_per_node(e2e_run: Path) -> None:
    """scripts/e2e_multinode.sh: 2 raylets, RAY_ADDRESS, trainer.nnodes=2 x 1 rank each."""
    multinode = e2e_run / "multinode"
    placement = json.loads((multinode / "placement.json").read_text())
    assert placement["nodes"] == 2
    workers = placement["actor_nodes"]["create_colocated_worker_cls.<locals>.WorkerDict"]
    assert len(workers) == 2  # the two FSDP ranks ran on different raylets
    steps = _steps(multinode)
    assert [r["step"] for r in steps] == [1, 2]
    for row in steps:
        assert SCORE_LOW <= np.float32(row["data"]["critic/score/mean"]) <= SCORE_HIGH
    actor = multinode / "grpo_ckpt" / "global_step_2" / "actor"
    assert sorted(p.name for p in actor.glob("model_world_size_*_rank_*.pt")) == [
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
