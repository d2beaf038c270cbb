"""Key sequences from DeepLog-format files, for users who hold sequences but no raw logs.

``python -m logdata sequences --keys-train FILE --keys-test-normal FILE --keys-test-abnormal FILE
--data-source NAME --out DIR`` reads the sequence files that DeepLog, logdeep and similar tools
exchange (DeepLog's ``hdfs_train``, ``hdfs_test_normal``, ``hdfs_test_abnormal``) and writes the
same outputs as ``sequences --input`` (vocabulary, parquet splits, RL rows, ``meta.json``).

File format, one sequence per line:

* space-separated non-negative integer keys (``5 5 22 11 9``);
* optionally an id and a comma first (``blk_-1608999687919862906,5 5 22 11 9``); without one a
  sequence is named after its file and line (``train:17``);
* blank lines are ignored; a file may be gzip, bzip2, xz or zstd compressed.

A malformed line (a key that is not a non-negative integer, an empty id, an id with no key) is
counted and skipped with one warning per file naming the first bad lines; the counts are kept in
``meta.json`` (``key_files``). A file with no valid sequence, or an id used twice in one file, is
refused with a one-line error that names the file and the lines.

Splits: the training file's sequences are split into train and validation with ``--val-ratio`` by a
seeded shuffle (``--seed``); every test-normal and test-abnormal sequence is test.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from logdata.errors import LogDataError
from logdata.io import require_file, sha256_file
from logdata.readers import open_compressed
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyFileRole:
    """What one of the three files holds.

    Attributes:
        flag: Its command-line flag.
        split: ``train`` (split into train and validation) or ``test``.
        label: The label of every sequence in it.
        tag: Prefix of the sequence ids named after a line (``tag:line``).
    """

    flag: str
    split: str
    label: str
    tag: str


#: The files of an import, by ``argparse`` destination.
KEY_FILE_ROLES: dict[str, KeyFileRole] = {
    "keys_train": KeyFileRole("--keys-train", "train", NORMAL, "train"),
    "keys_test_normal": KeyFileRole("--keys-test-normal", "test", NORMAL, "test_normal"),
    "keys_test_abnormal": KeyFileRole("--keys-test-abnormal", "test", ABNORMAL, "test_abnormal"),
}
#: Bad line numbers a warning names before "and N more".
SHOWN_BAD_LINES = 5
KEY_RE = re.compile(r"[0-9]+")


def open_key_file(path: Path) -> IO[str]:
    """Open a key file as UTF-8 text, plain or compressed (told by its leading bytes)."""
    return open_compressed(path, "rt", encoding="utf-8")


@dataclass
class KeyFileReport:
    """What reading one file found (kept in ``meta.json``)."""

    path: str
    sha256: str
    sequences: int = 0
    blank: int = 0
    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (the first bad lines only)."""
        return {"path": self.path, "sha256": self.sha256, "sequences": self.sequences,
                "blank": self.blank, "malformed": self.malformed,
                "malformed_lines": self.malformed_lines[:SHOWN_BAD_LINES]}


def parse_key_line(line: str) -> tuple[str | None, list[str]]:
    """One sequence line: its id (None when absent) and its keys as canonical integer strings.

    Raises:
        ValueError: When the line is malformed (says why).

    >>> parse_key_line("5 5 22 011")
    (None, ['5', '5', '22', '11'])
    >>> parse_key_line("blk_1, 3 4")
    ('blk_1', ['3', '4'])
    >>> parse_key_line("3 x 4")
    Traceback (most recent call last):
    ...
    ValueError: key 'x' is not a non-negative integer
    """
    seq_id: str | None = None
    text = line.strip()
    if "," in text:
        seq_id, _, text = text.partition(",")
        seq_id = seq_id.strip()
        if not seq_id:
            raise ValueError("empty id before the comma")
    tokens = text.split()
    if not tokens:
        raise ValueError("no key after the id")
    for token in tokens:
        if not KEY_RE.fullmatch(token):
            raise ValueError(f"key {token!r} is not a non-negative integer")
    return seq_id, [str(int(token)) for token in tokens]


