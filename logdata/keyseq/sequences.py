"""Log-key sequence datasets for next-key models (LogGPT / LogNEO).

``python -m logdata sequences --input structured.parquet --out DIR`` turns the data stage's
structured log into:

* ``train.parquet``, ``val.parquet``, ``test.parquet``: one row per sequence chunk, columns
  :data:`ROW_COLUMNS` (``keys`` are the raw event ids; ``key_ids`` the vocabulary ids, unseen keys
  → ``<unk>``);
* ``vocab.json``: the key vocabulary built from ``train`` only (:mod:`logdata.keyseq.vocab`);
* ``rl_train.parquet``, ``rl_test.parquet``: VeRL rows whose prompt is the first
  ``ceil(prefix_ratio · L)`` of a chunk's keys (at least 2 for HDFS blocks) and whose ground
  truth is the true continuation (also in ``extra_info.gold``, with ``prefix_len`` and ``n_keys``);
* ``meta.json``: resolved parameters and their hash, counts, anomaly ratio per split, source
  checksum, where the data source came from (``data_source_from``) and the sha256 of every file
  above (``files``, :func:`logdata.staging.write_meta`).

The files are staged and moved into ``--out`` together (:func:`logdata.staging.staged_output`): a
failed run leaves the previous output as it was, and an ``--out`` that already holds outputs is
refused unless ``--overwrite``. The input is checked against the ``meta.json`` beside it
(:func:`logdata.staging.verify_file`), and the data source is the dataset that ``meta.json`` names
(``--data-source`` overrides it); only without a ``meta.json`` is it guessed from the path, with a
warning. A test split holding a single class is reported as a warning.

Protocols (:data:`PROTOCOLS`):

* ``loggpt`` (LogGPT, arXiv 2309.14482): draw ``n_train`` (default 5,000, capped at what exists)
  random normal sequences with ``seed``; 90/10 train/validation; test = all other normal sequences
  plus every abnormal one. LogGPT's settings come with it (:data:`PROTOCOL_DEFAULTS`): a 512-token
  context, sequences that do not fit it left out (before the draw), LogGPT's time-window grid, and
  the vocabulary built from the whole draw (train + validation).
* ``chronological``: the first ``train_ratio`` of sequences by start time form the training
  period (its normal sequences, the last ``val_ratio`` of them as validation; its abnormal ones are
  excluded); every later sequence is test. LogLLM (arXiv 2411.08561) shows this moves results more
  than the model does, so both are offered. Context 1,024, long sequences chunked, half-open time
  windows, vocabulary from ``train`` only.

Long sequences (more keys than fit in the model context: ``context`` tokens minus ``<bos>`` and
``<eos>``) are either dropped (``drop``, LogGPT) or split into consecutive chunks (``chunk``).
Every chunk keeps the sequence's ``sequence_id`` and label and records ``chunk``, ``n_chunks`` and
``offset`` (index of its first key in the sequence). Detection aggregates chunks per
``sequence_id``: misses add up, the first miss position is the earliest over chunks (``offset`` +
position), and the sequence is flagged when its total misses exceed the threshold (by default: any
chunk with a miss flags the sequence).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.cliargs import (
    add_command,
    add_flag,
    add_input_flag,
    add_out_flag,
    add_overwrite_flag,
    add_progress_flag,
    add_seed_flag,
    add_window_flags,
)
from logdata.errors import LogDataError
from logdata.formats import LOGGPT_DRAIN
from logdata.io import atomic_write_parquet, read_parquet, require_file, sha256_file
from logdata.keyseq.grouping import TIME_GRIDS, WindowSpec, build_sequences
from logdata.keyseq.key_files import (
    KEY_FILE_ROLES,
    check_import_flags,
    given_key_files,
    read_key_files,
    split_key_files,
)
from logdata.keyseq.vocab import UNK, KeyVocab
from logdata.schema import REQUIRED_COLUMNS, REWARD_STYLE
from logdata.staging import META, read_meta, staged_output, verify_file, write_meta
from reward.labels import ABNORMAL, NORMAL
from verl_recipes.local.keyseq.model import LOGGPT_CONTEXT

logger = logging.getLogger(__name__)

ABILITY = "log_next_key"
ROW_COLUMNS = ["sequence_id", "chunk", "n_chunks", "offset", "keys", "key_ids", "label",
               "n_events", "start"]
SPLITS = ("train", "val", "test")
#: Splits meant to hold both classes (train and validation are normal-only by design).
MIXED_SPLITS = ("test",)
VOCAB_FILE = "vocab.json"
#: Every file ``sequences`` writes into ``--out`` (``meta.json`` last).
OUTPUTS: tuple[str, ...] = (*(f"{name}.parquet" for name in (*SPLITS, "rl_train", "rl_test")),
                            VOCAB_FILE, META)
#: Tokens of the context that are not keys: ``<bos>`` before and ``<eos>`` after a sequence.
CONTEXT_OVERHEAD = 2

#: Default windowing per data source (LogGPT: HDFS per block; BGL/Thunderbird 60 s / 30 s windows,
#: one-event windows dropped). Sources not listed use ``"default"``.
DEFAULT_WINDOWS: dict[str, WindowSpec] = {
    "hdfs": WindowSpec(kind="block", size=0, step=0, min_events=1),
    "default": WindowSpec(kind="time", size=60.0, step=30.0, min_events=2),
}
#: Names the path-word guess recognises (only used when no ``meta.json`` names the dataset).
KNOWN_SOURCES = ("bgl", "spirit", "thunderbird", "hdfs", "synthetic")
#: Where the data stage's ``meta.json`` names the dataset, in order of preference.
META_DATASET_KEYS: tuple[tuple[str, ...], ...] = (("dataset",), ("params", "dataset"),
                                                  ("format", "name"))
#: The protocol recorded for sequences imported from key files (not a ``--protocol`` choice).
KEY_FILES_PROTOCOL = "key_files"
#: What to do with sequences longer than the context: leave them out, or split them into chunks.
LONG_SEQUENCES = ("drop", "chunk")


@dataclass(frozen=True)
class ProtocolDefaults:
    """Settings that come with a protocol unless given explicitly.

    Attributes:
        context: Model context in tokens.
        long_sequences: One of :data:`LONG_SEQUENCES`.
        time_grid: Time-window grid (:data:`logdata.keyseq.grouping.TIME_GRIDS`).
        vocab_splits: Splits whose keys make the vocabulary.
    """

    context: int
    long_sequences: str
    time_grid: str
    vocab_splits: tuple[str, ...]


#: LogGPT (github.com/nokia/LogGPT): ``max_lens`` 512 is the GPT-2 context and windows with more
#: events are left out (``utils/utils.py`` ``sliding_window``); its grid is ``loggpt_time_grid``;
#: ``model/initGPT.py`` builds the vocabulary from all drawn normal sequences (train + validation).
PROTOCOL_DEFAULTS: dict[str, ProtocolDefaults] = {
    "loggpt": ProtocolDefaults(LOGGPT_CONTEXT, "drop", "loggpt", ("train", "val")),
    "chronological": ProtocolDefaults(1024, "chunk", "half_open", ("train",)),
    # DeepLog-format files (logdata.keyseq.key_files): the split is given by the files; long
    # sequences are chunked so that no test sequence is lost
    KEY_FILES_PROTOCOL: ProtocolDefaults(LOGGPT_CONTEXT, "chunk", "half_open", ("train", "val")),
}


@dataclass(frozen=True)
class SequenceConfig:
    """Resolved parameters of one sequence build (saved in ``meta.json``).

    Attributes:
        data_source: The dataset (format) name: ``bgl``, ``hdfs``, … or a user format's name;
            it picks the default windowing (:data:`DEFAULT_WINDOWS`).
        window: How lines are grouped into sequences (a ``None`` time grid: the protocol's).
        protocol: ``loggpt`` or ``chronological``.
        context: Model context in tokens; a sequence holds at most ``context - 2`` keys (None:
            the protocol's, 512 for ``loggpt``).
        long_sequences: ``drop`` or ``chunk`` sequences longer than that (None: the protocol's,
            ``drop`` for ``loggpt``).
        prefix_ratio: Share of a chunk's keys given as the RL prompt.
        seed: Seed of the LogGPT draw.
        n_train: Normal sequences drawn for train+val by the LogGPT protocol.
        val_ratio: Validation share of the training draw (or period).
        train_ratio: Training period share for the chronological protocol.
    """

    data_source: str
    window: WindowSpec = field(default_factory=lambda: DEFAULT_WINDOWS["default"])
    protocol: str = "loggpt"
    context: int | None = None
    long_sequences: str | None = None
    prefix_ratio: float = 0.2
    seed: int = 0
    n_train: int = 5000
    val_ratio: float = 0.1
    train_ratio: float = 0.8

    def resolved(self) -> SequenceConfig:
        """This config with the protocol's defaults in place of the unset (None) fields.

        Raises:
            LogDataError: On an unknown protocol.
        """
        if self.protocol not in PROTOCOL_DEFAULTS:
            raise LogDataError(f"unknown protocol {self.protocol!r}")
        defaults = PROTOCOL_DEFAULTS[self.protocol]
        window = self.window
        if window.kind == "time" and window.grid is None:
            window = replace(window, grid=defaults.time_grid)
        return replace(
            self, window=window,
            context=defaults.context if self.context is None else self.context,
            long_sequences=self.long_sequences or defaults.long_sequences)

    def check(self) -> None:
        """Raise :class:`LogDataError` on an out-of-range parameter (of the resolved config)."""
        config = self.resolved()
        checks = [
            (int(config.context) > CONTEXT_OVERHEAD,
             f"context must exceed {CONTEXT_OVERHEAD} tokens"),
            (config.long_sequences in LONG_SEQUENCES,
             f"long sequences must be one of {LONG_SEQUENCES}"),
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


def drop_long_sequences(seqs: pd.DataFrame, max_keys: int) -> pd.DataFrame:
    """Leave out the sequences with more than ``max_keys`` keys (LogGPT's rule).

    >>> s = pd.DataFrame({"n_events": [2, 5, 3]})
    >>> drop_long_sequences(s, 3)["n_events"].tolist()
    [2, 3]
    """
    return seqs[seqs["n_events"] <= max_keys].reset_index(drop=True)


def parser_settings(structured: Path | None) -> dict[str, Any] | None:
    """The Drain settings in ``templates.json`` next to ``structured``, or None when unknown."""
    if structured is None:
        return None
    try:
        payload = json.loads((structured.parent / "templates.json").read_text(encoding="utf-8"))
        return {"depth": int(payload["settings"]["depth"]),
                "similarity": float(payload["settings"]["similarity"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def warn_parser_mismatch(protocol: str, data_source: str, settings: dict[str, Any] | None) -> None:
    """Warn when the ``loggpt`` protocol runs on a log parsed with other Drain settings."""
    expected = LOGGPT_DRAIN.get(data_source)
    if protocol != "loggpt" or settings is None or expected is None:
        return
    if (settings["depth"], settings["similarity"]) != expected:
        logger.warning("%s was parsed with Drain depth %d / similarity %s; LogGPT uses %d / %s "
                       "(python -m logdata parse --drain-preset loggpt)", data_source,
                       settings["depth"], settings["similarity"], *expected)


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


def prefix_length(n_keys: int, ratio: float, minimum: int = 1) -> int:
    """Keys in the RL prompt: ``ceil(ratio * n)``, at least ``minimum``, at most ``n - 1``.

    LogGPT and LogNEO give the first ``ρ = 0.2`` of a sequence as the prompt; HDFS blocks start
    with two fixed keys, so their prompts hold at least two (:data:`MIN_PREFIX`).

    >>> prefix_length(10, 0.2), prefix_length(11, 0.2), prefix_length(3, 0.2), prefix_length(3, 0.2, 2)
    (2, 3, 1, 2)
    >>> prefix_length(2, 0.9), prefix_length(2, 0.2, minimum=2)
    (1, 1)
    """
    return max(1, min(n_keys - 1, max(minimum, math.ceil(ratio * n_keys - 1e-9))))


#: Least prompt length per data source (2 for HDFS blocks, 1 otherwise).
MIN_PREFIX: dict[str, int] = {"hdfs": 2}


def rl_rows(rows: pd.DataFrame, split: str, vocab: KeyVocab, data_source: str,
            prefix_ratio: float) -> pd.DataFrame:
    """VeRL rows for the RL stage: the prompt is a key prefix, the ground truth its continuation.

    Keys are written as vocabulary tokens (unseen → ``<unk>``), space-separated, as one user
    message; ``extra_info`` carries the gold continuation as a list (``gold``), ``prefix_len`` and
    ``n_keys``. Chunks with fewer than two keys have no continuation and are skipped.
    """
    minimum = MIN_PREFIX.get(data_source, 1)
    records = []
    for index, row in enumerate(rows[rows["n_events"] >= 2].to_dict("records")):
        tokens = vocab.to_tokens(row["keys"])
        cut = prefix_length(len(tokens), prefix_ratio, minimum)
        records.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": " ".join(tokens[:cut])}],
            "ability": ABILITY,
            "reward_model": {"style": REWARD_STYLE, "ground_truth": " ".join(tokens[cut:])},
            "extra_info": {"split": split, "index": index, "sequence_id": str(row["sequence_id"]),
                           "label": row["label"], "chunk": int(row["chunk"]),
                           "prefix_len": cut, "n_keys": len(tokens), "gold": tokens[cut:]},
        })
    return pd.DataFrame.from_records(records, columns=list(REQUIRED_COLUMNS))


def _split_stats(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts of one split for ``meta.json``."""
    per_seq = rows.drop_duplicates("sequence_id")
    n_seq = len(per_seq)
    n_abn = int((per_seq["label"] == ABNORMAL).sum())
    return {"rows": len(rows), "sequences": n_seq, "abnormal": n_abn,
            "anomaly_ratio": n_abn / n_seq if n_seq else 0.0,
            "keys": int(rows["n_events"].sum()) if len(rows) else 0}


def build_sequence_datasets(frame: pd.DataFrame, out_dir: Path, config: SequenceConfig,
                            source: Path | None = None, overwrite: bool = False,
                            extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build every sequence artefact from a structured frame and write it under ``out_dir``.

    The files are written through :func:`logdata.staging.staged_output`: into a staging folder
    first, moved into ``out_dir`` only when all of them were written (``meta.json``, listing the
    sha256 of every output, last). A failure on the way leaves ``out_dir`` as it was.

    Args:
        frame: The data stage's structured log.
        out_dir: Output folder (created).
        config: Resolved parameters.
        source: The structured parquet, for the checksum in ``meta.json``.
        overwrite: Replace the outputs ``out_dir`` already holds instead of refusing.
        extra_meta: More keys for ``meta.json`` (e.g. where the data source came from).

    Returns:
        The ``meta.json`` payload.

    Raises:
        LogDataError: On bad parameters, data that yields no usable sequence, or an ``out_dir``
            holding outputs without ``overwrite``.
    """
    config.check()
    config = config.resolved()
    keep = [source.name] if source is not None and _same_folder(source.parent, out_dir) else []
    with staged_output(out_dir, produces=OUTPUTS, overwrite=overwrite, keep=keep) as stage:
        meta = _write_sequence_datasets(frame, stage, config, source)
        meta = write_meta(stage, {**meta, **(extra_meta or {})})
    logger.info("wrote %s: %s", out_dir, {k: v["rows"] for k, v in meta["counts"].items()})
    return meta


def build_key_file_datasets(files: dict[str, Path], out_dir: Path, config: SequenceConfig,
                            overwrite: bool = False) -> dict[str, Any]:
    """Import DeepLog-format key files (:mod:`logdata.keyseq.key_files`) as a sequence dataset.

    Args:
        files: The three files, by :data:`logdata.keyseq.key_files.KEY_FILE_ROLES` key.
        out_dir: Output folder; the same files as :func:`build_sequence_datasets` writes.
        config: Parameters; ``protocol`` must be :data:`KEY_FILES_PROTOCOL`.
        overwrite: Replace the outputs ``out_dir`` already holds instead of refusing.

    Returns:
        The ``meta.json`` payload (``key_files``: what each file held, malformed lines included).

    Raises:
        LogDataError: On bad parameters or files (see :func:`logdata.keyseq.key_files.read_key_file`).
    """
    config.check()
    config = config.resolved()
    seqs, reports = read_key_files(files)
    n_read = len(seqs)
    seqs = apply_long_sequence_rule(seqs.reset_index(drop=True), config)
    splits = split_key_files(seqs, config.val_ratio, config.seed, _val_count)
    with staged_output(out_dir, produces=OUTPUTS, overwrite=overwrite) as stage:
        meta = write_splits({k: v.drop(columns="role") for k, v in splits.items()}, stage, config)
        meta.update({"sequences_total": len(seqs), "dropped_long_sequences": n_read - len(seqs),
                     "source": None, "parser": None, "data_source_from": "--data-source",
                     "key_files": {dest: r.as_dict() for dest, r in reports.items()}})
        meta = write_meta(stage, meta)
    logger.info("wrote %s: %s", out_dir, {k: v["rows"] for k, v in meta["counts"].items()})
    return meta


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (``b`` may not exist yet)."""
    return a.resolve() == Path(b).resolve()


def _write_sequence_datasets(frame: pd.DataFrame, out_dir: Path, config: SequenceConfig,
                             source: Path | None) -> dict[str, Any]:
    """Write the splits, vocabulary and RL rows of a resolved config into ``out_dir``.

    Returns:
        The ``meta.json`` payload, without its ``files`` table.
    """
    seqs = build_sequences(frame, config.window)
    if seqs.empty:
        raise LogDataError(f"no sequence with >= {config.window.min_events} events; "
                           "check --window/--window-size")
    n_built = len(seqs)
    seqs = apply_long_sequence_rule(seqs, config)
    meta = write_splits(PROTOCOLS[config.protocol](seqs, config), out_dir, config)
    meta.update({
        "sequences_total": len(seqs),
        "dropped_long_sequences": n_built - len(seqs),
        "source": {"path": source.name, "sha256": sha256_file(source)} if source else None,
        "parser": parser_settings(source),
    })
    warn_parser_mismatch(config.protocol, config.data_source, meta["parser"])
    return meta


def apply_long_sequence_rule(seqs: pd.DataFrame, config: SequenceConfig) -> pd.DataFrame:
    """The sequences, without those longer than the context under ``drop`` (logged).

    Raises:
        LogDataError: When ``drop`` leaves no sequence.
    """
    if config.long_sequences != "drop":
        return seqs
    max_keys = int(config.context) - CONTEXT_OVERHEAD
    kept = drop_long_sequences(seqs, max_keys)
    if len(seqs) > len(kept):
        logger.info("left out %d sequences longer than %d keys", len(seqs) - len(kept), max_keys)
    if kept.empty:
        raise LogDataError(f"every sequence is longer than {max_keys} keys; raise --context "
                           "or pass --long-sequences chunk")
    return kept


def write_splits(splits: dict[str, pd.DataFrame], out_dir: Path,
                 config: SequenceConfig) -> dict[str, Any]:
    """Write split sequences as chunked parquet, the vocabulary and the RL rows into ``out_dir``.

    The vocabulary comes from the protocol's :attr:`ProtocolDefaults.vocab_splits`.

    Returns:
        The ``meta.json`` keys every build shares (parameters, counts, vocabulary).
    """
    warn_single_class(splits)
    max_keys = int(config.context) - CONTEXT_OVERHEAD
    vocab_splits = PROTOCOL_DEFAULTS[config.protocol].vocab_splits
    vocab = KeyVocab.build([keys for name in vocab_splits for keys in splits[name]["keys"]])
    stats: dict[str, Any] = {}
    chunked: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        rows = chunk_sequences(splits[name], max_keys)
        rows["key_ids"] = [vocab.encode(keys) for keys in rows["keys"]]
        rows = rows[ROW_COLUMNS].reset_index(drop=True)
        chunked[name] = rows
        atomic_write_parquet(rows, out_dir / f"{name}.parquet")
        unknown = sum(ids.count(vocab.id_of(UNK)) for ids in rows["key_ids"])
        stats[name] = {**_split_stats(rows), "unknown_keys": unknown}
    vocab.save(out_dir / VOCAB_FILE)
    for name, rl_name in (("train", "rl_train"), ("test", "rl_test")):
        rl = rl_rows(chunked[name], name, vocab, config.data_source, config.prefix_ratio)
        atomic_write_parquet(rl, out_dir / f"{rl_name}.parquet")
        stats[rl_name] = {"rows": len(rl)}
    params = asdict(config)
    return {
        "kind": "keyseq",
        "params": params,
        "params_hash": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16],
        "counts": stats,
        "chunked_sequences": int(sum((split["n_events"] > max_keys).sum()
                                     for split in splits.values())),
        "vocab_splits": list(vocab_splits),
        "vocab_size": len(vocab),
        "n_keys_train": len(vocab.keys),
    }


def warn_single_class(splits: dict[str, pd.DataFrame]) -> None:
    """Warn when a split meant to hold both classes (:data:`MIXED_SPLITS`) holds fewer.

    Train and validation hold normal sequences only by design, so only the test split is checked:
    with one class its precision, recall or F1 are undefined or trivial.
    """
    for name in MIXED_SPLITS:
        labels = splits[name]["label"]
        counts = {label: int((labels == label).sum()) for label in (NORMAL, ABNORMAL)}
        n_classes = sum(1 for n in counts.values() if n)
        if n_classes < 2:
            logger.warning("the %s split holds %d class%s (%d normal, %d abnormal sequences): "
                           "its precision/recall/F1 are undefined or trivial; check the labels, "
                           "the windowing and the protocol", name, n_classes,
                           "" if n_classes == 1 else "es", counts[NORMAL], counts[ABNORMAL])


def infer_data_source(structured: Path, frame: pd.DataFrame) -> str:
    """Guess the data source: a known name as a word of the path, else ``hdfs`` when blocks exist.

    Only a fallback for a ``structured.parquet`` without a ``meta.json`` beside it (see
    :func:`resolve_data_source`).

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


def meta_dataset(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The dataset a data-stage ``meta.json`` names, with the key it came from, or None.

    >>> meta_dataset({"params": {"dataset": "bgl"}, "format": {"name": "my_format"}})
    ('bgl', 'params.dataset')
    >>> meta_dataset({"kind": "other"}) is None
    True
    """
    for keys in META_DATASET_KEYS:
        value: Any = meta
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip(), ".".join(keys)
    return None


def resolve_data_source(flag: str | None, structured: Path,
                        frame: pd.DataFrame) -> tuple[str, str]:
    """The data source of ``structured`` and where it came from.

    In order: ``--data-source``; the dataset named by the ``meta.json`` that ``prepare``/``parse``
    wrote beside the parquet (:data:`META_DATASET_KEYS`); only when there is no such meta, a
    guess from the words of the path (:func:`infer_data_source`, logged as a warning).

    Returns:
        ``(data source, origin)``; origin is ``--data-source``, ``meta.json:<key>`` or ``guessed``.

    Raises:
        LogDataError: When a ``meta.json`` exists but names no dataset, or nothing identifies it.
    """
    meta = read_meta(structured.parent)
    found = meta_dataset(meta) if meta else None
    if flag:
        if found and found[0] != flag:
            logger.warning("--data-source %s overrides %r from %s", flag, found[0],
                           structured.parent / META)
        return flag, "--data-source"
    if found:
        return found[0], f"{META}:{found[1]}"
    if meta:
        raise LogDataError(f"{structured.parent / META} names no dataset (no "
                           f"{', '.join('.'.join(k) for k in META_DATASET_KEYS)}); pass "
                           "--data-source")
    guess = infer_data_source(structured, frame)
    logger.warning("no %s beside %s: guessed the data source %r from the path; pass "
                   "--data-source to be sure (prepare and parse write meta.json)", META,
                   structured, guess)
    return guess, "guessed"


def data_source_name(text: str) -> str:
    """``argparse`` type of ``--data-source``: any non-blank name without white space.

    >>> data_source_name("my_format")
    'my_format'
    """
    name = text.strip()
    if not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"not a data source name: {text!r}")
    return name


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
        step=base.step if args.window_step is None else args.window_step,
        min_events=base.min_events if args.min_events is None else args.min_events,
        grid=args.time_grid,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sequences`` subcommand to the ``python -m logdata`` parser."""
    parser = add_command(
        subparsers, "sequences", "log-key sequences, vocabulary and RL prefixes for next-key models",
        description=__doc__.split("\n\n")[0])
    add_input_flag(parser, "structured.parquet (or the three --keys-* files instead)",
                   aliases=("--structured",), required=False)
    for dest, role in KEY_FILE_ROLES.items():
        add_flag(parser, role.flag, dest=dest, type=Path, default=None, metavar="FILE",
                 help=f"DeepLog-format {role.split} sequences, all {role.label} (one per line, "
                      "space-separated integer keys, optionally 'id,' first), in place of --input")
    add_out_flag(parser, "output folder")
    add_flag(parser, "--protocol", choices=sorted(PROTOCOLS), default="loggpt",
             help="split protocol: loggpt (LogGPT's normal draw) or chronological")
    add_window_flags(parser, kind_help="sequence windows (default: block for hdfs, time otherwise)",
                     size_help="seconds (time) or lines (count); default 60 / 100",
                     step_help="seconds or lines between window starts; default 30 / 100")
    add_flag(parser, "--min-events", type=int, default=None, metavar="N",
             help="drop shorter sequences (default 2; 1 for blocks)")
    add_flag(parser, "--context", type=int, default=None, metavar="N",
             help="model context in tokens (default: 512, LogGPT's max_lens, for "
                  "--protocol loggpt; 1024 for chronological)")
    add_flag(parser, "--long-sequences", choices=LONG_SEQUENCES, default=None,
             help="sequences longer than the context - 2 keys: drop them (default for "
                  "loggpt, as LogGPT does) or split them into chunks (default for "
                  "chronological; a deviation from LogGPT under --protocol loggpt)")
    add_flag(parser, "--time-grid", choices=sorted(TIME_GRIDS), default=None,
             help="time windows: loggpt (LogGPT's: whole seconds, [t, t + size] closed; "
                  "default for --protocol loggpt) or half_open ([t, t + size); default "
                  "for chronological)")
    add_flag(parser, "--prefix-ratio", type=float, default=0.2, metavar="R",
             help="share of a sequence's keys given as the RL prompt")
    add_flag(parser, "--n-train", type=int, default=5000, metavar="N",
             help="normal sequences drawn for train+val (loggpt protocol)")
    add_flag(parser, "--val-ratio", type=float, default=0.1, metavar="R",
             help="validation share of the training draw (or period)")
    add_flag(parser, "--train-ratio", type=float, default=0.8, metavar="R",
             help="training period share (chronological protocol only)")
    add_seed_flag(parser, "seed of the loggpt draw")
    add_flag(parser, "--data-source", type=data_source_name, default=None, metavar="NAME",
             help="data source name, any format (default: the dataset named by the meta.json "
                  "beside --input; without one, guessed from the path); hdfs gets block "
                  "windows, every other name time windows")
    add_overwrite_flag(parser, "replace the outputs --out already holds")
    add_progress_flag(parser, "hide progress bars (sequences shows none; accepted by every step)")
    parser.set_defaults(func=run)


#: ``sequences`` flags that only apply to raw-log sequences (``--input``), by destination.
RAW_LOG_ONLY_FLAGS = ("window", "window_size", "window_step", "min_events", "time_grid")


def run_key_file_import(args: argparse.Namespace) -> int:
    """``sequences --keys-train … --keys-test-normal … --keys-test-abnormal …``."""
    files = check_import_flags(args, RAW_LOG_ONLY_FLAGS)
    config = SequenceConfig(
        data_source=args.data_source, window=DEFAULT_WINDOWS["hdfs"], protocol=KEY_FILES_PROTOCOL,
        context=args.context, long_sequences=args.long_sequences,
        prefix_ratio=args.prefix_ratio, seed=args.seed, val_ratio=args.val_ratio)
    meta = build_key_file_datasets(files, args.out, config, overwrite=args.overwrite)
    skipped = sum(r["malformed"] for r in meta["key_files"].values())
    counts = ", ".join(f"{k} {v['rows']}" for k, v in meta["counts"].items())
    print(f"wrote {args.out}: {counts}; vocab {meta['vocab_size']} tokens; "
          f"{skipped} malformed line(s) skipped")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the ``sequences`` subcommand; returns the exit status."""
    if given_key_files(args):
        return run_key_file_import(args)
    if args.input is None:
        raise LogDataError("pass --input structured.parquet, or the three --keys-* files")
    require_file(args.input, "structured parquet")
    verify_file(args.input)
    frame = read_parquet(args.input)
    data_source, origin = resolve_data_source(args.data_source, args.input, frame)
    config = SequenceConfig(
        data_source=data_source, window=_window_spec(args, data_source), protocol=args.protocol,
        context=args.context, long_sequences=args.long_sequences,
        prefix_ratio=args.prefix_ratio, seed=args.seed,
        n_train=args.n_train, val_ratio=args.val_ratio, train_ratio=args.train_ratio,
    )
    meta = build_sequence_datasets(frame, args.out, config, source=args.input,
                                   overwrite=args.overwrite,
                                   extra_meta={"data_source_from": origin})
    counts = ", ".join(f"{k} {v['rows']}" for k, v in meta["counts"].items())
    print(f"wrote {args.out}: {counts}; vocab {meta['vocab_size']} tokens")
    return 0
