"""The local backend: config overrides, and a real 2-step TRL GRPO run on a tiny model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from verl_recipes.local.chat import config as local_config
from verl_recipes.local.common import read_metrics


def test_overrides_and_recipe_reward_kwargs():
    cfg = local_config.build_config(
        "grpo", ["model=/m", "trainer.max_steps=2", "reward.preset=answer_only", "grpo.beta=0.0"]
    )
    assert cfg["model"]["path"] == "/m" and cfg["trainer"]["max_steps"] == 2
    assert cfg["reward"]["preset"] == "answer_only" and cfg["grpo"]["beta"] == 0.0
    # Same reward settings as the verl recipe, class weights included, with Dr. GRPO scaling.
    default = local_config.build_config("grpo", ["model=/m"])
    assert default["reward"] == {"preset": "rationanomaly", "class_weights": {"abnormal": 2.0, "normal": 1.0}}
    assert default["grpo"]["scale_rewards"] == "none"


def test_class_weights_refused_where_std_scaling_cancels_them():
    with pytest.raises(local_config.LocalConfigError, match="cancel"):
        local_config.build_config("grpo", ["model=/m", "grpo.scale_rewards=group"])
    # equal weights have nothing to cancel
    cfg = local_config.build_config(
        "grpo", ["model=/m", "grpo.scale_rewards=group", "reward.class_weights={abnormal: 1, normal: 1}"]
    )
    assert cfg["grpo"]["scale_rewards"] == "group"


@pytest.mark.parametrize("bad", ["trainer.no_such_key=1", "novalue", "grpo..x=1"])
def test_bad_overrides_are_refused(bad):
    with pytest.raises(local_config.LocalConfigError):
        local_config.build_config("grpo", ["model=/m", bad])


def test_model_is_required():
    with pytest.raises(local_config.LocalConfigError, match="model"):
        local_config.build_config("sft", [])


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """Synthetic logs → RL parquet → template-teacher rationales (merged as references), in-process."""
    from logdata.io import atomic_write_parquet
    from logdata.parse import parse_file
    from logdata.synthetic import generate_logs
    from logdata.templates.build import BuildParams, build_datasets
    from verl_recipes.local.chat.rationales import (
        TemplateTeacher,
        distil,
        merge_rationales,
        read_rows,
        sft_frame,
    )

    out = tmp_path_factory.mktemp("local_data")
    ds = out / "ds"
    raw = generate_logs(out / "raw.log", 3000, anomaly_rate=0.3, seed=0)
    parse_file(raw, "synthetic", ds, show_progress=False)
    build_datasets(ds, BuildParams(dataset="synthetic", seed=0))
    rows = read_rows(ds / "train.parquet")
    done, _ = distil(rows, TemplateTeacher(), ds / "sft.parts.jsonl", progress=False)
    sft = sft_frame(rows, done)
    assert len(sft) == len(rows)
    atomic_write_parquet(sft, ds / "sft.parquet")
    merged, hits = merge_rationales(pd.DataFrame(rows), sft)
    assert hits == len(rows)
    atomic_write_parquet(merged, ds / "train.parquet")
    return ds


@pytest.fixture(scope="module")
def sft_model(demo_data, tiny_model_builder, tmp_path_factory):
    """A tiny model (tokenizer trained on the data) taught the answer format by a short local SFT.

    A randomly initialised model never writes ``<answer>``: every completion would get the same
    reward, GRPO's group-normalised advantages would all be 0 and no weight could change.
    """
    from verl_recipes.local.chat.sft import run_sft

    base = tiny_model_builder.build_tiny_causal_lm(
        tmp_path_factory.mktemp("base"), tiny_model_builder.corpus_texts(demo_data / "train.parquet"),
        arch="qwen2", vocab_size=512, seed=0,
    )
    out = tmp_path_factory.mktemp("sft")
    cfg = local_config.build_config("sft", [
        f"model={base}", f"data.train_files={demo_data / 'sft.parquet'}",
        f"trainer.output_dir={out}", "trainer.max_steps=120", "trainer.learning_rate=5.0e-3",
        "trainer.per_device_train_batch_size=8", "trainer.logging_steps=10", "trainer.save_steps=1000",
        "trainer.seed=0",
    ])
    final = run_sft(cfg)
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert losses and losses[-1] < losses[0]
    return final


def test_local_grpo_two_steps_changes_weights_and_logs_reward_components(sft_model, demo_data, tmp_path):
    from verl_recipes.local.chat.grpo import run_grpo

    before = load_file(str(sft_model / "model.safetensors"))
    cfg = local_config.build_config("grpo", [
        f"model={sft_model}", f"data.train_files={demo_data / 'train.parquet'}",
        f"trainer.output_dir={tmp_path}", "trainer.max_steps=2", "trainer.learning_rate=1.0e-3",
        "trainer.per_device_train_batch_size=8", "grpo.num_generations=4",
        "grpo.max_completion_length=96", "grpo.temperature=1.0", "trainer.seed=0",
    ])
    final = run_grpo(cfg)
    after = load_file(str(final / "model.safetensors"))
    assert not (final / "training_args.bin").exists()
    records = [r for r in read_metrics(tmp_path) if "reward" in r]
    assert len(records) == 2
    # the reward differed within groups (non-zero advantages), so the policy gradient is non-zero
    assert max(r["reward_std"] for r in records) > 0.0
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "GRPO did not change any weight"
    components = {k for k in records[0] if k.startswith("logrl/")}
    # every component of the recipe's reward (the reference rationale feeds bleu/rouge/length)
    assert {"logrl/correctness", "logrl/format", "logrl/acc", "logrl/bleu", "logrl/rouge",
            "logrl/length", "logrl/grounding"} <= components
