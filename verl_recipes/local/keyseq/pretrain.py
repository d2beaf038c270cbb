r"""Cross-entropy pretraining of a next-key model on normal log-key sequences (local backend).

Reads the output of ``python -m logdata sequences`` (``train.parquet``, ``val.parquet``,
``vocab.json``, ``meta.json``), builds a randomly initialised model of one of
``verl_recipes.local.keyseq.model.ARCHITECTURES`` with a key tokenizer, and trains it with AdamW on
``<bos> keys… [<eos>]`` (``<eos>`` only after a sequence's last chunk), padding masked out of the
loss. The validation loss is computed after every epoch (and every ``--eval-every`` steps); the
checkpoint with the best validation loss is kept in ``--out`` (safetensors + tokenizer), with
``pretrain_summary.json``. The inputs are checked against the data's ``meta.json``
(:func:`logdata.staging.verify_file`), and the model's ``config.json`` records the path and sha256
of the ``vocab.json`` it was built with (``keyseq_vocab``, see
:mod:`verl_recipes.local.keyseq.model`), which ``validation/keyseq_detect.py`` checks.

Usage::

    python -m verl_recipes.local.keyseq.pretrain --input datasets/bgl_keyseq --arch loggpt \\
        --out outputs/loggpt_bgl --epochs 20 --lr 1e-4 --batch-size 16

LogGPT's settings are the defaults (AdamW 1e-4, batch 16, best validation loss kept). On clusters
use verl's SFT trainer instead (``verl_recipes/keyseq_sft``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from logdata.cliargs import (
    add_flag,
    add_input_flag,
    add_out_flag,
    add_progress_flag,
    add_seed_flag,
    new_parser,
)
from logdata.errors import LogDataError, run_cli
from logdata.io import atomic_write_text, read_parquet, require_dir
from logdata.keyseq.vocab import KeyVocab
from logdata.staging import verify_file
from reward.perplexity import resolve_device
from verl_recipes.local.keyseq.model import (
    ARCHITECTURES,
    build_keyseq_model,
    keys_to_ids,
    pad_batch,
    save_model,
)

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining settings (LogGPT's defaults).

    Attributes:
        arch: Architecture name.
        epochs: Passes over the training set.
        lr: AdamW learning rate.
        batch_size: Sequences per step.
        weight_decay: AdamW weight decay.
        max_steps: Stop after this many steps (0: no limit).
        eval_every: Also evaluate every N steps (0: once per epoch only).
        context: Model positions (default: the data's context from ``meta.json``).
        seed: Seed of initialisation and shuffling.
        device: ``cpu``, ``cuda`` or ``auto``.
        schedule: Learning-rate schedule, a key of :data:`SCHEDULES`.
        warmup_steps: Linear warm-up steps (schedules other than ``constant``).
        max_grad_norm: Gradient clipping norm (0: off).
        threads: Torch CPU threads (None: torch's default; 1 is fastest for tiny models).
    """

    arch: str = "loggpt"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 16
    weight_decay: float = 0.0
    max_steps: int = 0
    eval_every: int = 0
    context: int | None = None
    seed: int = 0
    device: str = "auto"
    schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    threads: int | None = None


