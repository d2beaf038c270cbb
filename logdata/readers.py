"""Streaming readers: raw log files and loghub structured CSVs → Arrow tables of lines.

Each reader yields :class:`pyarrow.Table` chunks with the columns ``line_no``, ``label``,
``alert``, ``timestamp``, the optional header fields of the format (``node``, ``component``,
``level``), ``content``, ``block_ids`` for HDFS, and for pre-parsed CSVs ``csv_template``.
Memory is bounded by the chunk size, not by the file size.

Lines that cannot be used are counted per reason in :class:`ReadStats` and skipped:
``undecodable`` (not UTF-8), ``blank``, ``truncated`` (fewer header fields than the format
needs) and ``unparsable`` (enough fields but the line regex does not match). An input that
yields no usable line at all raises :class:`~logdata.errors.LogDataError`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from logdata.errors import LogDataError
from logdata.formats import CONTENT, EPOCH, DatasetFormat
from logdata.io import sha256_file
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
SKIP_REASONS: tuple[str, ...] = ("undecodable", "blank", "truncated", "unparsable")
BLOCK_RE = r"blk_-?\d+"


@dataclass
class ReadStats:
    """Counters of one read: lines seen, lines kept, lines skipped per reason, checksum.

    For block-labelled formats it also gathers the distinct block ids the log mentions
    (:meth:`note_blocks`), so the labels file can be matched against them.
    """

    lines: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    sha256: str = ""
    block_parts: list = field(default_factory=list)

    def summary(self) -> str:
        """Return a one-line human summary."""
        reasons = ", ".join(f"{r} {self.skipped[r]}" for r in SKIP_REASONS if self.skipped[r])
        return f"{self.kept:,} of {self.lines:,} lines kept" + (
            f"; skipped: {reasons}" if reasons else ""
        )

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {
            "lines": self.lines,
            "kept": self.kept,
            "skipped": {r: int(self.skipped[r]) for r in SKIP_REASONS},
        }

    def note_blocks(self, block_ids: pa.Array) -> None:
        """Remember the distinct block ids of one chunk (``list<string>`` per line)."""
        self.block_parts.append(pc.unique(pc.list_flatten(block_ids)))

    def blocks_seen(self) -> pa.Array:
        """The distinct block ids mentioned by the lines read so far."""
        if not self.block_parts:
            return pa.array([], pa.string())
        merged = pc.unique(pa.concat_arrays([p.cast(pa.string()) for p in self.block_parts]))
        self.block_parts = [merged]
        return merged


# -- labels --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockLabels:
    """An HDFS labels file: every labelled block id and the anomalous ones."""

    labelled: pa.Array
    anomalous: pa.Array

    def match_report(self, seen: pa.Array) -> dict[str, int]:
        """How the labels meet the block ids a log mentions (``seen``).

        >>> labels = BlockLabels(pa.array(["b1", "b2", "b3"]), pa.array(["b3"]))
        >>> labels.match_report(pa.array(["b2", "b3", "b9"]))["abnormal_blocks_matched"]
        1
        """
        matched = pc.is_in(seen, value_set=self.labelled)
        bad = pc.is_in(seen, value_set=self.anomalous)
        return {
            "blocks_in_labels": len(self.labelled),
            "abnormal_blocks_in_labels": len(self.anomalous),
            "blocks_in_log": len(seen),
            "blocks_matched": int(pc.sum(matched).as_py() or 0),
            "abnormal_blocks_matched": int(pc.sum(bad).as_py() or 0),
        }


def load_block_labels(path: str | Path) -> BlockLabels:
    """Read HDFS ``anomaly_label.csv`` (``BlockId,Label``).

    Raises:
        LogDataError: when the file is missing, unreadable or lacks the two columns.
    """
    try:
        table = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={"BlockId": pa.string(),
                                                                    "Label": pa.string()})
        )
    except (OSError, pa.ArrowInvalid) as exc:
        raise LogDataError(f"cannot read labels {path}: {_first_line(exc)}") from None
    missing = {"BlockId", "Label"} - set(table.column_names)
    if missing:
        raise LogDataError(f"labels {path} lacks column(s) {sorted(missing)} (need BlockId,Label)")
    labels = pc.utf8_lower(table["Label"])
    bad = pc.invert(pc.is_in(labels, value_set=pa.array(["normal", "anomaly"])))
    if pc.any(bad).as_py():
        raise LogDataError(f"labels {path}: Label must be Normal or Anomaly")
    ids = table["BlockId"].combine_chunks()
    return BlockLabels(pc.unique(ids), pc.unique(pc.filter(ids, pc.equal(labels, "anomaly"))
                                                 .combine_chunks()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- raw files ----------------------------------------------------------------------------
#: Leading bytes of each compressed format read as a stream → its name.
COMPRESSION_MAGIC: dict[bytes, str] = {
    b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
}


def compression_of(path: Path) -> str | None:
    """The compression of ``path`` by its leading bytes (``gzip``, ``bzip2``, ``xz``, ``zstd``).

    Returns:
        None for a plain file.
    """
    with open(path, "rb") as fh:
        head = fh.read(6)
    return next((name for magic, name in COMPRESSION_MAGIC.items() if head.startswith(magic)),
                None)


def _open_zstd(path: Path, mode: str, **kwargs: Any) -> IO:
    import zstandard

    return zstandard.open(path, mode, **kwargs)


#: Openers by compression (:func:`compression_of`; None: a plain file), ``open``'s arguments.
OPENERS: dict[str | None, Callable[..., IO]] = {
    None: open, "gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open, "zstd": _open_zstd}


def open_compressed(path: Path, mode: str = "rb", **kwargs: Any) -> IO:
    """Open ``path``, plain or compressed (told by its leading bytes, as the parser reads it).

    Args:
        path: The file.
        mode: ``"rb"`` for bytes, ``"rt"`` for text.
        **kwargs: Passed to the opener (``encoding=`` and the like, for text).
    """
    return OPENERS[compression_of(path)](path, mode, **kwargs)


class _HashingReader(io.RawIOBase):
    """Reads a file, hashing every byte and reporting progress (the compressed bytes)."""

    def __init__(self, fh: io.BufferedReader, digest: Any,
                 progress: Callable[[int], None] | None) -> None:
        self.fh, self.digest, self.progress = fh, digest, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.fh.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
            if self.progress is not None:
                self.progress(n)
        return n or 0


def _zstd_stream(raw: io.RawIOBase, chunk_bytes: int) -> Iterator[bytes]:
    """Decompress concatenated zstd frames; an unfinished last frame raises ``EOFError``."""
    import zstandard

    reader = io.BufferedReader(raw)
    decoder, started = zstandard.ZstdDecompressor().decompressobj(), False
    while data := reader.read(chunk_bytes):
        while data:
            out = decoder.decompress(data)
            started = True
            if out:
                yield out
            data = decoder.unused_data if decoder.eof else b""
            if decoder.eof:
                decoder, started = zstandard.ZstdDecompressor().decompressobj(), bool(data)
    if started and not decoder.eof:
        raise EOFError("compressed file ended before the end of its last frame")


def _stdlib_stream(kind: str, raw: io.RawIOBase, chunk_bytes: int) -> Iterator[bytes]:
    """Decompress a gzip, bzip2 or xz stream with the standard library."""
    import bz2
    import gzip
    import lzma

    opener = {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bzip2": bz2.BZ2File,
              "xz": lzma.LZMAFile}[kind]
    with opener(io.BufferedReader(raw)) as stream:
        while data := stream.read1(chunk_bytes):  # read1: what is decoded so far, no waiting
            yield data


def _compressed_chunks(path: Path, kind: str, chunk_bytes: int, stats: ReadStats,
                       progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield decompressed chunks of ``path``; the sha256 is of the compressed file.

    Raises:
        LogDataError: one line when the archive is truncated or corrupt, after what was read.
    """
    import lzma

    import zstandard

    digest = hashlib.sha256()
    piece = min(chunk_bytes, 1 << 20)  # small reads, so a damaged archive yields what it had
    pending, failure = bytearray(), None
    with open(path, "rb") as fh:
        raw = _HashingReader(fh, digest, progress)
        pieces = (_zstd_stream(raw, piece) if kind == "zstd" else _stdlib_stream(kind, raw, piece))
        try:
            for data in pieces:
                pending += data
                if len(pending) >= chunk_bytes:
                    yield bytes(pending)
                    pending.clear()
        except (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as exc:
            failure = _first_line(exc)
    if pending:
        yield bytes(pending)
    if failure is not None:
        raise LogDataError(f"{path} is a truncated or corrupt {kind} archive ({failure}); "
                           f"stopped after {stats.lines:,} lines")
    stats.sha256 = digest.hexdigest()


def _raw_chunks(path: Path, chunk_bytes: int, stats: ReadStats,
                progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield chunks of a plain file; its sha256 is computed on a background thread."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh, ThreadPoolExecutor(max_workers=1) as hasher:
        pending = None
        while True:
            data = fh.read(chunk_bytes)
            if progress is not None:
                progress(len(data))
            if pending is not None:
                pending.result()  # hashlib releases the GIL
            pending = hasher.submit(digest.update, data)
            if not data:
                break
            yield data
        pending.result()
    stats.sha256 = digest.hexdigest()


def _raw_blocks(path: Path, chunk_bytes: int, stats: ReadStats,
                progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield blocks of whole lines (each ends with a newline, except maybe the last).

    Plain files and ``.gz``/``.bz2``/``.xz``/``.zst`` streams (recognised by their leading bytes)
    are read chunk by chunk; ``stats.sha256`` is the sha256 of the file as stored.
    """
    try:
        kind = compression_of(path)
    except OSError as exc:
        raise LogDataError(f"cannot open {path}: {exc.strerror}") from None
    chunks = (_raw_chunks(path, chunk_bytes, stats, progress) if kind is None
              else _compressed_chunks(path, kind, chunk_bytes, stats, progress))
    rest = b""
    for data in chunks:
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield data[:cut]
    if rest:
        yield rest


def _decode_lines(block: bytes, first_line: int, stats: ReadStats) -> tuple[pa.Array, np.ndarray]:
    """Split a block into lines; return the decodable ones and their 1-based line numbers.

    ``stats.lines`` grows by the number of physical lines in the block.
    """
    body = block[:-1] if block.endswith(b"\n") else block
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return _decode_slowly(body, first_line, stats)
    # valid UTF-8: wrap the bytes as one large_string value without a copy, split natively
    offsets = pa.array([0, len(body)], pa.int64()).buffers()[1]
    whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(body)])
    lines = pc.split_pattern(whole, "\n").flatten()
    stats.lines += len(lines)
    return lines, np.arange(first_line, first_line + len(lines), dtype=np.int64)


def _decode_slowly(body: bytes, first_line: int, stats: ReadStats) -> tuple[pa.Array, np.ndarray]:
    """Line-by-line decoding for a block holding undecodable bytes (counted and skipped)."""
    lines, numbers = [], []
    raw_lines = body.split(b"\n")
    for i, raw in enumerate(raw_lines):
        try:
            lines.append(raw.decode("utf-8"))
            numbers.append(first_line + i)
        except UnicodeDecodeError:
            stats.skipped["undecodable"] += 1
    stats.lines += len(raw_lines)
    return pa.array(lines, pa.large_string()), np.asarray(numbers, dtype=np.int64)


def _epoch_seconds(text: pa.Array) -> pa.Array:
    """Cast decimal epoch seconds to float64; anything else becomes null."""
    valid = pc.match_substring_regex(text, r"^\d+(?:\.\d+)?$")
    return pc.cast(pc.if_else(valid, text, pa.scalar(None, pa.string())), pa.float64())


def timestamps_of(fields: dict[str, pa.Array], fmt: DatasetFormat, n: int) -> pa.Array:
    """Epoch seconds (float64) of each line from the format's timestamp fields; null where unset.

    The fields are joined with one space and parsed with the format's strptime format (or read as
    epoch seconds); a value that does not parse is null.
    """
    names = fmt.timestamp_fields
    if not names or any(name not in fields for name in names):
        return pa.nulls(n, pa.float64())
    parts = [pc.cast(fields[name], pa.string()) for name in names]
    text = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, " ")
    if fmt.timestamp_format == EPOCH:
        return _epoch_seconds(text)
    stamp = pc.strptime(text, format=fmt.timestamp_format, unit="s", error_is_null=True)
    return pc.cast(pc.cast(stamp, pa.int64()), pa.float64())


def block_ids_of(content: pa.Array) -> pa.Array:
    """Return a ``list<string>`` array of the HDFS block ids each content mentions."""
    tokens = pc.split_pattern_regex(pc.fill_null(content, ""), r"[\s,;:()\[\]]+")
    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
    found = pc.extract_regex(flat, f"(?P<b>{BLOCK_RE})")
    keep = found.is_valid()
    ids = pc.filter(found, keep).field("b")
    counts = np.bincount(pc.filter(pa.array(parents), keep).to_numpy(zero_copy_only=False),
                         minlength=len(content))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), ids.cast(pa.string()))


def labels_of(fields: dict[str, pa.Array], fmt: DatasetFormat, block_ids: pa.Array | None,
              anomalous: pa.Array | None, n: int) -> tuple[pa.Array, pa.Array]:
    """Return (``label``, ``alert``) arrays of ``n`` lines by the format's label rule."""
    no_alert = pa.nulls(n, pa.string())
    if fmt.label_rule == "field" and fmt.label_field in fields:
        raw = pc.cast(fields[fmt.label_field], pa.string())
        normal = pc.fill_null(pc.equal(raw, fmt.normal_value), True)
        return pc.if_else(normal, NORMAL, ABNORMAL), pc.if_else(normal, no_alert, raw)
    if block_ids is None or anomalous is None or len(anomalous) == 0:
        return pa.array([NORMAL] * n, pa.string()), no_alert
    flat = pc.list_flatten(block_ids)
    hit = pc.is_in(flat, value_set=anomalous).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(block_ids).to_numpy(zero_copy_only=False)
    bad = np.bincount(parents[hit], minlength=n) > 0
    return pc.if_else(pa.array(bad), ABNORMAL, NORMAL), no_alert


def split_fields(lines: pa.Array, fmt: DatasetFormat) -> tuple[dict[str, pa.Array], np.ndarray,
                                                                 Counter]:
    """Split lines into the format's named fields with its line regex (RE2, vectorised).

    A line that does not match is ``truncated`` when it has fewer white-space separated tokens
    than the format has fields before ``<Content>``, else ``unparsable``.

    Returns:
        (fields of the kept lines by field name, boolean mask of kept lines, skip counts).
    """
    skipped: Counter = Counter()
    # ASCII whitespace rules are exact for UTF-8 text (multi-byte sequences hold no ASCII byte)
    trimmed = pc.ascii_trim_whitespace(lines)
    blank = pc.equal(pc.binary_length(trimmed), 0).to_numpy(zero_copy_only=False)
    extracted = pc.extract_regex(trimmed, fmt.line_regex())
    matched = extracted.is_valid().to_numpy(zero_copy_only=False)
    keep = matched & ~blank
    missed = np.flatnonzero(~matched & ~blank)
    if len(missed):
        tokens = pc.list_value_length(pc.ascii_split_whitespace(
            pc.take(trimmed, pa.array(missed)), max_splits=fmt.header_fields)
        ).to_numpy(zero_copy_only=False)
        short = int((tokens < fmt.header_fields).sum())
        skipped["truncated"] += short
        skipped["unparsable"] += len(missed) - short
    skipped["blank"] += int(blank.sum())
    kept = extracted.filter(pa.array(keep)) if not keep.all() else extracted
    fields = {kept.type.field(i).name: kept.field(i) for i in range(kept.type.num_fields)}
    return fields, keep, skipped


def _lines_to_table(lines: pa.Array, numbers: np.ndarray, fmt: DatasetFormat, stats: ReadStats,
                    anomalous: pa.Array | None) -> pa.Table:
    fields, keep, skipped = split_fields(lines, fmt)
    stats.skipped.update(skipped)
    n = int(keep.sum())
    stats.kept += n
    return _line_table(pa.array(numbers[keep], pa.int64()), fields, fmt, stats, anomalous, n)


def _line_table(line_no: pa.Array, fields: dict[str, pa.Array], fmt: DatasetFormat,
                stats: ReadStats, anomalous: pa.Array | None, n: int) -> pa.Table:
    """The reader's output columns from the fields of ``n`` kept lines."""
    content = pc.fill_null(pc.cast(fields[CONTENT], pa.string()), "")
    block_ids = block_ids_of(content) if fmt.has_blocks else None
    if block_ids is not None:
        stats.note_blocks(block_ids)
    label, alert = labels_of(fields, fmt, block_ids, anomalous, n)
    columns = {"line_no": line_no, "label": label, "alert": alert,
               "timestamp": timestamps_of(fields, fmt, n)}
    for column, name in fmt.columns:
        if name in fields:
            columns[column] = pc.cast(fields[name], pa.string())
    columns["content"] = content
    if block_ids is not None:
        columns["block_ids"] = block_ids
    return pa.table(columns)


def iter_raw(path: str | Path, fmt: DatasetFormat, stats: ReadStats,
             anomalous: pa.Array | None = None, chunk_bytes: int = CHUNK_BYTES,
             progress: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
    """Yield parsed line tables from a raw log file, chunk by chunk.

    Args:
        path: raw log file.
        fmt: dataset settings.
        stats: filled with counters and the file's sha256.
        anomalous: anomalous HDFS block ids (``block_labels`` formats).
        chunk_bytes: bytes read per chunk.
        progress: called with the number of bytes read after each read.
    """
    for block in _raw_blocks(Path(path), chunk_bytes, stats, progress):
        lines, numbers = _decode_lines(block, stats.lines + 1, stats)
        table = _lines_to_table(lines, numbers, fmt, stats, anomalous)
        if len(table):
            yield table


# -- structured CSV -----------------------------------------------------------------------
def iter_structured_csv(path: str | Path, fmt: DatasetFormat, stats: ReadStats,
                        anomalous: pa.Array | None = None, use_templates: bool = True,
                        progress: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
    """Yield line tables from a loghub ``*_structured.csv`` (columns LineId, Label, Content…).

    ``EventTemplate`` (when present and ``use_templates``) is passed on as ``csv_template`` so
    the pre-parsed templates are kept verbatim.

    Raises:
        LogDataError: when the file is not a CSV or lacks the needed columns.
    """
    path = Path(path)
    stats.sha256 = sha256_file(path) if path.is_file() else ""
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                 column_types=_all_strings(path)),
        )
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise LogDataError(f"cannot read CSV {path}: {_first_line(exc)}") from None
    names = set(reader.schema.names)
    needed = [CONTENT] + ([fmt.label_field] if fmt.label_rule == "field" else [])
    missing = [c for c in needed if c not in names]
    if missing:
        raise LogDataError(
            f"CSV {path} lacks column(s) {missing}; found {sorted(names)[:12]}"
        )
    next_line = 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise LogDataError(f"malformed CSV {path}: {_first_line(exc)}") from None
        if progress is not None:
            progress(batch.nbytes)
        table = _csv_batch_to_table(pa.Table.from_batches([batch]), fmt, next_line, anomalous,
                                    use_templates, stats)
        next_line += batch.num_rows
        if len(table):
            yield table


def _all_strings(path: Path) -> dict[str, pa.DataType]:
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise LogDataError(f"cannot read CSV {path}: {_first_line(exc)}") from None
    table = pacsv.read_csv(pa.py_buffer(header.encode()),
                           read_options=pacsv.ReadOptions(autogenerate_column_names=False)) \
        if header.strip() else None
    if table is None:
        raise LogDataError(f"CSV {path} is empty")
    return {name: pa.string() for name in table.column_names}


def _csv_batch_to_table(table: pa.Table, fmt: DatasetFormat, first_line: int,
                        anomalous: pa.Array | None, use_templates: bool,
                        stats: ReadStats) -> pa.Table:
    n = table.num_rows
    stats.lines += n
    content = table[CONTENT].combine_chunks()
    blank = pc.match_substring_regex(content, r"^\s*$")
    stats.skipped["blank"] += int(pc.sum(blank).as_py() or 0)
    table = table.filter(pc.invert(blank))
    stats.kept += table.num_rows
    names = set(table.column_names)
    if "LineId" in names:
        line_no = pc.cast(table["LineId"], pa.int64(), safe=False)
    else:
        line_no = pa.array(np.arange(first_line, first_line + n)[~blank.to_numpy(
            zero_copy_only=False)])
    fields = {name: table[name].combine_chunks() for name in table.column_names}
    out = _line_table(line_no.combine_chunks() if isinstance(line_no, pa.ChunkedArray)
                      else line_no, fields, fmt, stats, anomalous, table.num_rows)
    if use_templates and "EventTemplate" in names:
        out = out.append_column("csv_template", table["EventTemplate"].combine_chunks())
    return out
