"""Log-key sequence datasets for next-key models (LogGPT / LogNEO).

``python -m logdata sequences --structured structured.parquet --out DIR`` turns the data stage's
structured log into:

* ``train.parquet``, ``val.parquet``, ``test.parquet``: one row per sequence chunk, columns
  :data:`ROW_COLUMNS` (``keys`` are the raw event ids; ``key_ids`` the vocabulary ids, unseen keys
  → ``<unk>``);
* ``vocab.json``: the key vocabulary built from ``train`` only (:mod:`logdata.keyseq_vocab`);
* ``rl_train.parquet``, ``rl_test.parquet``: VeRL rows whose prompt is the first
  ``prefix_ratio`` of a chunk's keys and whose ground truth is the true continuation;
* ``meta.json``: resolved parameters and their hash, counts, anomaly ratio per split, source
  checksum.

Protocols (:data:`PROTOCOLS`):

* ``loggpt`` (LogGPT, arXiv 2309.14482): draw ``n_train`` (default 5,000, capped at what exists)
  random normal sequences with ``seed``; 90/10 train/validation; test = all other normal sequences
  plus every abnormal one.
* ``chronological``: the first ``train_ratio`` of sequences by start time form the training
  period (its normal sequences, the last ``val_ratio`` of them as validation; its abnormal ones are
  excluded); every later sequence is test. LogLLM (arXiv 2411.08561) shows this moves results more
  than the model does, so both are offered.

Long sequences: a sequence with more keys than fit in the model context (``context`` tokens minus
``<bos>`` and ``<eos>``) is split into consecutive chunks. Every chunk keeps the sequence's
``sequence_id`` and label and records ``chunk``, ``n_chunks`` and ``offset`` (index of its first
key in the sequence). Detection aggregates chunks per ``sequence_id``: misses add up, the first miss
position is the earliest over chunks (``offset`` + position), and the sequence is flagged when its
total misses exceed the threshold (by default: any chunk with a miss flags the sequence).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.errors import LogDataError
from logdata.io import atomic_write_parquet, atomic_write_text, read_parquet, sha256_file
from logdata.keyseq_vocab import UNK, KeyVocab
from logdata.keyseq_windows import WindowSpec, build_sequences
from logdata.schema import REQUIRED_COLUMNS, REWARD_STYLE
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

ABILITY = "log_next_key"
ROW_COLUMNS = ["sequence_id", "chunk", "n_chunks", "offset", "keys", "key_ids", "label",
               "n_events", "start"]
SPLITS = ("train", "val", "test")
#: Tokens of the context that are not keys: ``<bos>`` before and ``<eos>`` after a sequence.
CONTEXT_OVERHEAD = 2

#: Default windowing per data source (LogGPT: HDFS per block; BGL/Thunderbird 60 s / 30 s windows,
#: one-event windows dropped). Sources not listed use ``"default"``.
DEFAULT_WINDOWS: dict[str, WindowSpec] = {
    "hdfs": WindowSpec(kind="block", size=0, step=0, min_events=1),
    "default": WindowSpec(kind="time", size=60.0, step=30.0, min_events=2),
}
KNOWN_SOURCES = ("bgl", "spirit", "thunderbird", "hdfs", "synthetic")


@dataclass(frozen=True)
class SequenceConfig:
    """Resolved parameters of one sequence build (saved in ``meta.json``).

    Attributes:
        data_source: ``bgl``, ``spirit``, ``thunderbird``, ``hdfs`` or ``synthetic``.
        window: How lines are grouped into sequences.
        protocol: ``loggpt`` or ``chronological``.
        context: Model context in tokens; chunks hold ``context - 2`` keys.
        prefix_ratio: Share of a chunk's keys given as the RL prompt.
        seed: Seed of the LogGPT draw.
        n_train: Normal sequences drawn for train+val by the LogGPT protocol.
        val_ratio: Validation share of the training draw (or period).
        train_ratio: Training period share for the chronological protocol.
    """

    data_source: str
    window: WindowSpec = field(default_factory=lambda: DEFAULT_WINDOWS["default"])
    protocol: str = "loggpt"
    context: int = 1024
    prefix_ratio: float = 0.2
    seed: int = 0
    n_train: int = 5000
    val_ratio: float = 0.1
    train_ratio: float = 0.8

    def check(self) -> None:
        """Raise :class:`LogDataError` on an out-of-range parameter."""
        checks = [
            (self.protocol in PROTOCOLS, f"unknown protocol {self.protocol!r}"),
            (self.context > CONTEXT_OVERHEAD, f"context must exceed {CONTEXT_OVERHEAD} tokens"),
            (0 < self.prefix_ratio < 1, "prefix ratio must be in (0, 1)"),
            (self.n_train >= 1, "n_train must be >= 1"),
            (0 <= self.val_ratio < 1, "val ratio must be in [0, 1)"),
            (0 < self.train_ratio < 1, "train ratio must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise LogDataError(message)


def _val_count(n: int, ratio: float) -> int:
    """Validation rows out of ``n``: at least one when there are two or more and ratio > 0."""
    if n < 2 or ratio <= 0:
        return 0
    return min(n - 1, max(1, round(n * ratio)))


def split_loggpt(seqs: pd.DataFrame, n_train: int = 5000, val_ratio: float = 0.1,
                 seed: int = 0) -> dict[str, pd.DataFrame]:
    """LogGPT split: a seeded draw of normal sequences for train/val; the rest is test.

    Args:
        seqs: Sequence frame (``label`` column).
        n_train: Normal sequences to draw (capped at the number available).
        val_ratio: Validation share of the draw.
        seed: Seed of the draw.

    Returns:
        ``{"train", "val", "test"}`` frames in the original sequence order.

    Raises:
        LogDataError: When there is no normal sequence to train on.

    >>> s = pd.DataFrame({"label": ["normal"] * 8 + ["abnormal"] * 2})
    >>> {k: len(v) for k, v in split_loggpt(s, n_train=5, seed=1).items()}
    {'train': 4, 'val': 1, 'test': 5}
    """
    normal = np.flatnonzero((seqs["label"] == NORMAL).to_numpy())
    if normal.size == 0:
        raise LogDataError("no normal sequence to train on (check the labels and the windowing)")
    drawn = np.random.default_rng(seed).permutation(normal)[: min(n_train, normal.size)]
    n_val = _val_count(drawn.size, val_ratio)
    val, train = np.sort(drawn[:n_val]), np.sort(drawn[n_val:])
    test = np.setdiff1d(np.arange(len(seqs)), drawn)
    return {"train": seqs.iloc[train], "val": seqs.iloc[val], "test": seqs.iloc[test]}


def split_chronological(seqs: pd.DataFrame, train_ratio: float = 0.8,
                        val_ratio: float = 0.1) -> dict[str, pd.DataFrame]:
    """Chronological split: train on the normal sequences of the first ``train_ratio``.

    The last ``val_ratio`` of those normal sequences (by start) are validation; abnormal sequences
    of the training period are excluded; every later sequence is test.

    >>> s = pd.DataFrame({"label": ["normal", "abnormal"] + ["normal"] * 8, "start": range(10)})
    >>> {k: len(v) for k, v in split_chronological(s, 0.5, 0.25).items()}
    {'train': 3, 'val': 1, 'test': 5}
    """
    ordered = seqs.sort_values("start", kind="stable")
    cut = math.floor(len(ordered) * train_ratio)
    head, tail = ordered.iloc[:cut], ordered.iloc[cut:]
    normal = head[head["label"] == NORMAL]
    if normal.empty:
        raise LogDataError("no normal sequence in the training period; raise --train-ratio")
    n_val = _val_count(len(normal), val_ratio)
    return {"train": normal.iloc[: len(normal) - n_val], "val": normal.iloc[len(normal) - n_val:],
            "test": tail}


PROTOCOLS: dict[str, Callable[[pd.DataFrame, SequenceConfig], dict[str, pd.DataFrame]]] = {
    "loggpt": lambda s, c: split_loggpt(s, c.n_train, c.val_ratio, c.seed),
    "chronological": lambda s, c: split_chronological(s, c.train_ratio, c.val_ratio),
}


def chunk_sequences(seqs: pd.DataFrame, max_keys: int) -> pd.DataFrame:
    """Split sequences longer than ``max_keys`` into consecutive chunks (no key is dropped).

    Adds ``chunk``, ``n_chunks`` and ``offset``; other columns are copied to every chunk and
    ``n_events`` becomes the chunk's length.

    >>> s = pd.DataFrame({"sequence_id": ["a"], "keys": [list("ABCDE")], "label": ["normal"],
    ...                   "n_events": [5], "start": [0.0]})
    >>> chunk_sequences(s, 2)[["chunk", "n_chunks", "offset", "keys"]].values.tolist()
    [[0, 3, 0, ['A', 'B']], [1, 3, 2, ['C', 'D']], [2, 3, 4, ['E']]]
    """
    if max_keys < 1:
        raise LogDataError("the context leaves no room for keys")
    records: list[dict[str, Any]] = []
    for row in seqs.to_dict("records"):
        keys = list(row["keys"])
        n_chunks = max(1, math.ceil(len(keys) / max_keys))
        for chunk in range(n_chunks):
            piece = keys[chunk * max_keys:(chunk + 1) * max_keys]
            records.append({**row, "keys": piece, "n_events": len(piece), "chunk": chunk,
                            "n_chunks": n_chunks, "offset": chunk * max_keys})
    columns = [*seqs.columns, "chunk", "n_chunks", "offset"]
    out = pd.DataFrame.from_records(records, columns=columns)
    return out.astype({"chunk": "int64", "n_chunks": "int64", "offset": "int64",
                       "n_events": "int64"})


def prefix_length(n_keys: int, ratio: float) -> int:
    """Keys in the RL prompt: ``floor(ratio * n)`` kept within ``[1, n - 1]``.

    >>> prefix_length(10, 0.2), prefix_length(3, 0.2), prefix_length(2, 0.9)
    (2, 1, 1)
    """
    return min(n_keys - 1, max(1, math.floor(ratio * n_keys + 1e-9)))


def rl_rows(rows: pd.DataFrame, split: str, vocab: KeyVocab, data_source: str,
            prefix_ratio: float) -> pd.DataFrame:
    """VeRL rows for the RL stage: the prompt is a key prefix, the ground truth its continuation.

    Keys are written as vocabulary tokens (unseen → ``<unk>``), space-separated, as one user
    message. Chunks with fewer than two keys have no continuation and are skipped.
    """
    records = []
    for index, row in enumerate(rows[rows["n_events"] >= 2].to_dict("records")):
        tokens = vocab.to_tokens(row["keys"])
        cut = prefix_length(len(tokens), prefix_ratio)
        records.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": " ".join(tokens[:cut])}],
            "ability": ABILITY,
            "reward_model": {"style": REWARD_STYLE, "ground_truth": " ".join(tokens[cut:])},
            "extra_info": {"split": split, "index": index, "sequence_id": str(row["sequence_id"]),
                           "label": row["label"], "chunk": int(row["chunk"])},
        })
    return pd.DataFrame.from_records(records, columns=list(REQUIRED_COLUMNS))


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (temp file in the same folder, then rename)."""
    return atomic_write_parquet(frame, path)


