#!/usr/bin/env python
r"""Top-K next-key anomaly detection (LogGPT / LogNEO) with a K sweep.

Usage::

    python validation/keyseq_detect.py --model outputs/loggpt_bgl --input datasets/bgl_keyseq/test.parquet \\
        --out outputs/detect_bgl [--k 80] [--min-misses 0] [--k-sweep 1,5,10,40,80]

For every sequence chunk of ``test.parquet`` (``python -m logdata sequences``), ``<bos>`` + keys
(+ ``<eos>`` when it is judged) go through the model in batches (right padding + attention mask,
one forward pass per batch). The rank of each true next token is the number of vocabulary entries
whose logit is strictly greater than the true token's logit (rank 0 = the top prediction); it is a
miss at ``K`` when ``rank >= K``, i.e. outside the top-K. A sequence is abnormal when its misses
exceed ``--min-misses`` (default 0: any miss flags it, LogGPT's rule). Chunks of one long sequence
are aggregated by ``sequence_id``: misses add up and the first miss position is the earliest one
(``offset`` + position; position ``n_events`` is the ``<eos>``).

Judged positions follow LogGPT (``model/initGPT.py`` ``_predict_topk``): the first key of a
sequence is never judged (``--skip-first 1``), and ``<eos>`` is judged for session sequences
(``block`` windows, HDFS: LogGPT wraps them in ``<bos>``/``<eos>``) but not for sliding windows
(BGL, Thunderbird: LogGPT feeds them without ``<eos>``); ``--judge-eos``/``--no-judge-eos``
override the window rule. K is capped as LogGPT caps it: ``int(0.95 * keys)``, counting the real
keys of the vocabulary, not its special tokens (and at least 1, where LogGPT's K would be 0).

The default K comes from :data:`DEFAULT_K` (LogGPT's values) by the data source in ``meta.json``
next to the data.

Before any model loads, the data is checked: ``test.parquet`` against the sha256 its
``meta.json`` lists (:func:`logdata.staging.verify_file`), and the ``vocab.json`` beside it
against the vocabulary the model was built with (the ``keyseq_vocab`` record of the model's
``config.json``, :func:`verl_recipes.local.keyseq.model.model_vocab`). Sequences built with
another vocabulary are refused in one line: their key ids would collide with the model's (an HDFS
``E5`` is not a BGL ``E5``) and the scores would mean nothing. A model without the record (saved
by an older version) is scored with a warning.

The K sweep reuses the ranks of the same forward pass, so it costs no extra model calls.

Writes into ``--out``: ``scores.parquet`` (``sequence_id``, ``label``, ``n_events``, ``misses``,
``first_miss``, ``max_rank``, ``pred``), ``metrics.json`` (``session.overall`` and
``session.per_source`` in the DESIGN.md format, plus ``keyseq`` with K, the sweep and throughput)
and ``k_sweep.png``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make the repository root importable
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.cliargs import add_flag, add_input_flag, add_out_flag, add_progress_flag, new_parser
from logdata.errors import LogDataError, run_cli
from logdata.io import (
    atomic_path,
    atomic_write_parquet,
    atomic_write_text,
    read_parquet,
    require_file,
    sha256_file,
)
from logdata.keyseq.sequences import VOCAB_FILE
from logdata.staging import verify_file
from reward.labels import ABNORMAL, NORMAL
from validation import metrics as M
from verl_recipes.local.keyseq.model import keys_to_ids, load_model, model_vocab, pad_batch

logger = logging.getLogger("validation.keyseq_detect")

#: LogGPT's K per data source (arXiv 2309.14482); other sources need ``--k``.
DEFAULT_K: dict[str, int] = {"hdfs": 7, "bgl": 80, "thunderbird": 690}
#: K may not exceed this share of the real keys (LogGPT: ``int((len(vocab) - 5) * 0.95)``).
MAX_K_SHARE = 0.95
#: Leading keys per sequence that are context only: LogGPT never judges the first key.
DEFAULT_SKIP_FIRST = 1
#: Window kinds whose ``<eos>`` LogGPT judges: sessions (HDFS blocks) end with ``<eos>``; its
#: sliding windows (BGL, Thunderbird) carry no ``<eos>``.
EOS_JUDGED_KINDS: frozenset[str] = frozenset({"block"})
DEFAULT_SWEEP: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 20, 40, 80, 160, 320, 690)
DATA_COLUMNS: tuple[str, ...] = ("sequence_id", "keys", "label")


def cap_k(k: int, n_keys: int) -> int:
    """Cap K as LogGPT does, at ``int(0.95 * n_keys)`` (and at least 1).

    Args:
        k: The requested K.
        n_keys: Real keys in the vocabulary (special tokens not counted).

    >>> cap_k(80, 50), cap_k(5, 50), cap_k(3, 1)
    (47, 5, 1)
    """
    return max(1, min(int(k), int(MAX_K_SHARE * n_keys)))


def n_real_keys(tokenizer: Any) -> int:
    """Entries of the tokenizer's vocabulary that are keys: its size minus its special tokens."""
    return len(tokenizer) - len(set(tokenizer.all_special_ids))