def read_key_file(path: Path, role: KeyFileRole) -> tuple[pd.DataFrame, KeyFileReport]:
    """Read one file into sequence rows (``sequence_id, keys, label, n_events, start``).

    ``start`` is the line number, so a sequence's order in its file is kept.

    Raises:
        LogDataError: On a missing file, an id used twice, or a file with no valid sequence.
    """
    require_file(path, f"{role.flag} file")
    report = KeyFileReport(path=path.name, sha256=sha256_file(path))
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    first_reason = ""
    with open_key_file(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                report.blank += 1
                continue
            try:
                seq_id, keys = parse_key_line(line)
            except ValueError as err:
                report.malformed += 1
                report.malformed_lines.append(number)
                first_reason = first_reason or f"line {number}: {err}"
                continue
            name = seq_id if seq_id is not None else f"{role.tag}:{number}"
            if name in seen:
                raise LogDataError(f"{path}: id {name!r} on lines {seen[name]} and {number}; ids "
                                   "name the sequences whose verdicts detection reports")
            seen[name] = number
            records.append({"sequence_id": name, "keys": keys, "label": role.label,
                            "n_events": len(keys), "start": float(number)})
    report.sequences = len(records)
    if report.malformed:
        lines = ", ".join(map(str, report.malformed_lines[:SHOWN_BAD_LINES]))
        more = report.malformed - min(report.malformed, SHOWN_BAD_LINES)
        logger.warning("%s: skipped %d malformed line%s (%s%s; %s)", path, report.malformed,
                       "" if report.malformed == 1 else "s", lines,
                       f" and {more} more" if more else "", first_reason)
    if not records:
        raise LogDataError(f"{path}: no valid sequence ({report.malformed} malformed, "
                           f"{report.blank} blank lines); expected space-separated integer keys, "
                           "optionally 'id,' first")
    frame = pd.DataFrame.from_records(records, columns=["sequence_id", "keys", "label",
                                                        "n_events", "start"])
    return frame, report


def read_key_files(paths: Mapping[str, Path]) -> tuple[pd.DataFrame, dict[str, KeyFileReport]]:
    """Read the three files of an import (keys of :data:`KEY_FILE_ROLES`) into one frame.

    The frame has a ``role`` column (the table's key); ids are made unique across files by
    prefixing the role's tag where two files use the same id.

    Raises:
        LogDataError: When a file is missing or unreadable as above.
    """
    frames, reports = [], {}
    for dest, role in KEY_FILE_ROLES.items():
        frame, reports[dest] = read_key_file(paths[dest], role)
        frames.append(frame.assign(role=dest))
    seqs = pd.concat(frames, ignore_index=True)
    clash = seqs["sequence_id"].duplicated(keep=False)
    if clash.any():
        tags = seqs["role"].map(lambda dest: KEY_FILE_ROLES[dest].tag)
        seqs.loc[clash, "sequence_id"] = tags[clash] + ":" + seqs.loc[clash, "sequence_id"]
        logger.info("%d ids occur in more than one file: prefixed with the file's role",
                    int(clash.sum()))
    return seqs, reports


def split_key_files(seqs: pd.DataFrame, val_ratio: float, seed: int,
                    val_count: Any) -> dict[str, pd.DataFrame]:
    """Train/validation from the training file by a seeded shuffle; test from the two test files.

    Args:
        seqs: :func:`read_key_files`' frame.
        val_ratio: Validation share of the training file.
        seed: Seed of the shuffle.
        val_count: ``(n, ratio) -> validation rows`` (the rule every protocol uses).

    >>> s = pd.DataFrame({"role": ["keys_train"] * 5 + ["keys_test_normal", "keys_test_abnormal"]})
    >>> {k: len(v) for k, v in split_key_files(s, 0.2, 0, lambda n, r: round(n * r)).items()}
    {'train': 4, 'val': 1, 'test': 2}
    """
    roles = seqs["role"].map(lambda dest: KEY_FILE_ROLES[dest].split)
    train = np.flatnonzero((roles == "train").to_numpy())
    drawn = np.random.default_rng(seed).permutation(train)
    n_val = val_count(drawn.size, val_ratio)
    return {"train": seqs.iloc[np.sort(drawn[n_val:])], "val": seqs.iloc[np.sort(drawn[:n_val])],
            "test": seqs.iloc[np.flatnonzero((roles == "test").to_numpy())]}


def given_key_files(args: Any) -> dict[str, Path]:
    """The key-file flags given on the command line (destination → path)."""
    return {dest: getattr(args, dest) for dest in KEY_FILE_ROLES if getattr(args, dest, None)}


def check_import_flags(args: Any, ignored: Iterable[str]) -> dict[str, Path]:
    """The three files of an import, after checking the flags go together.

    Args:
        args: Parsed ``sequences`` arguments.
        ignored: Destinations of flags that only apply to raw logs (must be unset).

    Raises:
        LogDataError: On ``--input`` with key files, a missing key file or ``--data-source``, or a
            raw-log flag given with key files.
    """
    files = given_key_files(args)
    if args.input is not None:
        raise LogDataError("pass either --input (a structured log) or the --keys-* files, not both")
    missing = [role.flag for dest, role in KEY_FILE_ROLES.items() if dest not in files]
    if missing:
        raise LogDataError(f"a key-file import needs {', '.join(missing)} too")
    if not args.data_source:
        raise LogDataError("a key-file import needs --data-source NAME (no meta.json names it)")
    given = [f"--{name.replace('_', '-')}" for name in ignored if getattr(args, name) is not None]
    if given:
        raise LogDataError(f"{', '.join(given)} only apply to --input (raw-log sequences), not "
                           "to --keys-* files")
    return files
