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

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from logdata.errors import LogDataError
from logdata.formats import OPTIONAL_FIELDS, DatasetFormat
from logdata.io import sha256_file
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
SKIP_REASONS: tuple[str, ...] = ("undecodable", "blank", "truncated", "unparsable")
BLOCK_RE = r"blk_-?\d+"
#: Columns a structured CSV must have, per label rule.
CSV_REQUIRED: dict[str, tuple[str, ...]] = {
    "first_field": ("Content", "Label"),
    "block_labels": ("Content",),
}


@dataclass
class ReadStats:
    """Counters of one read: lines seen, lines kept, lines skipped per reason, checksum."""

    lines: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    sha256: str = ""

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


# -- labels --------------------------------------------------------------------------------
def load_block_labels(path: str | Path) -> pa.Array:
    """Read HDFS ``anomaly_label.csv`` (``BlockId,Label``) and return the anomalous block ids.

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
    return pc.filter(table["BlockId"], pc.equal(labels, "anomaly")).combine_chunks()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- raw files ----------------------------------------------------------------------------
def _raw_blocks(path: Path, chunk_bytes: int, stats: ReadStats,
                progress: Callable[[int], None] | None) -> Iterator[bytes]:
    """Yield blocks of whole lines (each ends with a newline, except maybe the last).

    The file's sha256 is computed on a background thread (hashlib releases the GIL).
    """
    digest = hashlib.sha256()
    rest = b""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LogDataError(f"cannot open {path}: {exc.strerror}") from None
    with fh, ThreadPoolExecutor(max_workers=1) as hasher:
        pending = None
        while True:
            data = fh.read(chunk_bytes)
            if progress is not None:
                progress(len(data))
            if pending is not None:
                pending.result()
            pending = hasher.submit(digest.update, data)
            if not data:
                break
            data = rest + data if rest else data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]
        pending.result()
    stats.sha256 = digest.hexdigest()
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


def _timestamps(fields: pa.StructArray, fmt: DatasetFormat) -> pa.Array:
    n = len(fields)
    if fmt.timestamp == "epoch":
        return pc.cast(fields.field("timestamp"), pa.float64())
    if fmt.timestamp == "yymmdd_hhmmss":
        text = pc.binary_join_element_wise(fields.field("date").cast(pa.string()),
                                           fields.field("time").cast(pa.string()), " ")
        stamp = pc.strptime(text, format="%y%m%d %H%M%S", unit="s", error_is_null=True)
        return pc.cast(pc.cast(stamp, pa.int64()), pa.float64())
    return pa.nulls(n, pa.float64())


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


def _labels(fields: pa.StructArray, fmt: DatasetFormat, block_ids: pa.Array | None,
            anomalous: pa.Array | None) -> tuple[pa.Array, pa.Array]:
    n = len(fields)
    if fmt.label_rule == "first_field":
        raw = fields.field("label")
        normal = pc.equal(raw, "-")
        label = pc.if_else(normal, NORMAL, ABNORMAL)
        alert = pc.if_else(normal, pa.scalar(None, pa.string()), raw.cast(pa.string()))
        return label, alert
    if block_ids is None or anomalous is None or len(anomalous) == 0:
        return pa.array([NORMAL] * n, pa.string()), pa.nulls(n, pa.string())
    flat = pc.list_flatten(block_ids)
    hit = pc.is_in(flat, value_set=anomalous).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(block_ids).to_numpy(zero_copy_only=False)
    bad = np.bincount(parents[hit], minlength=n) > 0
    return pc.if_else(pa.array(bad), ABNORMAL, NORMAL), pa.nulls(n, pa.string())


def _rest_element(parts: pa.Array, index: int, n_parts: np.ndarray) -> pa.Array:
    """Return element ``index`` of each list, or "" where the list is shorter."""
    flat = pc.list_flatten(pc.list_slice(parts, index, index + 1))
    has = n_parts > index
    positions = np.full(len(n_parts), -1, dtype=np.int64)
    positions[has] = np.arange(int(has.sum()))
    taken = pc.take(flat, pa.array(positions, mask=~has))
    return pc.fill_null(taken, "")


def split_fields(lines: pa.Array, fmt: DatasetFormat) -> tuple[dict[str, pa.Array], np.ndarray,
                                                                 Counter]:
    """Split lines into named fields by the format's header, checks and rest regex.

    Returns:
        (fields of the kept lines, boolean mask of kept lines, skip counts per reason).
    """
    skipped: Counter = Counter()
    n_header = len(fmt.header)
    # ASCII whitespace rules are exact for UTF-8 text (multi-byte sequences hold no ASCII byte)
    trimmed = pc.ascii_trim_whitespace(lines)
    parts = pc.ascii_split_whitespace(trimmed, max_splits=n_header)
    n_parts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.binary_length(trimmed), 0).to_numpy(zero_copy_only=False)
    short = ~blank & (n_parts < n_header)
    keep = ~blank & ~short
    skipped["blank"] += int(blank.sum())
    skipped["truncated"] += int(short.sum())
    mask = pa.array(keep)
    parts, n_parts = pc.filter(parts, mask), n_parts[keep]
    fields = {name: pc.list_element(parts, i) for i, name in enumerate(fmt.header)
              if not name.startswith("_")}
    rest = _rest_element(parts, n_header, n_parts)
    good = np.ones(len(parts), dtype=bool)
    for name, pattern in fmt.checks:
        good &= pc.match_substring_regex(fields[name], pattern).to_numpy(zero_copy_only=False)
    if fmt.rest_regex is None:
        fields["content"] = rest
    else:
        extracted = pc.extract_regex(rest, fmt.rest_regex)
        good &= extracted.is_valid().to_numpy(zero_copy_only=False)
        for i in range(extracted.type.num_fields):
            name = extracted.type.field(i).name
            fields[name] = pc.fill_null(extracted.field(i), "") if name == "content" \
                else extracted.field(i)
    skipped["unparsable"] += int((~good).sum())
    if not good.all():
        selector = pa.array(good)
        fields = {k: pc.filter(v, selector) for k, v in fields.items()}
        keep[np.flatnonzero(keep)[~good]] = False
    return fields, keep, skipped


def _lines_to_table(lines: pa.Array, numbers: np.ndarray, fmt: DatasetFormat, stats: ReadStats,
                    anomalous: pa.Array | None) -> pa.Table:
    fields, keep, skipped = split_fields(lines, fmt)
    stats.skipped.update(skipped)
    stats.kept += int(keep.sum())
    content = fields["content"].cast(pa.string())
    struct = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
    block_ids = block_ids_of(content) if fmt.has_blocks else None
    label, alert = _labels(struct, fmt, block_ids, anomalous)
    columns = {
        "line_no": pa.array(numbers[keep], pa.int64()),
        "label": label,
        "alert": alert,
        "timestamp": _timestamps(struct, fmt),
    }
    for name in OPTIONAL_FIELDS:
        if name in fields:
            columns[name] = fields[name].cast(pa.string())
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
    missing = [c for c in CSV_REQUIRED[fmt.label_rule] if c not in names]
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
    content = table["Content"].combine_chunks()
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
    content = table["Content"].combine_chunks()
    fields = {"label": table["Label"].combine_chunks()} if "Label" in names else {}
    for col in ("Timestamp", "Date", "Time"):
        if col in names:
            fields[col.lower()] = table[col].combine_chunks()
    struct = pa.StructArray.from_arrays(list(fields.values()) or [pa.nulls(table.num_rows)],
                                        names=list(fields) or ["_"])
    block_ids = block_ids_of(content) if fmt.has_blocks else None
    label, alert = _labels(struct, fmt, block_ids, anomalous)
    has_time = {"timestamp"} <= set(fields) or {"date", "time"} <= set(fields)
    try:
        timestamp = _timestamps(struct, fmt) if has_time else pa.nulls(table.num_rows,
                                                                      pa.float64())
    except (pa.ArrowInvalid, KeyError):
        timestamp = pa.nulls(table.num_rows, pa.float64())
    columns = {"line_no": line_no, "label": label, "alert": alert, "timestamp": timestamp}
    for csv_name, ours in fmt.csv_fields.items():
        if csv_name in names and ours not in columns:
            columns[ours] = table[csv_name].combine_chunks()
    columns["content"] = content
    if block_ids is not None:
        columns["block_ids"] = block_ids
    if use_templates and "EventTemplate" in names:
        columns["csv_template"] = table["EventTemplate"].combine_chunks()
    return pa.table(columns)