def window_kind(meta: dict[str, Any], data_source: str) -> str:
    """The windowing the data was built with (``meta.json``), else ``block`` for HDFS, else ``time``.

    >>> window_kind({"params": {"window": {"kind": "count"}}}, "bgl"), window_kind({}, "hdfs")
    ('count', 'block')
    """
    kind = meta.get("params", {}).get("window", {}).get("kind")
    if kind:
        return str(kind)
    return "block" if data_source == "hdfs" else "time"


def resolve_judge_eos(judge_eos: bool | None, kind: str) -> bool:
    """Whether ``<eos>`` is judged: the flag when given, else LogGPT's rule for the window kind.

    >>> resolve_judge_eos(None, "block"), resolve_judge_eos(None, "time"), resolve_judge_eos(True, "time")
    (True, False, True)
    """
    return kind in EOS_JUDGED_KINDS if judge_eos is None else bool(judge_eos)


def encode_chunks(tokenizer: Any, rows: pd.DataFrame, judge_eos: bool) -> list[list[int]]:
    """Per chunk, ``<bos>`` + key ids, plus ``<eos>`` after a sequence's last chunk when judged.

    Args:
        tokenizer: The model's key tokenizer.
        rows: Sequence chunks (``keys``; ``chunk``/``n_chunks`` when the data was chunked).
        judge_eos: Append the ``<eos>`` (the model must then rank it within the top-K).

    Returns:
        One id list per row.
    """
    if "chunk" in rows.columns and "n_chunks" in rows.columns:
        last = (rows["chunk"].to_numpy() == rows["n_chunks"].to_numpy() - 1).tolist()
    else:
        last = [True] * len(rows)
    eos = [tokenizer.eos_token_id]
    return [[tokenizer.bos_token_id, *keys_to_ids(tokenizer, list(keys)),
             *(eos if judge_eos and is_last else [])]
            for keys, is_last in zip(rows["keys"], last, strict=True)]


def true_key_ranks(logits: Any, targets: Any) -> Any:
    """Rank of every target among the logits: how many entries score strictly higher.

    Args:
        logits: ``(batch, length, vocab)`` predictions for each position.
        targets: ``(batch, length)`` true next ids.

    Returns:
        ``(batch, length)`` int ranks (0 = top-1).

    >>> import torch
    >>> true_key_ranks(torch.tensor([[[0.1, 2.0, 1.0]]]), torch.tensor([[2]])).tolist()
    [[1]]
    """
    true = logits.gather(-1, targets.unsqueeze(-1))
    return (logits > true).sum(-1)


def loop_ranks(model: Any, ids: Sequence[int]) -> list[int]:
    """Reference ranks, one forward pass per position (slow; for tests and the benchmark).

    For each position ``t >= 1`` the prefix ``ids[:t]`` is forwarded alone and the rank of
    ``ids[t]`` among the last position's logits is counted (the way a per-key detector works).
    """
    import torch

    ranks = []
    with torch.inference_mode():
        for t in range(1, len(ids)):
            logits = model(input_ids=torch.tensor([list(ids[:t])])).logits[0, -1]
            ranks.append(int((logits > logits[ids[t]]).sum()))
    return ranks


