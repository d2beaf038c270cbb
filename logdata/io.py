"""Atomic file writes (text, JSON-ready text, parquet with run metadata), checksums, path checks."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def plain_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    An interrupted write leaves no file at ``path`` that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, plain_file_mode())  # mkstemp makes 0600
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def scratch_path(folder: str | Path, name: str) -> Iterator[Path]:
    """Yield a temporary file path in ``folder`` that is always deleted afterwards."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_parquet(frame: pd.DataFrame, path: str | Path,
                         metadata: dict[str, str] | None = None) -> Path:
    """Write ``frame`` (without its index) to ``path`` as parquet, atomically.

    Args:
        frame: The rows to write.
        path: Target file; its folder is created when missing.
        metadata: Extra key/value pairs stored in the parquet schema metadata (for example a
            run's model path and sampling parameters, as JSON text).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({key.encode(): value.encode() for key, value in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_parquet(path: str | Path, error: type[Exception] | None = None) -> pd.DataFrame:
    """Read a parquet file; an unreadable or non-parquet file raises one clear line.

    Args:
        path: The parquet file.
        error: Exception type to raise (default :class:`~logdata.errors.LogDataError`), so each
            stage keeps its own error type for its CLI.

    Raises:
        LogDataError: (or ``error``) ``cannot read <path>: <first line of the reason>``.
    """
    import pandas as pd
    import pyarrow as pa

    from logdata.errors import LogDataError

    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise (error or LogDataError)(f"cannot read {path}: {reason}") from None


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def require_file(path: str | Path, what: str = "input", error: type[Exception] | None = None,
                 hint: str = "") -> Path:
    """Return ``path`` when it is an existing file; else raise one line naming the problem.

    Args:
        path: The path a command was given.
        what: What the file is, for the message (``"data file"``, ``"--input"`` …).
        error: Exception type to raise (default :class:`~logdata.errors.LogDataError`).
        hint: Appended to the message when the file does not exist (``"run parse first"``).

    Raises:
        LogDataError: (or ``error``) ``<what> <path> is a directory, expected a file``, ``…
            does not exist`` or ``… is not a regular file``.

    >>> require_file(".")
    Traceback (most recent call last):
    logdata.errors.LogDataError: input . is a directory, expected a file
    """
    from logdata.errors import LogDataError

    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        problem = "is a directory, expected a file"
    elif path.exists():
        problem = "is not a regular file"
    else:
        problem = "does not exist" + (f"; {hint}" if hint else "")
    raise (error or LogDataError)(f"{what} {path} {problem}")


def require_dir(path: str | Path, what: str = "input", error: type[Exception] | None = None) -> Path:
    """Return ``path`` when it is an existing folder; else raise one line naming the problem.

    Raises:
        LogDataError: (or ``error``) ``<what> <path> is a file, expected a folder`` or ``…
            does not exist``.

    >>> require_dir("/dev/null")
    Traceback (most recent call last):
    logdata.errors.LogDataError: input /dev/null is a file, expected a folder
    """
    from logdata.errors import LogDataError

    path = Path(path)
    if path.is_dir():
        return path
    problem = "is a file, expected a folder" if path.exists() else "does not exist"
    raise (error or LogDataError)(f"{what} {path} {problem}")