def _split_stats(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts of one split for ``meta.json``."""
    per_seq = rows.drop_duplicates("sequence_id")
    n_seq = len(per_seq)
    n_abn = int((per_seq["label"] == ABNORMAL).sum())
    return {"rows": len(rows), "sequences": n_seq, "abnormal": n_abn,
            "anomaly_ratio": n_abn / n_seq if n_seq else 0.0,
            "keys": int(rows["n_events"].sum()) if len(rows) else 0}


def build_sequence_datasets(frame: pd.DataFrame, out_dir: Path, config: SequenceConfig,
                            source: Path | None = None) -> dict[str, Any]:
    """Build every sequence artefact from a structured frame and write it under ``out_dir``.

    Args:
        frame: The data stage's structured log.
        out_dir: Output folder (created).
        config: Resolved parameters.
        source: The structured parquet, for the checksum in ``meta.json``.

    Returns:
        The ``meta.json`` payload.

    Raises:
        LogDataError: On bad parameters or data that yields no usable sequence.
    """
    config.check()
    seqs = build_sequences(frame, config.window)
    if seqs.empty:
        raise LogDataError(f"no sequence with >= {config.window.min_events} events; "
                           "check --window/--window-size")
    splits = PROTOCOLS[config.protocol](seqs, config)
    vocab = KeyVocab.build(splits["train"]["keys"])
    max_keys = config.context - CONTEXT_OVERHEAD
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {}
    chunked: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        rows = chunk_sequences(splits[name], max_keys)
        rows["key_ids"] = [vocab.encode(keys) for keys in rows["keys"]]
        rows = rows[ROW_COLUMNS].reset_index(drop=True)
        chunked[name] = rows
        write_parquet(rows, out_dir / f"{name}.parquet")
        unknown = sum(ids.count(vocab.id_of(UNK)) for ids in rows["key_ids"])
        stats[name] = {**_split_stats(rows), "unknown_keys": unknown}
    vocab.save(out_dir / "vocab.json")
    for name, rl_name in (("train", "rl_train"), ("test", "rl_test")):
        rl = rl_rows(chunked[name], name, vocab, config.data_source, config.prefix_ratio)
        write_parquet(rl, out_dir / f"{rl_name}.parquet")
        stats[rl_name] = {"rows": len(rl)}
    params = asdict(config)
    meta = {
        "kind": "keyseq",
        "params": params,
        "params_hash": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16],
        "counts": stats,
        "sequences_total": len(seqs),
        "chunked_sequences": int((seqs["n_events"] > max_keys).sum()),
        "vocab_size": len(vocab),
        "n_keys_train": len(vocab.keys),
        "source": {"path": source.name, "sha256": sha256_file(source)} if source else None,
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str))
    logger.info("wrote %s: %s", out_dir, {k: v["rows"] for k, v in stats.items()})
    return meta


def infer_data_source(structured: Path, frame: pd.DataFrame) -> str:
    """Guess the data source: a known name as a word of the path, else ``hdfs`` when blocks exist.

    Raises:
        LogDataError: When nothing identifies the source (pass ``--data-source``).

    >>> infer_data_source(Path("datasets/bgl/structured.parquet"), pd.DataFrame())
    'bgl'
    """
    for part in reversed(structured.resolve().parts):
        words = set(re.split(r"[^a-z0-9]+", part.lower()))
        for name in KNOWN_SOURCES:
            if name in words:
                return name
    if "block_ids" in frame.columns:
        return "hdfs"
    raise LogDataError(f"cannot tell the data source of {structured}; pass --data-source")


#: Window defaults when ``--window`` names a kind other than the data source's default.
KIND_DEFAULTS: dict[str, WindowSpec] = {
    "time": WindowSpec(kind="time", size=60.0, step=30.0, min_events=2),
    "count": WindowSpec(kind="count", size=100, step=100, min_events=2),
    "block": WindowSpec(kind="block", size=0, step=0, min_events=1),
}


def _window_spec(args: argparse.Namespace, data_source: str) -> WindowSpec:
    """The dataset's default windowing, overridden by the flags the user gave."""
    base = DEFAULT_WINDOWS.get(data_source, DEFAULT_WINDOWS["default"])
    if args.window and args.window != base.kind:
        base = KIND_DEFAULTS[args.window]
    return WindowSpec(
        kind=base.kind,
        size=base.size if args.window_size is None else args.window_size,
        step=base.step if args.step is None else args.step,
        min_events=base.min_events if args.min_events is None else args.min_events,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sequences`` subcommand to the ``python -m logdata`` parser."""
    parser = subparsers.add_parser(
        "sequences", help="log-key sequences, vocabulary and RL prefixes for next-key models",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--structured", type=Path, required=True, help="structured.parquet")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="loggpt")
    parser.add_argument("--window", choices=sorted(KIND_DEFAULTS), default=None,
                        help="default: block for hdfs, time otherwise")
    parser.add_argument("--window-size", type=float, default=None,
                        help="seconds (time) or lines (count); default 60 / 100")
    parser.add_argument("--step", type=float, default=None, help="default 30 s / 100 lines")
    parser.add_argument("--min-events", type=int, default=None,
                        help="drop shorter sequences (default 2; 1 for blocks)")
    parser.add_argument("--context", type=int, default=1024, help="model context in tokens")
    parser.add_argument("--prefix-ratio", type=float, default=0.2, help="RL prompt share")
    parser.add_argument("--n-train", type=int, default=5000, help="LogGPT normal draw")
    parser.add_argument("--val-ratio", type=float, default=0.1)
    parser.add_argument("--train-ratio", type=float, default=0.8, help="chronological only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-source", choices=KNOWN_SOURCES, default=None,
                        help="default: guessed from the path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``sequences`` subcommand; returns the exit status."""
    if not args.structured.is_file():
        raise LogDataError(f"structured parquet not found: {args.structured}")
    frame = read_parquet(args.structured)
    data_source = args.data_source or infer_data_source(args.structured, frame)
    config = SequenceConfig(
        data_source=data_source, window=_window_spec(args, data_source), protocol=args.protocol,
        context=args.context, prefix_ratio=args.prefix_ratio, seed=args.seed,
        n_train=args.n_train, val_ratio=args.val_ratio, train_ratio=args.train_ratio,
    )
    meta = build_sequence_datasets(frame, args.out, config, source=args.structured)
    counts = ", ".join(f"{k} {v['rows']}" for k, v in meta["counts"].items())
    print(f"wrote {args.out}: {counts}; vocab {meta['vocab_size']} tokens")
    return 0
