"""Local GRPO: TRL ``GRPOTrainer`` on CPU or one GPU over the verl parquet, with the LogRL reward.

Same data (``data.train_files``: the RLHF parquet from ``logdata prepare``), same reward kwargs as
the ``rationanomaly_grpo`` recipe (through ``reward.trl_adapter.make_trl_reward_funcs``), same
advantages as the recipe's Dr. GRPO (TRL's ``scale_rewards="none"``: reward minus the group mean),
so the reward's ``class_weights`` act here too. Metrics, including each reward component
(``logrl/<component>``), go to ``<output_dir>/metrics.jsonl``; the final model (safetensors,
tokenizer, chat template) to ``<output_dir>/final``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from verl_recipes.local.chat.config import resolve_path
from verl_recipes.local.chat.data import grpo_dataset
from verl_recipes.local.common import shared_training_arguments, start_run, train_and_save

logger = logging.getLogger(__name__)


def grpo_arguments(cfg: dict[str, Any], out_dir: Path, has_eval: bool) -> Any:
    """Map the local config onto ``trl.GRPOConfig``."""
    from trl import GRPOConfig

    trainer, grpo = cfg["trainer"], cfg["grpo"]
    per_device = int(trainer["per_device_train_batch_size"])
    # A generation batch must hold whole groups: round it up to a multiple of num_generations.
    generations = int(grpo["num_generations"])
    generation_batch = max(generations, -(-per_device // generations) * generations)
    return GRPOConfig(
        per_device_train_batch_size=per_device,
        generation_batch_size=generation_batch * int(trainer["gradient_accumulation_steps"]),
        num_generations=generations,
        max_completion_length=int(grpo["max_completion_length"]),
        temperature=float(grpo["temperature"]),
        beta=float(grpo["beta"]),
        epsilon=float(grpo["epsilon"]),
        loss_type=str(grpo["loss_type"]),
        scale_rewards=grpo["scale_rewards"],
        remove_unused_columns=False,
        log_completions=False,
        **shared_training_arguments(cfg, out_dir, has_eval),
    )


def run_grpo(cfg: dict[str, Any]) -> Path:
    """Train with GRPO as configured; return the folder of the final model.

    Args:
        cfg: A config from :func:`verl_recipes.local.chat.config.build_config` (mode ``grpo``).
    """
    from trl import GRPOTrainer

    from reward.trl_adapter import make_trl_reward_funcs

    out_dir, model, tokenizer = start_run(cfg)
    data = cfg["data"]
    train = grpo_dataset(resolve_path(data["train_files"]), int(data["max_samples"]))
    val = grpo_dataset(resolve_path(data["val_files"])) if data.get("val_files") else None
    reward_funcs = make_trl_reward_funcs(dict(cfg["reward"] or {}))
    logger.info("local GRPO: %d prompts, reward kwargs %s", len(train), cfg["reward"])

    args = grpo_arguments(cfg, out_dir, has_eval=val is not None)
    return train_and_save(GRPOTrainer, cfg, out_dir, model, tokenizer, train, val, args,
                          reward_funcs=reward_funcs)
