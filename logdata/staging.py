"""Output folders that are complete or untouched, and ``meta.json`` checksums readers verify.

Every step that writes a dataset folder (``parse``, ``build``, ``prepare``, ``sequences``) writes
into a staging folder beside ``--out`` and moves the files into place only after all of them were
written; ``meta.json`` moves last and lists the sha256 of every file it describes (its ``files``
key). A failed or interrupted run therefore leaves the previous complete output, or nothing.

Rules of :func:`staged_output`:

* ``--out`` already holding an output of the step (one of ``produces``, or a file the folder's
  ``meta.json`` lists) is refused unless ``overwrite``; other files in the folder (raw logs, notes)
  are never touched.
* On success each staged file replaces its namesake, then the files the previous ``meta.json``
  listed that the new one no longer describes are deleted (so no old split survives beside new
  ones), then ``meta.json`` is moved in.

Readers call :func:`verify_file` on their input: when a ``meta.json`` beside it lists the file, the
checksum must match, else one line tells what changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from logdata.errors import LogDataError
from logdata.io import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

META = "meta.json"
#: Key of ``meta.json`` holding ``{file name: sha256}`` of every file the meta describes.
FILES_KEY = "files"


def read_meta(folder: str | Path, error: type[Exception] | None = None) -> dict[str, Any]:
    """Return ``folder/meta.json`` as a dict, or ``{}`` when there is none.

    Raises:
        LogDataError: (or ``error``) when the file exists but is not a JSON object.
    """
    path = Path(folder) / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise (error or LogDataError)(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise (error or LogDataError)(f"{path} is not a JSON object")
    return meta


def listed_files(meta: dict[str, Any]) -> dict[str, str]:
    """Return the ``{file name: sha256}`` table of a meta dict (empty for old metas)."""
    files = meta.get(FILES_KEY)
    return dict(files) if isinstance(files, dict) else {}


def file_digests(folder: str | Path, names: Iterable[str]) -> dict[str, str]:
    """Return ``{name: sha256}`` of the files ``names`` in ``folder``, sorted by name."""
    folder = Path(folder)
    return {name: sha256_file(folder / name) for name in sorted(set(names))}


def write_meta(folder: str | Path, meta: dict[str, Any], extra_files: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """Write ``folder/meta.json`` with ``files`` = the sha256 of every other file in ``folder``.

    Args:
        folder: The (staging) folder; every regular file in it except ``meta.json`` is listed.
        meta: The payload; its ``files`` key is replaced.
        extra_files: Files described by the meta that live outside ``folder`` (inputs already
            in the final output folder, such as ``structured.parquet`` for ``build``).

    Returns:
        The payload as written.
    """
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file() and p.name != META
             and not p.name.startswith(".")]
    files = {**(extra_files or {}), **file_digests(folder, names)}
    payload = {**meta, FILES_KEY: dict(sorted(files.items()))}
    _write_meta_file(folder, payload)
    return payload


def verify_file(path: str | Path, error: type[Exception] | None = None) -> str | None:
    """Check ``path`` against the ``meta.json`` beside it.

    Returns:
        The file's sha256 when the meta lists it (and it matches), else None (no meta, or a
        meta that does not describe this file: nothing to check).

    Raises:
        LogDataError: (or ``error``) one line when the checksum differs.
    """
    path = Path(path)
    meta = read_meta(path.parent, error)
    expected = listed_files(meta).get(path.name)
    if expected is None:
        return None
    actual = sha256_file(path)
    if actual != expected:
        raise (error or LogDataError)(
            f"{path} does not match {path.parent / META} (sha256 {actual[:12]}… ≠ "
            f"{expected[:12]}…): it changed after the folder was written; rebuild the folder")
    return actual


def amend_meta(path: str | Path, note: str) -> bool:
    """Record a file written into a described folder after the fact (``rationales --merge-into``).

    When the folder's ``meta.json`` has a ``files`` table, ``path``'s sha256 is set there and
    ``amended[name]`` says what wrote it, so checks keep passing and a later ``--overwrite`` of the
    folder removes the file with the rest of the old output.

    Returns:
        Whether a meta was amended.
    """
    path = Path(path)
    meta = read_meta(path.parent)
    if FILES_KEY not in meta:
        return False
    meta[FILES_KEY] = dict(sorted({**listed_files(meta), path.name: sha256_file(path)}.items()))
    meta["amended"] = {**meta.get("amended", {}), path.name: note}
    _write_meta_file(path.parent, meta)
    return True


def _write_meta_file(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``folder/meta.json`` atomically (sorted keys, two-space indent)."""
    atomic_write_text(folder / META, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


def existing_outputs(out: Path, produces: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Names of files in ``out`` that a run would replace: ``produces`` and the meta's list.

    ``keep`` (the step's inputs inside ``out``) and, unless produced, ``meta.json`` do not count.
    """
    if not out.is_dir():
        return []
    produces = set(produces)
    names = (produces | set(listed_files(read_meta(out)))) - set(keep)
    if META not in produces:
        names.discard(META)
    return sorted(name for name in names if (out / name).exists())


def refuse_existing(out: Path, produces: Iterable[str], overwrite: bool,
                    keep: Iterable[str] = ()) -> None:
    """Raise unless ``out`` holds none of the outputs or ``overwrite`` is set.

    Raises:
        LogDataError: naming up to three of the files and the ``--overwrite`` flag.
    """
    if out.exists() and not out.is_dir():
        raise LogDataError(f"--out {out} is a file, expected a folder")
    found = existing_outputs(out, produces, keep)
    if found and not overwrite:
        shown = ", ".join(found[:3]) + (" …" if len(found) > 3 else "")
        raise LogDataError(f"--out {out} already holds output ({shown}); pass --overwrite to "
                           "replace it")


@contextmanager
def staged_output(out: str | Path, produces: Iterable[str] = (), overwrite: bool = False,
                  keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a staging folder; on success move its files into ``out`` (``meta.json`` last).

    Args:
        out: The final output folder (created when missing).
        produces: File names the step writes (checked against ``overwrite``).
        overwrite: Replace existing outputs instead of refusing.
        keep: Names listed by the previous ``meta.json`` that must survive even when the new
            meta does not list them (the step's own inputs inside ``out``).

    Raises:
        LogDataError: when ``out`` holds outputs and ``overwrite`` is not set.
    """
    out = Path(out)
    keep = set(keep)
    refuse_existing(out, produces, overwrite, keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield stage
        _commit(stage, out, keep)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, out: Path, keep: set[str]) -> None:
    """Move the staged files into ``out``: data files, then stale-file removal, then meta.json."""
    out.mkdir(parents=True, exist_ok=True)
    old = set(listed_files(read_meta(out)))
    new_meta = read_meta(stage)
    new = set(listed_files(new_meta)) | {p.name for p in stage.iterdir()}
    for path in sorted(stage.iterdir()):
        if path.name != META:
            os.replace(path, out / path.name)
    for name in sorted(old - new - keep):
        target = out / name
        if target.is_file():
            logger.info("removing %s: the new output no longer describes it", target)
            target.unlink()
    if (stage / META).exists():
        os.replace(stage / META, out / META)
    elif (out / META).exists() and old:
        # the previous meta describes files that were just replaced: it would now lie
        (out / META).unlink()