@dataclass
class ChunkScores:
    """Per-chunk detection output for a set of K values.

    Attributes:
        misses: ``(chunks, n_k)`` miss counts per K.
        first_miss: ``(chunks, n_k)`` first missing position (key index in the chunk), -1 if none.
        max_rank: ``(chunks,)`` worst rank of a true key.
        n_keys: ``(chunks,)`` positions judged (keys, plus ``<eos>`` when judged).
    """

    misses: np.ndarray
    first_miss: np.ndarray
    max_rank: np.ndarray
    n_keys: np.ndarray


def score_chunks(model: Any, encoded: list[list[int]], ks: Sequence[int], pad_id: int,
                 batch_size: int = 32, device: str = "cpu",
                 skip: Sequence[int] | None = None, progress: bool = True) -> ChunkScores:
    """Rank every true next key with one batched forward pass per batch of chunks.

    Args:
        model: Causal LM.
        encoded: Per chunk, ``<bos>`` followed by the key ids (and ``<eos>`` when judged).
        ks: K values to count misses for.
        pad_id: Padding id.
        batch_size: Chunks per forward pass (chunks are length-sorted to limit padding).
        device: Torch device.
        skip: Per chunk, how many leading keys are context only (not judged); default none.
        progress: Show a progress bar (only for four batches or more).

    Returns:
        The per-chunk scores, in the order of ``encoded``.
    """
    import torch
    from tqdm.auto import tqdm

    n = len(encoded)
    skip_all = torch.as_tensor(list(skip) if skip is not None else [0] * n, dtype=torch.long)
    k_tensor = torch.tensor(list(ks), dtype=torch.long, device=device)
    misses = np.zeros((n, len(ks)), dtype=np.int64)
    first = np.full((n, len(ks)), -1, dtype=np.int64)
    max_rank = np.zeros(n, dtype=np.int64)
    order = sorted(range(n), key=lambda i: -len(encoded[i]))
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    with torch.inference_mode():
        for idx in tqdm(batches, desc="keyseq detect", unit="batch",
                        disable=not progress or len(batches) < 4):
            ids, mask = (t.to(device) for t in pad_batch([encoded[i] for i in idx], pad_id))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            ranks = true_key_ranks(logits, ids[:, 1:])
            positions = torch.arange(ids.size(1) - 1, device=device)
            valid = mask[:, 1:].bool() & (positions >= skip_all[idx].to(device).unsqueeze(1))
            ranks = ranks.masked_fill(~valid, -1)
            missed = (ranks.unsqueeze(-1) >= k_tensor) & valid.unsqueeze(-1)  # (B, L, n_k)
            first_pos = torch.where(missed, positions.view(1, -1, 1), missed.size(1)).amin(1)
            first_pos = torch.where(first_pos == missed.size(1), -1, first_pos)
            misses[idx] = missed.sum(1).cpu().numpy()
            first[idx] = first_pos.cpu().numpy()
            max_rank[idx] = ranks.amax(1).clamp_min(0).cpu().numpy()
    n_keys = np.array([max(0, len(e) - 1 - int(k)) for e, k in zip(encoded, skip_all, strict=True)],
                      dtype=np.int64)
    return ChunkScores(misses=misses, first_miss=first, max_rank=max_rank, n_keys=n_keys)


def aggregate(rows: pd.DataFrame, scores: ChunkScores, min_misses: int) -> pd.DataFrame:
    """Per-sequence frame: misses per K summed over chunks, earliest miss, predictions.

    Returns:
        One row per ``sequence_id`` with ``misses`` (n_k array), ``first_miss`` (n_k array,
        positions in the whole sequence, -1 when none), ``max_rank``, ``n_events`` and ``label``.
    """
    offsets = rows["offset"].to_numpy() if "offset" in rows.columns else np.zeros(len(rows), int)
    shifted = np.where(scores.first_miss >= 0, scores.first_miss + offsets[:, None], np.iinfo(
        np.int64).max)
    frame = pd.DataFrame({"sequence_id": rows["sequence_id"].astype(str).to_numpy(),
                          "label": rows["label"].to_numpy(),
                          "n_events": rows["keys"].map(len).to_numpy(),
                          "max_rank": scores.max_rank})
    codes, uniques = pd.factorize(frame["sequence_id"])
    n_seq, n_k = len(uniques), scores.misses.shape[1]
    misses = np.zeros((n_seq, n_k), dtype=np.int64)
    np.add.at(misses, codes, scores.misses)
    first = np.full((n_seq, n_k), np.iinfo(np.int64).max)
    np.minimum.at(first, codes, shifted)
    first[first == np.iinfo(np.int64).max] = -1
    per_seq = frame.groupby(codes, sort=True).agg(
        sequence_id=("sequence_id", "first"), label=("label", "first"),
        n_events=("n_events", "sum"), max_rank=("max_rank", "max"))
    per_seq["misses_per_k"] = list(misses)
    per_seq["first_miss_per_k"] = list(first)
    per_seq["min_misses"] = min_misses
    return per_seq.reset_index(drop=True)


