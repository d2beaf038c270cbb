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

from verl_recipes.local.common import (
    load_model_and_tokenizer,
    metrics_callback,
    peft_config,
    precision_flags,
    save_final,
    write_json,
)
from verl_recipes.local.config import resolve_path
from verl_recipes.local.data import sft_records

logger = logging.getLogger(__name__)


def sft_arguments(cfg: dict[str, Any], out_dir: Path, has_eval: bool) -> Any:
    """Map the local config onto ``trl.SFTConfig``."""
    from trl import SFTConfig

    trainer = cfg["trainer"]
    return SFTConfig(
        output_dir=str(out_dir),
        max_steps=int(trainer["max_steps"]),
        num_train_epochs=float(trainer["num_train_epochs"]),
        learning_rate=float(trainer["learning_rate"]),
        per_device_train_batch_size=int(trainer["per_device_train_batch_size"]),
        gradient_accumulation_steps=int(trainer["gradient_accumulation_steps"]),
        max_length=int(cfg["data"]["max_length"]),
        completion_only_loss=True,
        logging_steps=int(trainer["logging_steps"]),
        save_steps=int(trainer["save_steps"]),
        save_total_limit=int(trainer["save_total_limit"]),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=int(trainer["save_steps"]) if has_eval else None,
        seed=int(trainer["seed"]),
        data_seed=int(trainer["seed"]),
        report_to=list(trainer["report_to"] or []),
        disable_tqdm=False,
        **precision_flags(str(trainer["precision"])),
    )


def run_sft(cfg: dict[str, Any]) -> Path:
    """Fine-tune on rationales as configured; return the folder of the final model.

    Args:
        cfg: A config from :func:`verl_recipes.local.config.build_config` (mode ``sft``).
    """
    from transformers import set_seed
    from trl import SFTTrainer

    from datasets import Dataset

    set_seed(int(cfg["trainer"]["seed"]))
    out_dir = resolve_path(cfg["trainer"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "local_config.json", cfg)

    model, tokenizer = load_model_and_tokenizer(resolve_path(cfg["model"]["path"]), cfg["model"]["dtype"])
    data = cfg["data"]
    key = str(data["messages_key"])
    train = Dataset.from_list(sft_records(resolve_path(data["train_files"]), key, int(data["max_samples"])))
    val = None
    if data.get("val_files"):
        val = Dataset.from_list(sft_records(resolve_path(data["val_files"]), key))
    logger.info("local SFT: %d conversations", len(train))

    trainer = SFTTrainer(
        model=model,
        args=sft_arguments(cfg, out_dir, has_eval=val is not None),
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=peft_config(cfg["lora"]),
        callbacks=[metrics_callback(out_dir)],
    )
    trainer.train()
    return save_final(trainer, tokenizer, out_dir, cfg)
