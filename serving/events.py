"""Raw log lines → stream entries: field split, sessions, partitions (the ``ingest`` side).

A batch of raw lines is split into the format's fields with the data stage's own regex
(:func:`logdata.readers.split_fields`); every line that parses becomes one event with an id and
its sessions, cut as the offline stage cuts them (:data:`SESSIONIZERS`):

* ``block``: the HDFS block ids the message names (a line naming two blocks joins both);
* ``count``: windows ``[k*step, k*step + size)`` over the positions of the parsed lines;
* ``time``: half-open windows ``[t0 + k*step, t0 + k*step + size)`` on the timestamps (``t0`` is
  the service's ``window_origin``; offline it is the first timestamp of the log);
* ``none`` (template-level detection): no session; the event's partition follows its id.

The event goes into the partition of each of its sessions once, with the sessions of that
partition, so each partition carries every event of its sessions in log order.

Entry fields (:data:`FIELDS`): ``e`` event id, ``t`` ingest time (ns since the epoch), ``f`` the
format name, ``s`` space-separated session ids, ``c`` the message (``Content``); control entries
carry ``ctl`` only (``end``: close every open session of the partition).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from logdata.formats import CONTENT, DatasetFormat
from logdata.readers import block_ids_of, split_fields, timestamps_of
from serving.transport import partition_of

logger = logging.getLogger(__name__)

#: Entry field names (short: they are repeated in every entry).
FIELDS: dict[str, str] = {"event": "e", "time": "t", "format": "f", "sessions": "s",
                          "content": "c", "control": "ctl"}
END = "end"
#: Lines longer than this are counted (``oversize``) and skipped, here and in the worker.
DEFAULT_MAX_LINE_BYTES = 65_536
#: Skip reasons the service counts (``<prefix>:stats`` → ``skipped:<reason>``).
SKIP_REASONS: tuple[str, ...] = ("blank", "truncated", "unparsable", "oversize", "invalid_utf8",
                                 "malformed", "unknown_format", "no_session", "no_timestamp")


@dataclass(frozen=True)
class Windowing:
    """How events are cut into sessions (the offline ``params.window`` of ``logdata sequences``).

    Attributes:
        kind: ``block``, ``count``, ``time`` or ``none``.
        size: Window length (lines or seconds).
        step: Window step.
        min_events: Sessions with fewer keys get no verdict (offline drops them).
        origin: ``t0`` of the time-window grid (seconds since the epoch).
    """

    kind: str = "block"
    size: float = 0
    step: float = 0
    min_events: int = 1
    origin: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"kind": self.kind, "size": self.size, "step": self.step,
                "min_events": self.min_events, "origin": self.origin}


def count_windows_of(position: int, size: int, step: int) -> list[str]:
    """The count windows holding the line at ``position`` (0-based), as offline.

    >>> count_windows_of(5, 4, 2), count_windows_of(0, 100, 100)
    (['count-1', 'count-2'], ['count-0'])
    """
    first = max(0, (position - size) // step + 1)
    return [f"count-{k}" for k in range(first, position // step + 1)]


def time_windows_of(seconds: float, size: float, step: float, origin: float) -> list[str]:
    """The half-open time windows ``[origin + k*step, origin + k*step + size)`` holding ``seconds``.

    >>> time_windows_of(70.0, 60, 30, 0.0), time_windows_of(5.0, 60, 30, 10.0)
    (['time-1', 'time-2'], [])
    """
    offset = seconds - origin
    if offset < 0:
        return []
    last = math.floor(offset / step)
    first = max(0, math.floor((offset - size) / step) + 1)
    return [f"time-{k}" for k in range(first, last + 1)]


def _blocks(content: pa.Array, positions: np.ndarray, times: pa.Array, w: Windowing) -> list[list[str]]:
    return [list(dict.fromkeys(ids)) for ids in block_ids_of(content).to_pylist()]


def _counts(content: pa.Array, positions: np.ndarray, times: pa.Array, w: Windowing) -> list[list[str]]:
    return [count_windows_of(int(p), int(w.size), int(w.step)) for p in positions]


def _times(content: pa.Array, positions: np.ndarray, times: pa.Array, w: Windowing) -> list[list[str]]:
    return [[] if t is None else time_windows_of(t, w.size, w.step, w.origin)
            for t in times.to_pylist()]


#: Window kind → sessions of each parsed line (``none``: template-level, no sessions).
SESSIONIZERS: dict[str, Callable[[pa.Array, np.ndarray, pa.Array, Windowing], list[list[str]]]] = {
    "block": _blocks,
    "count": _counts,
    "time": _times,
}


@dataclass
class Batch:
    """Entries of one batch of lines, ready to publish.

    Attributes:
        entries: Partition → entry field dicts.
        events: Events (parsed lines) in the batch.
        skipped: Skip counts by reason.
    """

    entries: dict[int, list[dict[str, Any]]]
    events: int
    skipped: Counter


def decode_lines(raw: Sequence[bytes], max_line_bytes: int) -> tuple[list[str], Counter]:
    r"""Decode raw lines (without their newline), counting and dropping oversize and bad UTF-8 ones.

    >>> decode_lines([b"ok", b"\xff bad", b"x" * 9], 8)
    (['ok'], Counter({'invalid_utf8': 1, 'oversize': 1}))
    """
    lines, skipped = [], Counter()
    for line in raw:
        if len(line) > max_line_bytes:
            skipped["oversize"] += 1
            continue
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            skipped["invalid_utf8"] += 1
    return lines, skipped


class EventBuilder:
    """Turns batches of decoded lines into partitioned stream entries.

    Args:
        fmt: The log format (from the data stage's ``meta.json``).
        windowing: How events form sessions.
        partitions: Number of partitions.

    Event ids are 1, 2, 3, … over the parsed lines of a stream (``<prefix>:seq``), so the
    position of an event among them (count windows) is its id minus one.
    """

    def __init__(self, fmt: DatasetFormat, windowing: Windowing, partitions: int) -> None:
        if windowing.kind != "none" and windowing.kind not in SESSIONIZERS:
            raise ValueError(f"unknown window kind {windowing.kind!r}")
        self.fmt = fmt
        self.windowing = windowing
        self.partitions = partitions

    def build(self, lines: Sequence[str], event_ids: Callable[[int], Sequence[int]]) -> Batch:
        """Entries for ``lines``; ``event_ids(n)`` gives the ids of the ``n`` parsed ones."""
        skipped: Counter = Counter()
        if not lines:
            return Batch({}, 0, skipped)
        fields, keep, counts = split_fields(pa.array(lines, pa.string()), self.fmt)
        skipped.update({k: v for k, v in counts.items() if v})
        n = int(keep.sum())
        if n == 0:
            return Batch({}, 0, skipped)
        content = pc.fill_null(pc.cast(fields[CONTENT], pa.string()), "")
        ids = list(event_ids(n))
        positions = np.asarray(ids, dtype=np.int64) - 1
        now = str(time.time_ns())
        entries: dict[int, list[dict[str, Any]]] = defaultdict(list)
        texts = content.to_pylist()
        if self.windowing.kind == "none":
            for eid, text in zip(ids, texts, strict=True):
                entries[eid % self.partitions].append(self._entry(eid, now, "", text))
            return Batch(dict(entries), n, skipped)
        times = timestamps_of(fields, self.fmt, n)
        sessions = SESSIONIZERS[self.windowing.kind](content, positions, times, self.windowing)
        for eid, text, own in zip(ids, texts, sessions, strict=True):
            if not own:
                skipped["no_timestamp" if self.windowing.kind == "time" else "no_session"] += 1
                continue
            by_partition: dict[int, list[str]] = defaultdict(list)
            for sid in own:
                by_partition[partition_of(sid, self.partitions)].append(sid)
            for p, sids in by_partition.items():
                entries[p].append(self._entry(eid, now, " ".join(sids), text))
        return Batch(dict(entries), n, skipped)

    def _entry(self, eid: int, now: str, sessions: str, text: str) -> dict[str, Any]:
        entry = {"e": str(eid), "t": now, "f": self.fmt.name, "c": text}
        if sessions:
            entry["s"] = sessions
        return entry


def end_entries(partitions: int) -> dict[int, list[dict[str, Any]]]:
    """One ``end`` control entry per partition: workers close every open session."""
    return {p: [{"ctl": END, "t": str(time.time_ns())}] for p in range(partitions)}
