"""Configuration of the local backend: declarative defaults plus Hydra-like ``key=value`` overrides.

The local backend reads the same parquet and the same reward settings as the verl recipes, so its
defaults point at the same files and take the reward kwargs from the ``rationanomaly_grpo`` recipe
yaml. Overrides use dotted keys with YAML values::

    model=outputs/tiny data.train_files=datasets/synthetic/train.parquet trainer.max_steps=2
    reward.preset=answer_only grpo.num_generations=4 lora.rank=8

``model=…`` is a shorthand for ``model.path=…``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parents[2]
GRPO_RECIPE = RECIPES_DIR / "rationanomaly_grpo" / "rationanomaly_grpo.yaml"

# Defaults shared by both modes; one table per concern, every knob commented.
COMMON_DEFAULTS: dict[str, Any] = {
    # HF model folder (required): a chat model with a chat template
    "model": {"path": None, "dtype": "auto"},
    "data": {
        # parquet written by `python -m logdata prepare` (GRPO) or `logdata rationales` (SFT)
        "train_files": "datasets/synthetic/train.parquet",
        # optional evaluation parquet (null: no evaluation during training)
        "val_files": None,
        # use at most this many training rows (-1: all)
        "max_samples": -1,
    },
    # LoRA adapters (rank 0: full fine-tuning)
    "lora": {"rank": 0, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
    "trainer": {
        # checkpoints, logs and the final model land here
        "output_dir": "outputs/local",
        # optimiser steps (-1: run num_train_epochs)
        "max_steps": -1,
        # passes over the data when max_steps is -1
        "num_train_epochs": 1,
        # AdamW learning rate
        "learning_rate": 1.0e-5,
        # prompts (GRPO: completions) per device per step
        "per_device_train_batch_size": 4,
        # micro-steps accumulated per optimiser step
        "gradient_accumulation_steps": 1,
        # log every N steps
        "logging_steps": 1,
        # checkpoint every N steps (the final model is always saved)
        "save_steps": 50,
        # keep the latest N checkpoints
        "save_total_limit": 2,
        # seed for data order, sampling and initialisation
        "seed": 42,
        # "auto": bf16 on a GPU that supports it, fp32 on CPU
        "precision": "auto",
        # extra `report_to` backends (e.g. ["tensorboard"]); metrics.jsonl is always written
        "report_to": [],
    },
}

GRPO_DEFAULTS: dict[str, Any] = {
    "trainer": {"output_dir": "outputs/local_grpo", "learning_rate": 1.0e-6},
    "data": {"max_prompt_length": 1024},
    "grpo": {
        # completions per prompt: one GRPO group answers one log
        "num_generations": 4,
        # response budget in tokens
        "max_completion_length": 256,
        # sampling temperature (the paper uses 0.9)
        "temperature": 0.9,
        # KL coefficient to the reference model (paper: 0.001)
        "beta": 0.001,
        # PPO-style clipping
        "epsilon": 0.2,
        # GRPO loss aggregation
        "loss_type": "grpo",
        # advantage scaling: "none" (r - group mean, as the recipe's Dr. GRPO: class weights act),
        # "group" (divide by the group's std: cancels class weights) or "batch"
        "scale_rewards": "none",
    },
    # reward kwargs; null: the rationanomaly_grpo recipe's reward.custom_reward_function.reward_kwargs
    "reward": None,
}

SFT_DEFAULTS: dict[str, Any] = {
    "trainer": {"output_dir": "outputs/local_sft", "learning_rate": 1.0e-4, "num_train_epochs": 3},
    "data": {
        "train_files": "datasets/synthetic/sft_train.parquet",
        # chat column: system, user, assistant
        "messages_key": "messages",
        # tokens per conversation (longer ones are truncated)
        "max_length": 1024,
    },
}

MODE_DEFAULTS: dict[str, dict[str, Any]] = {"grpo": GRPO_DEFAULTS, "sft": SFT_DEFAULTS}


class LocalConfigError(ValueError):
    """An override or a config value is invalid."""


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``extra`` (neither is modified).

    >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    """
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value.

    >>> parse_override("trainer.max_steps=2")
    (['trainer', 'max_steps'], 2)
    >>> parse_override("model=/tmp/m")
    (['model', 'path'], '/tmp/m')

    Raises:
        LocalConfigError: When the text has no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.lstrip("+")
    if not sep or not key or any(not part for part in key.split(".")):
        raise LocalConfigError(f"override {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise LocalConfigError(f"override {text!r}: bad value ({err})") from err
    parts = key.split(".")
    if parts == ["model"]:
        parts = ["model", "path"]
    return parts, value


def recipe_reward_kwargs(recipe_yaml: Path = GRPO_RECIPE) -> dict[str, Any]:
    """Return ``reward.custom_reward_function.reward_kwargs`` of a recipe yaml (same reward as verl).

    >>> isinstance(recipe_reward_kwargs(), dict)
    True
    """
    data = yaml.safe_load(recipe_yaml.read_text(encoding="utf-8")) or {}
    kwargs = ((data.get("reward") or {}).get("custom_reward_function") or {}).get("reward_kwargs")
    return dict(kwargs or {})


def check_grpo_class_weights(cfg: Mapping[str, Any]) -> None:
    """Refuse class weights that TRL's per-group std scaling would cancel.

    Raises:
        LocalConfigError: ``reward.class_weights`` differ while ``grpo.scale_rewards`` is ``group``.

    >>> cfg = {"reward": {"class_weights": {"abnormal": 2}}, "grpo": {"scale_rewards": "none"}}
    >>> check_grpo_class_weights(cfg)
    """
    from reward.class_weights import is_weighted, parse_class_weights

    try:
        weights = parse_class_weights((cfg.get("reward") or {}).get("class_weights"))
    except ValueError as err:
        raise LocalConfigError(f"reward.{err}") from err
    if is_weighted(weights) and cfg["grpo"]["scale_rewards"] == "group":
        raise LocalConfigError(
            f"reward.class_weights {weights} cancel under grpo.scale_rewards=group (per-group std); "
            "set grpo.scale_rewards=none or drop the class weights"
        )


def build_config(mode: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose the local config for ``mode`` (``grpo`` or ``sft``) from defaults and overrides.

    Args:
        mode: ``grpo`` or ``sft``.
        overrides: ``key=value`` strings (dotted keys, YAML values).

    Returns:
        The nested config dict.

    Raises:
        LocalConfigError: On an unknown mode, unknown key or missing model path.
    """
    if mode not in MODE_DEFAULTS:
        raise LocalConfigError(f"unknown mode {mode!r}; choose one of {sorted(MODE_DEFAULTS)}")
    cfg = deep_merge(COMMON_DEFAULTS, MODE_DEFAULTS[mode])
    if mode == "grpo":
        cfg["reward"] = recipe_reward_kwargs()
    for text in overrides:
        parts, value = parse_override(text)
        node = cfg
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None and parts[0] == "reward":
                child = node[part] = {}
            if not isinstance(child, dict):
                raise LocalConfigError(f"unknown key {'.'.join(parts[: depth + 1])!r} in {text!r}")
            node = child
        # reward.* is free-form (reward kwargs); elsewhere only known keys are accepted
        if parts[0] != "reward" and parts[-1] not in node:
            raise LocalConfigError(f"unknown key {'.'.join(parts)!r}; see --dry-run for known keys")
        node[parts[-1]] = value
    if not cfg["model"]["path"]:
        raise LocalConfigError("set the model: model=PATH (a Hugging Face model folder)")
    if mode == "grpo":
        check_grpo_class_weights(cfg)
    return cfg


def resolve_path(value: str | None, root: Path | None = None) -> Path | None:
    """Return ``value`` as an absolute path (relative to the cwd, else to the repository root)."""
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return ((root or RECIPES_DIR.parent) / path).resolve()
