"""Pieces shared by the local GRPO and SFT runs: device/precision, model loading, metrics log, save."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from logdata.io import plain_file_mode

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "local_config.json"
# Files the HF Trainer writes with pickle; removed from the final (user-facing) model folder.
PICKLED_FILES: tuple[str, ...] = ("training_args.bin",)


def precision_flags(precision: str) -> dict[str, bool]:
    """Return TrainingArguments precision/device flags for ``auto``, ``bf16``, ``fp16`` or ``fp32``.

    >>> precision_flags("fp32")["bf16"]
    False
    """
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in {"bf16", "fp16", "fp32"}:
        raise ValueError(f"trainer.precision must be auto, bf16, fp16 or fp32, not {precision!r}")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def load_model_and_tokenizer(path: Path, dtype: str = "auto") -> tuple[Any, Any]:
    """Load a local HF causal LM and its tokenizer (no remote code, offline).

    Raises:
        ValueError: When the tokenizer has no chat template (prompts are chat messages).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{path}: the tokenizer has no chat template; prompts are chat messages")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=False)
    return model, tokenizer


def peft_config(lora: dict[str, Any]) -> Any:
    """Return a peft ``LoraConfig`` when ``lora.rank > 0``, else ``None``."""
    if int(lora.get("rank") or 0) <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=int(lora["rank"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
        target_modules=lora["target_modules"], task_type="CAUSAL_LM",
    )


def metrics_callback(out_dir: Path) -> Any:
    """A ``TrainerCallback`` appending every log record (losses, rewards/<component>/…) to JSONL.

    Each record is ``{"step": global step, "wall_time": seconds since the epoch, **logs}``; the
    last one of a finished run is TRL's ``train_runtime`` summary (``scripts/watch_training.py``
    reads both: step times from ``wall_time``, the end of the run from the summary).
    """
    from transformers import TrainerCallback

    path = out_dir / METRICS_FILE

    class JsonlMetrics(TrainerCallback):
        """Append ``{"step": …, "wall_time": …, **logs}`` to ``metrics.jsonl`` on every log event."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            record = {"step": state.global_step, "wall_time": round(time.time(), 3),
                      **{k: _num(v) for k, v in logs.items()}}
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    return JsonlMetrics()


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def train_and_save(trainer_cls: Any, cfg: dict[str, Any], out_dir: Path, model: Any, tokenizer: Any,
                   train: Any, val: Any, args: Any, **extra: Any) -> Path:
    """Build a TRL trainer with the settings every local run shares, train it, save the result.

    Args:
        trainer_cls: ``SFTTrainer`` or ``GRPOTrainer``.
        cfg: The run's config (``lora`` is read here; the whole config is saved with the model).
        out_dir: The run folder (metrics and ``final/`` go here).
        model: The model (or its path) as :func:`start_run` returned it.
        tokenizer: Its tokenizer.
        train: The training dataset.
        val: The validation dataset, or None.
        args: The trainer's TRL config.
        **extra: Trainer-specific arguments (``reward_funcs`` for GRPO).

    Returns:
        The folder of the final model (:func:`save_final`).
    """
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=peft_config(cfg["lora"]),
        callbacks=[metrics_callback(out_dir)],
        **extra,
    )
    trainer.train()
    return save_final(trainer, tokenizer, out_dir, cfg)


def save_final(trainer: Any, tokenizer: Any, out_dir: Path, config: dict[str, Any]) -> Path:
    """Save the trained model (safetensors), tokenizer and chat template to ``out_dir/final``.

    LoRA runs save the adapter there; ``model_export.sh`` merges it into the base. The pickled
    ``training_args.bin`` is removed; the run's settings are in ``local_config.json`` instead.
    """
    final = out_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    for name in PICKLED_FILES:
        (final / name).unlink(missing_ok=True)
    write_json(final / CONFIG_FILE, config)
    plain_file_modes(final)
    return final


def plain_file_modes(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open(path, "w")`` would.

    ``save_pretrained`` writes ``model.safetensors`` through a temporary file (mode 0600), so a
    model folder meant for others (``final/``, an export) would not be readable by them.
    """
    mode = plain_file_mode()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """Read the ``metrics.jsonl`` records of a run (empty when absent)."""
    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def shared_training_arguments(cfg: dict[str, Any], out_dir: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments that ``trl.SFTConfig`` and ``trl.GRPOConfig`` take alike.

    Args:
        cfg: A config from :func:`verl_recipes.local.chat.config.build_config`.
        out_dir: The run's output folder.
        has_eval: Whether a validation set is given (evaluated every ``save_steps``).
    """
    trainer = cfg["trainer"]
    return {
        "output_dir": str(out_dir),
        "max_steps": int(trainer["max_steps"]),
        "num_train_epochs": float(trainer["num_train_epochs"]),
        "learning_rate": float(trainer["learning_rate"]),
        "gradient_accumulation_steps": int(trainer["gradient_accumulation_steps"]),
        "logging_steps": int(trainer["logging_steps"]),
        "save_steps": int(trainer["save_steps"]),
        "save_total_limit": int(trainer["save_total_limit"]),
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": int(trainer["save_steps"]) if has_eval else None,
        "seed": int(trainer["seed"]),
        "data_seed": int(trainer["seed"]),
        "report_to": list(trainer["report_to"] or []),
        "disable_tqdm": False,
        **precision_flags(str(trainer["precision"])),
    }


def start_run(cfg: dict[str, Any]) -> tuple[Path, Any, Any]:
    """Seed, create the output folder, record the config and load the model.

    Args:
        cfg: A config from :func:`verl_recipes.local.chat.config.build_config`.

    Returns:
        ``(output folder, model, tokenizer)``.
    """
    from transformers import set_seed

    from verl_recipes.local.chat.config import resolve_path

    set_seed(int(cfg["trainer"]["seed"]))
    out_dir = resolve_path(cfg["trainer"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "local_config.json", cfg)
    # scripts/watch_training.py finds the metrics through this line of the console log.
    logger.info("metrics log: %s", (out_dir / METRICS_FILE).resolve())
    model, tokenizer = load_model_and_tokenizer(resolve_path(cfg["model"]["path"]), cfg["model"]["dtype"])
    return out_dir, model, tokenizer
