"""Local CoT-SFT: TRL ``SFTTrainer`` on CPU or one GPU over the chat parquet of ``logdata rationales``.

The same data the ``sft_lora`` verl recipe reads (``messages``: system, user, assistant). Each
conversation is split into a prompt (system + user) and a completion (the assistant's
``<think>…</think><answer>…</answer>``), so the loss covers the rationale and answer only. LoRA is
optional (``lora.rank``); ``model_export.sh`` merges adapters into the base.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from verl_recipes.local.chat.config import resolve_path
from verl_recipes.local.chat.data import sft_records
from verl_recipes.local.common import shared_training_arguments, start_run, train_and_save

logger = logging.getLogger(__name__)


def sft_arguments(cfg: dict[str, Any], out_dir: Path, has_eval: bool) -> Any:
    """Map the local config onto ``trl.SFTConfig``."""
    from trl import SFTConfig

    trainer = cfg["trainer"]
    return SFTConfig(
        per_device_train_batch_size=int(trainer["per_device_train_batch_size"]),
        max_length=int(cfg["data"]["max_length"]),
        completion_only_loss=True,
        **shared_training_arguments(cfg, out_dir, has_eval),
    )


def run_sft(cfg: dict[str, Any]) -> Path:
    """Fine-tune on rationales as configured; return the folder of the final model.

    Args:
        cfg: A config from :func:`verl_recipes.local.chat.config.build_config` (mode ``sft``).
    """
    from datasets import Dataset
    from trl import SFTTrainer

    out_dir, model, tokenizer = start_run(cfg)
    data = cfg["data"]
    key = str(data["messages_key"])
    train = Dataset.from_list(sft_records(resolve_path(data["train_files"]), key, int(data["max_samples"])))
    val = None
    if data.get("val_files"):
        val = Dataset.from_list(sft_records(resolve_path(data["val_files"]), key))
    logger.info("local SFT: %d conversations", len(train))

    args = sft_arguments(cfg, out_dir, has_eval=val is not None)
    return train_and_save(SFTTrainer, cfg, out_dir, model, tokenizer, train, val, args)