def _warmup(step: int, warmup: int) -> float:
    """Linear warm-up factor (1 after ``warmup`` steps)."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _linear(step: int, total: int, warmup: int) -> float:
    """Warm-up, then linear decay to 0 at ``total``."""
    if step < warmup:
        return _warmup(step, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step: int, total: int, warmup: int) -> float:
    """Warm-up, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return _warmup(step, warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


#: Learning-rate multiplier per step: name → f(step, total, warmup). LogGPT uses ``constant``.
SCHEDULES: dict[str, Callable[[int, int, int], float]] = {
    "constant": lambda step, total, warmup: _warmup(step, warmup),
    "linear": _linear,
    "cosine": _cosine,
}


def encode_rows(rows: pd.DataFrame, tokenizer: Any) -> list[list[int]]:
    """Token ids of every chunk: ``<bos>`` + keys, plus ``<eos>`` after a sequence's last chunk."""
    out = []
    for keys, chunk, n_chunks in zip(rows["keys"], rows["chunk"], rows["n_chunks"], strict=True):
        ids = [tokenizer.bos_token_id, *keys_to_ids(tokenizer, list(keys))]
        if chunk == n_chunks - 1:
            ids.append(tokenizer.eos_token_id)
        out.append(ids)
    return out


def collate(batch: list[list[int]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; labels are the inputs with padding set to ``-100``."""
    input_ids, mask = pad_batch(batch, pad_id)
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def evaluate_loss(model: Any, data: list[list[int]], pad_id: int, batch_size: int,
                  device: str) -> float:
    """Mean per-token cross-entropy of ``model`` on ``data`` (``nan`` when empty)."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = {k: v.to(device) for k, v in collate(data[start:start + batch_size],
                                                         pad_id).items()}
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(loss)
            count += int((labels != IGNORE_INDEX).sum())
    model.train()
    return total / count if count else math.nan


def data_context(data_dir: Path) -> int | None:
    """The context the sequences were chunked for (``meta.json``), or None."""
    try:
        return int(json.loads((data_dir / "meta.json").read_text())["params"]["context"])
    except (OSError, ValueError, KeyError):
        return None


def _read_split(data_dir: Path, name: str) -> pd.DataFrame:
    path = data_dir / f"{name}.parquet"
    if not path.is_file():
        raise LogDataError(f"{path} not found; run `python -m logdata sequences` first")
    verify_file(path)
    return read_parquet(path)


def load_vocab(data_dir: Path) -> tuple[KeyVocab, Path]:
    """The data's ``vocab.json`` (checked against its ``meta.json``) and its path."""
    path = data_dir / "vocab.json"
    if path.is_file():
        verify_file(path)
    return KeyVocab.load(path), path


def pretrain(data_dir: Path, out_dir: Path, config: PretrainConfig,
             progress: bool = True) -> dict[str, Any]:
    """Train a next-key model on ``data_dir``'s normal sequences; keep the best validation loss.

    Args:
        data_dir: Output folder of ``python -m logdata sequences``.
        out_dir: Where the best checkpoint and ``pretrain_summary.json`` go.
        config: Training settings.
        progress: Show a progress bar over the steps.

    Returns:
        The summary (best validation loss, steps, seconds, history).

    Raises:
        LogDataError: On missing inputs or an empty training set.
    """
    import torch
    from tqdm.auto import tqdm

    vocab, vocab_file = load_vocab(data_dir)
    context = config.context or data_context(data_dir)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer = build_keyseq_model(vocab, config.arch, context=context, seed=config.seed,
                                          vocab_file=vocab_file)
    model.to(device).train()
    train = encode_rows(_read_split(data_dir, "train"), tokenizer)
    val = encode_rows(_read_split(data_dir, "val"), tokenizer)
    if not train:
        raise LogDataError(f"{data_dir}/train.parquet has no rows")
    too_long = max(len(ids) for ids in train + val) - model.config.max_position_embeddings
    if too_long > 0:
        raise LogDataError(f"sequences exceed the model context by {too_long} tokens; rebuild "
                           "the data with a smaller --context")
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    factor = SCHEDULES[config.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: factor(i, total, config.warmup_steps))
    best, history, step, started = math.inf, [], 0, time.perf_counter()

    def checkpoint(kind: str) -> None:
        nonlocal best
        loss = evaluate_loss(model, val or train, pad_id, config.batch_size * 2, device)
        history.append({"step": step, "val_loss": loss, "kind": kind})
        if loss < best:
            best = loss
            save_model(model, tokenizer, out_dir)
        logger.info("step %d: validation loss %.4f (best %.4f)", step, loss, best)

    bar = tqdm(total=total, desc="keyseq pretrain", unit="step", disable=not progress)
    while step < total:
        order = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = collate([train[i] for i in order[start:start + config.batch_size]], pad_id)
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if config.eval_every and step % config.eval_every == 0:
                checkpoint("steps")
            if step >= total:
                break
        if not config.eval_every or step % config.eval_every:
            checkpoint("epoch")
    bar.close()
    summary = {"config": asdict(config), "best_val_loss": best, "steps": step,
               "seconds": time.perf_counter() - started, "train_rows": len(train),
               "val_rows": len(val), "vocab_size": len(vocab), "history": history,
               "validation": "val" if val else "train (val.parquet empty)"}
    atomic_write_text(out_dir / "pretrain_summary.json", json.dumps(summary, indent=1))
    return summary


def init_model(data_dir: Path, out_dir: Path, arch: str, context: int | None = None,
               seed: int = 0) -> Path:
    """Save a randomly initialised model + key tokenizer for ``data_dir``'s vocabulary.

    This is the starting point of verl's SFT trainer (``verl_recipes/keyseq_sft``).
    """
    vocab, vocab_file = load_vocab(data_dir)
    build_keyseq_model(vocab, arch, out_dir, context=context or data_context(data_dir), seed=seed,
                       vocab_file=vocab_file)
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = new_parser("python -m verl_recipes.local.keyseq.pretrain", __doc__.splitlines()[0])
    add_input_flag(parser, "`logdata sequences` output folder", aliases=("--data",))
    add_flag(parser, "--arch", choices=sorted(ARCHITECTURES), default="loggpt",
             help="model architecture")
    add_out_flag(parser, "checkpoint folder")
    add_flag(parser, "--epochs", type=int, default=10, metavar="N",
             help="passes over the training set")
    add_flag(parser, "--lr", type=float, default=1e-4, help="AdamW learning rate")
    add_flag(parser, "--batch-size", type=int, default=16, metavar="N", help="sequences per step")
    add_flag(parser, "--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    add_flag(parser, "--max-steps", type=int, default=0, metavar="N",
             help="stop after N steps (default 0: no limit)")
    add_flag(parser, "--eval-every", type=int, default=0, metavar="N",
             help="also evaluate every N steps (default 0: once per epoch)")
    add_flag(parser, "--context", type=int, default=None, metavar="N",
             help="model positions (default: the data's context)")
    add_seed_flag(parser, "seed of initialisation and shuffling")
    add_flag(parser, "--device", default="auto", help="cpu, cuda or auto")
    add_flag(parser, "--schedule", choices=sorted(SCHEDULES), default="constant",
             help="learning-rate schedule (LogGPT: constant)")
    add_flag(parser, "--warmup-steps", type=int, default=0, metavar="N",
             help="linear warm-up steps (schedules other than constant)")
    add_flag(parser, "--max-grad-norm", type=float, default=1.0,
             help="gradient clipping norm (0: no clipping)")
    add_flag(parser, "--threads", type=int, default=None, metavar="N",
             help="torch CPU threads (default: torch's)")
    add_flag(parser, "--init-only", action="store_true",
             help="only save the randomly initialised model (for verl's SFT trainer)")
    add_progress_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line error and exit status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = PretrainConfig(
        arch=args.arch, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, max_steps=args.max_steps, eval_every=args.eval_every,
        context=args.context, seed=args.seed, device=args.device, schedule=args.schedule,
        warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm, threads=args.threads,
    )
    checks = [(config.epochs >= 1, "--epochs must be >= 1"), (config.lr > 0, "--lr must be > 0"),
              (config.batch_size >= 1, "--batch-size must be >= 1")]
    return run_cli(lambda: _pretrain_and_report(args, config, checks))


def _pretrain_and_report(args: argparse.Namespace, config: PretrainConfig,
                         checks: list[tuple[bool, str]]) -> int:
    """Check the settings, then initialise or pretrain, and print the summary line."""
    for ok, message in checks:
        if not ok:
            raise LogDataError(message)
    require_dir(args.input, "--input")
    if args.init_only:
        init_model(args.input, args.out, args.arch, args.context, args.seed)
        print(f"initialised {args.arch} in {args.out}")
        return 0
    summary = pretrain(args.input, args.out, config, progress=not args.no_progress)
    print(f"best validation loss {summary['best_val_loss']:.4f} after {summary['steps']} steps "
          f"({summary['seconds']:.1f} s); model in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
