"""The local backend: config overrides, and a real 2-step TRL GRPO run on a tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verl_recipes.local import config as local_config
from verl_recipes.local.common import read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_overrides_and_recipe_reward_kwargs():
    cfg = local_config.build_config(
        "grpo", ["model=/m", "trainer.max_steps=2", "reward.preset=answer_only", "grpo.beta=0.0"]
    )
    assert cfg["model"]["path"] == "/m" and cfg["trainer"]["max_steps"] == 2
    assert cfg["reward"]["preset"] == "answer_only" and cfg["grpo"]["beta"] == 0.0
    # Same reward settings as the verl recipe, minus the verl-only class shift.
    default = local_config.build_config("grpo", ["model=/m"])["reward"]
    assert default == {"preset": "rationanomaly"}


@pytest.mark.parametrize("bad", ["trainer.no_such_key=1", "novalue", "grpo..x=1"])
def test_bad_overrides_are_refused(bad):
    with pytest.raises(local_config.LocalConfigError):
        local_config.build_config("grpo", ["model=/m", bad])


def test_model_is_required():
    with pytest.raises(local_config.LocalConfigError, match="model"):
        local_config.build_config("sft", [])


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("local_data")
    raw = out / "raw.log"
    subprocess.run([sys.executable, "-m", "logdata", "synthetic", "--out", str(raw), "--lines", "3000",
                    "--seed", "0", "--no-progress"], check=True, cwd=REPO, capture_output=True)
    subprocess.run([sys.executable, "-m", "logdata", "prepare", "--dataset", "synthetic", "--input",
                    str(raw), "--out", str(out / "ds"), "--seed", "0", "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    subprocess.run([sys.executable, "-m", "logdata", "rationales", "--teacher", "template", "--in",
                    str(out / "ds" / "train.parquet"), "--out", str(out / "ds" / "sft.parquet"),
                    "--no-progress"], check=True, cwd=REPO, capture_output=True)
    return out / "ds"


@pytest.fixture(scope="module")
def sft_model(demo_data, tiny_chat_model, tmp_path_factory):
    """A tiny model taught the answer format by a short local SFT run (so GRPO sees reward variance)."""
    from verl_recipes.local.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    cfg = local_config.build_config("sft", [
        f"model={tiny_chat_model}", f"data.train_files={demo_data / 'sft.parquet'}",
        f"trainer.output_dir={out}", "trainer.max_steps=80", "trainer.learning_rate=3.0e-3",
        "trainer.per_device_train_batch_size=8", "trainer.save_steps=1000",
    ])
    final = run_sft(cfg)
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert losses and losses[-1] < losses[0]
    return final


@pytest.mark.slow
def test_local_grpo_two_steps_changes_weights_and_logs_reward_components(sft_model, demo_data, tmp_path):
    from verl_recipes.local.grpo import run_grpo

    before = load_file(str(sft_model / "model.safetensors"))
    cfg = local_config.build_config("grpo", [
        f"model={sft_model}", f"data.train_files={demo_data / 'train.parquet'}",
        f"trainer.output_dir={tmp_path}", "trainer.max_steps=2", "trainer.learning_rate=1.0e-3",
        "trainer.per_device_train_batch_size=8", "grpo.num_generations=4",
        "grpo.max_completion_length=160", "grpo.temperature=1.0",
    ])
    final = run_grpo(cfg)
    after = load_file(str(final / "model.safetensors"))
    assert not (final / "training_args.bin").exists()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "GRPO did not change any weight"
    records = [r for r in read_metrics(tmp_path) if "reward" in r]
    assert len(records) == 2
    components = {k for k in records[0] if k.startswith("logrl/")}
    assert {"logrl/correctness", "logrl/format", "logrl/acc"} <= components