def predictions(misses: np.ndarray, min_misses: int) -> np.ndarray:
    """``abnormal`` where misses exceed ``min_misses``, else ``normal``."""
    return np.where(misses > min_misses, ABNORMAL, NORMAL)


def sweep_metrics(per_seq: pd.DataFrame, ks: Sequence[int], min_misses: int) -> list[dict]:
    """Precision/recall/F1 for every K from the same ranks."""
    misses = np.stack(per_seq["misses_per_k"].to_numpy()) if len(per_seq) else np.zeros(
        (0, len(ks)), dtype=np.int64)
    gold = per_seq["label"].to_numpy()
    out = []
    for j, k in enumerate(ks):
        flagged = misses[:, j] > min_misses
        positive = gold == ABNORMAL
        counts = {"tp": int((flagged & positive).sum()), "fp": int((flagged & ~positive).sum()),
                  "fn": int((~flagged & positive).sum()), "tn": int((~flagged & ~positive).sum()),
                  "unknown": 0}
        out.append({"k": int(k), **M.metrics_from_counts(counts)})
    return out


def plot_sweep(sweep: list[dict], k: int, path: Path, title: str) -> Path:
    """Plot precision, recall and F1 against K (log x axis) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [row["k"] for row in sweep]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("precision", "recall", "f1"):
        ax.plot(ks, [row[key] for row in sweep], marker="o", label=key)
    ax.axvline(k, color="grey", linestyle="--", label=f"K={k}")
    if len(ks) > 1 and min(ks) > 0:
        ax.set_xscale("log")
    ax.set(xlabel="K (top-K)", ylabel="score", ylim=(0, 1.05), title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def read_meta(data: Path) -> dict[str, Any]:
    """``meta.json`` next to the data file, or ``{}``."""
    path = data.parent / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_k(k: int | None, data_source: str | None, n_keys: int) -> tuple[int, int]:
    """Return ``(requested K, capped K)``: ``--k`` or the data source's default, capped.

    Args:
        k: ``--k``, or None for the data source's default.
        data_source: Data source name (key of :data:`DEFAULT_K`).
        n_keys: Real keys in the vocabulary (see :func:`cap_k`).

    Raises:
        LogDataError: When neither is available.
    """
    if k is None:
        if data_source not in DEFAULT_K:
            raise LogDataError(f"no default K for data source {data_source!r}; pass --k")
        k = DEFAULT_K[data_source]
    if k < 1:
        raise LogDataError("--k must be >= 1")
    return k, cap_k(k, n_keys)


def load_test(path: Path) -> pd.DataFrame:
    """Read the sequence parquet (checked against its ``meta.json``) and check its columns."""
    require_file(path, "data")
    verify_file(path)
    rows = read_parquet(path)
    missing = [c for c in DATA_COLUMNS if c not in rows.columns]
    if missing:
        raise LogDataError(f"{path} lacks columns {missing}; build it with `logdata sequences`")
    return rows


def check_vocabulary(model_dir: Path, data: Path) -> dict[str, str] | None:
    """Refuse sequences built with a vocabulary other than the model's.

    Compares the sha256 of the ``vocab.json`` beside ``data`` with the record in the model's
    ``config.json``. Without a record (older models) or without a ``vocab.json`` nothing can be
    compared: a warning says so and the run goes on.

    Returns:
        The model's vocabulary record when it was checked, else None.

    Raises:
        LogDataError: One line when the vocabularies differ, or when ``vocab.json`` changed after
            its folder was written.
    """
    recorded = model_vocab(model_dir) if (Path(model_dir) / "config.json").is_file() else None
    vocab = data.parent / VOCAB_FILE
    if recorded is None:
        logger.warning("%s records no vocabulary (a model saved before keyseq_vocab existed): "
                       "cannot check that %s was built with its vocabulary", model_dir, data)
        return None
    if not vocab.is_file():
        logger.warning("no %s beside %s: cannot check that it was built with the vocabulary of "
                       "%s", VOCAB_FILE, data, model_dir)
        return None
    verify_file(vocab)
    actual = sha256_file(vocab)
    if actual != recorded["sha256"]:
        raise LogDataError(
            f"{data} was built with another vocabulary than the model {model_dir}: {vocab} has "
            f"sha256 {actual[:12]}…, the model was built with {recorded['path']} "
            f"({recorded['sha256'][:12]}…); key ids of different vocabularies collide, so score "
            "sequences built with the model's vocabulary, or the model trained on this data")
    return recorded


def detect(model_dir: Path, data: Path, out_dir: Path, k: int | None = None, min_misses: int = 0,
           sweep: Sequence[int] = DEFAULT_SWEEP, batch_size: int = 32, device: str = "cpu",
           data_source: str | None = None, skip_first: int = DEFAULT_SKIP_FIRST,
           judge_eos: bool | None = None, progress: bool = True) -> dict[str, Any]:
    """Run top-K detection and write ``scores.parquet``, ``metrics.json`` and ``k_sweep.png``.

    Args:
        model_dir: A next-key model folder (``keyseq_pretrain`` output).
        data: ``test.parquet`` from ``logdata sequences``.
        out_dir: Output folder.
        k: Top-K; default from :data:`DEFAULT_K` by data source.
        min_misses: A sequence is abnormal when its misses exceed this.
        sweep: K values for the sweep (capped; ``k`` is always included).
        batch_size: Chunks per forward pass.
        device: Torch device.
        data_source: Overrides the one in ``meta.json``.
        skip_first: Leading keys of every sequence used as context only (1, LogGPT: the first
            key is never judged; 0 judges it against the ``<bos>`` prediction).
        judge_eos: Judge the ``<eos>`` after a sequence's last key; None: LogGPT's rule (only
            for ``block`` windows, see :data:`EOS_JUDGED_KINDS`).
        progress: Show a progress bar while scoring.

    Returns:
        The ``metrics.json`` payload.
    """
    rows = load_test(data)
    if rows.empty:
        raise LogDataError(f"{data} has no rows")
    vocab_checked = check_vocabulary(model_dir, data)
    meta = read_meta(data)
    source = data_source or meta.get("params", {}).get("data_source") or "unknown"
    model, tokenizer = load_model(model_dir, device)
    vocab_size, vocab_keys = len(tokenizer), n_real_keys(tokenizer)
    k_requested, k_used = resolve_k(k, source, vocab_keys)
    ks = sorted({cap_k(x, vocab_keys) for x in sweep} | {k_used})
    kind = window_kind(meta, source)
    eos_judged = resolve_judge_eos(judge_eos, kind)
    encoded = encode_chunks(tokenizer, rows, eos_judged)
    started = time.perf_counter()
    offsets = rows["offset"].to_numpy() if "offset" in rows.columns else np.zeros(len(rows), int)
    skip = np.clip(skip_first - offsets, 0, None)
    scores = score_chunks(model, encoded, ks, tokenizer.pad_token_id, batch_size, device, skip,
                          progress)
    seconds = time.perf_counter() - started
    per_seq = aggregate(rows, scores, min_misses)
    j = ks.index(k_used)
    misses = np.stack(per_seq["misses_per_k"].to_numpy())[:, j]
    first = np.stack(per_seq["first_miss_per_k"].to_numpy())[:, j]
    preds = predictions(misses, min_misses)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"sequence_id": per_seq["sequence_id"], "label": per_seq["label"],
                          "n_events": per_seq["n_events"], "misses": misses, "first_miss": first,
                          "max_rank": per_seq["max_rank"], "pred": preds})
    atomic_write_parquet(table, out_dir / "scores.parquet")
    overall = M.binary_metrics(table["label"].tolist(), table["pred"].tolist())
    sweep_rows = sweep_metrics(per_seq, ks, min_misses)
    n_keys = int(scores.n_keys.sum())
    result = {
        "session": {"overall": overall, "per_source": {source: overall}},
        "keyseq": {
            "k": k_used, "k_requested": k_requested, "min_misses": min_misses,
            "skip_first": skip_first, "judge_eos": eos_judged, "window_kind": kind,
            "vocab_size": vocab_size, "n_keys": vocab_keys, "data_source": source,
            "sweep": sweep_rows,
            # an undefined F1 (no abnormal gold or prediction) ranks below every defined one
            "best_k": max(sweep_rows, key=lambda r: (
                -1.0 if r["f1"] is None else r["f1"], -r["k"]))["k"],
            "chunks": len(rows), "sequences": len(table), "keys": n_keys,
            "seconds": seconds, "sequences_per_s": len(table) / seconds if seconds else None,
            "keys_per_s": n_keys / seconds if seconds else None,
            "rule": "abnormal when misses (true key, or <eos> when judged, outside top-K) > "
                    "min_misses; chunks of a sequence are summed",
            "model": str(model_dir), "data": str(data), "device": device,
            "vocab_sha256": vocab_checked["sha256"] if vocab_checked else None,
        },
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=1, default=str))
    plot_sweep(sweep_rows, k_used, out_dir / "k_sweep.png", f"top-K sweep ({source})")
    return result


def _parse_ks(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("K values must be >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = new_parser("python validation/keyseq_detect.py", __doc__.splitlines()[0])
    add_flag(parser, "--model", type=Path, required=True, metavar="PATH",
             help="next-key model folder")
    add_input_flag(parser, "test.parquet of logdata sequences", aliases=("--data",))
    add_out_flag(parser, "output folder")
    add_flag(parser, "--k", type=int, default=None,
             help=f"top-K (default by data source: {DEFAULT_K})")
    add_flag(parser, "--min-misses", type=int, default=0, metavar="N",
             help="abnormal when misses exceed this (default 0: any miss)")
    add_flag(parser, "--k-sweep", type=_parse_ks, default=list(DEFAULT_SWEEP), metavar="K,K,...",
             help="comma-separated K values for the sweep (default: "
                  + ",".join(map(str, DEFAULT_SWEEP)) + ")")
    add_flag(parser, "--skip-first", type=int, default=DEFAULT_SKIP_FIRST, metavar="N",
             help="leading keys per sequence used as context only (default 1: LogGPT "
                  "never judges the first key; 0 judges it against the <bos> "
                  "prediction, a deviation from LogGPT)")
    add_flag(parser, "--judge-eos", action=argparse.BooleanOptionalAction, default=None,
             help="judge the <eos> after a sequence's last key (default: LogGPT's "
                  "rule, only for block sessions such as HDFS, not for time/count "
                  "windows); --no-judge-eos / --judge-eos force it (deviation)")
    add_flag(parser, "--batch-size", type=int, default=32, metavar="N",
             help="sequence chunks per forward pass")
    add_flag(parser, "--device", default="cpu", help="torch device (cpu, cuda, cuda:1 …)")
    add_flag(parser, "--threads", type=int, default=None, metavar="N",
             help="torch CPU threads (default: torch's; 1 is often fastest for small models)")
    add_flag(parser, "--data-source", default=None,
             help="overrides meta.json (default: the data's meta.json)")
    add_progress_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the headline metrics; one-line error and status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _detect_and_report(args))


def _detect_and_report(args: argparse.Namespace) -> int:
    """Validate the arguments, run :func:`detect` and print the headline line."""
    if min(args.min_misses, args.skip_first) < 0 or args.batch_size < 1:
        raise LogDataError("--min-misses/--skip-first must be >= 0 and --batch-size >= 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = detect(args.model, args.input, args.out, args.k, args.min_misses, args.k_sweep,
                    args.batch_size, args.device, args.data_source, args.skip_first,
                    args.judge_eos, progress=not args.no_progress)
    overall, ks = result["session"]["overall"], result["keyseq"]
    precision, recall, f1 = (M.format_metric(overall[k], 3) for k in ("precision", "recall", "f1"))
    print(f"K={ks['k']}: precision {precision} recall {recall} "
          f"F1 {f1} on {ks['sequences']} sequences; "
          f"{ks['sequences_per_s']:.1f} sequences/s, {ks['keys_per_s']:.1f} keys/s "
          f"(best K in sweep: {ks['best_k']}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
