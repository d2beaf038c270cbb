"""Group parsed log lines into log-key sequences (HDFS blocks, time windows, count windows).

Every grouping returns the same frame, one row per sequence:

=============  ==============================================================================
column         meaning
=============  ==============================================================================
sequence_id    stable id: the block id, ``time-<k>`` (window ``k`` of the time grid) or
               ``count-<i>`` (``i``-th count window)
keys           list of log keys (the data stage's ``event_id`` strings, in log order)
label          ``abnormal`` when any line of the sequence is abnormal, else ``normal``
n_events       number of keys
start          first timestamp of the sequence (epoch seconds), or the first ``line_no`` when
               the format has no timestamp
=============  ==============================================================================

A line whose ``event_id`` is null becomes the unknown key (:data:`UNKNOWN_KEY`), so a parser miss
still shows up as an unusual key rather than vanishing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from logdata import windows
from logdata.errors import LogDataError
from logdata.keyseq.vocab import UNK
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

UNKNOWN_KEY = UNK
SEQUENCE_COLUMNS = ["sequence_id", "keys", "label", "n_events", "start"]


@dataclass(frozen=True)
class WindowSpec:
    """How to cut a structured log into sequences.

    Attributes:
        kind: ``block`` (one sequence per HDFS block id), ``time`` (sliding windows in seconds)
            or ``count`` (sliding windows of a fixed number of lines).
        size: Window length (seconds for ``time``, lines for ``count``; unused for ``block``).
        step: Window step (same unit as ``size``).
        min_events: Sequences with fewer keys are dropped (LogGPT drops one-event windows: 2).
        grid: Time windows only, one of :data:`TIME_GRIDS`: ``loggpt`` (LogGPT's grid, see
            :func:`loggpt_time_grid`) or ``half_open`` (``[t0 + k*step, t0 + k*step + size)`` on
            the raw timestamps); None leaves the choice to the protocol (``logdata sequences``).
    """

    kind: str = "time"
    size: float = 60.0
    step: float = 30.0
    min_events: int = 2
    grid: str | None = None


def _keys_and_labels(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return the key strings and a boolean abnormal mask, in the frame's row order."""
    for column in ("event_id", "label"):
        if column not in frame.columns:
            raise LogDataError(f"structured frame has no '{column}' column")
    keys = frame["event_id"].astype("object").where(frame["event_id"].notna(), UNKNOWN_KEY)
    keys = keys.map(lambda k: "_".join(str(k).split()) or UNKNOWN_KEY).to_numpy(dtype=object)
    abnormal = (frame["label"].astype("object") == ABNORMAL).to_numpy(dtype=bool)
    return keys, abnormal


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by ``line_no`` when present (log order), keeping ties stable."""
    if "line_no" in frame.columns:
        return frame.sort_values("line_no", kind="stable").reset_index(drop=True)
    return frame.reset_index(drop=True)


def _frame(rows: dict[str, list]) -> pd.DataFrame:
    """Build the sequence frame with its fixed column order and dtypes."""
    out = pd.DataFrame(rows, columns=SEQUENCE_COLUMNS)
    out["n_events"] = out["n_events"].astype("int64")
    out["start"] = out["start"].astype("float64")
    return out


def _from_bounds(
    keys: np.ndarray, abnormal: np.ndarray, starts: np.ndarray, ends: np.ndarray,
    ids: list[str], first: np.ndarray, min_events: int,
) -> pd.DataFrame:
    """Build sequences from ``[starts[i], ends[i])`` slices of the sorted key array.

    ``abnormal`` is turned into a prefix sum so each window's label costs O(1).
    """
    sizes = ends - starts
    keep = sizes >= max(min_events, 1)
    dropped = int((~keep).sum())
    if dropped:
        logger.info("dropped %d windows with fewer than %d events", dropped, min_events)
    cum = np.concatenate([[0], np.cumsum(abnormal, dtype=np.int64)])
    n_abnormal = cum[ends] - cum[starts]
    rows: dict[str, list] = {c: [] for c in SEQUENCE_COLUMNS}
    for i in np.flatnonzero(keep):
        rows["sequence_id"].append(ids[i])
        rows["keys"].append(keys[starts[i]:ends[i]].tolist())
        rows["label"].append(ABNORMAL if n_abnormal[i] > 0 else NORMAL)
        rows["n_events"].append(int(sizes[i]))
        rows["start"].append(float(first[i]))
    return _frame(rows)


def loggpt_time_grid(times: np.ndarray, size: float, step: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LogGPT's time windows over sorted ``times`` (its ``utils/utils.py`` ``sliding_window``).

    Timestamps are floored to whole seconds; window ``k`` holds the lines with
    ``t0 + k*step <= t <= t0 + k*step + size`` (closed at both ends), and windows start while
    ``t0 + k*step`` is before the last timestamp. Empty windows are not returned.

    Returns:
        ``(k, starts, ends)``: each non-empty window's grid index and its half-open row range.

    >>> [a.tolist() for a in loggpt_time_grid(np.array([0.5, 5.0, 10.9, 12.0]), 5.0, 5.0)]
    [[0, 1, 2], [0, 1, 2], [2, 3, 4]]
    """
    ts = np.floor(np.asarray(times, dtype=np.float64))
    if len(ts) == 0 or ts[-1] <= ts[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    grid = np.arange(math.ceil((ts[-1] - ts[0]) / step), dtype=np.int64)
    origins = ts[0] + step * grid.astype(np.float64)
    starts = np.searchsorted(ts, origins, side="left").astype(np.int64)
    ends = np.searchsorted(ts, origins + size, side="right").astype(np.int64)
    keep = ends > starts
    return grid[keep], starts[keep], ends[keep]


#: Time-window grids: name → ``(timestamps, size, step) -> (k, starts, ends)``.
TIME_GRIDS: dict[str, Callable[[np.ndarray, float, float],
                               tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "loggpt": loggpt_time_grid,
    "half_open": windows.time_window_grid,
}


def time_windows(frame: pd.DataFrame, size: float, step: float, min_events: int = 2,
                 grid: str = "half_open") -> pd.DataFrame:
    """Cut the log into sliding time windows.

    With ``grid="half_open"`` window ``k`` is ``[t0 + k*step, t0 + k*step + size)``, the grid of
    :func:`logdata.windows.time_window_grid` (the data stage's session windows); with
    ``grid="loggpt"`` it is LogGPT's (:func:`loggpt_time_grid`). Empty windows are never built,
    and windows with fewer than ``min_events`` keys are dropped. Lines without a timestamp are
    skipped (with a warning).

    Args:
        frame: Structured log with ``timestamp``, ``event_id`` and ``label``.
        size: Window length in seconds (> 0).
        step: Window step in seconds (> 0).
        min_events: Minimum keys per window.
        grid: A key of :data:`TIME_GRIDS`.

    Returns:
        The sequence frame (see the module docstring), ordered by window start.

    Raises:
        LogDataError: On a bad size/step or when no line has a timestamp.

    >>> f = pd.DataFrame({"line_no": [1, 2, 3, 4], "timestamp": [0.0, 10.0, 70.0, 500.0],
    ...                   "event_id": ["E1", "E2", "E3", "E4"], "label": ["normal"] * 4})
    >>> time_windows(f, 60, 30)[["sequence_id", "keys"]].to_dict("list")
    {'sequence_id': ['time-0'], 'keys': [['E1', 'E2']]}
    """
    if size <= 0 or step <= 0:
        raise LogDataError(f"window size and step must be positive (got {size}, {step})")
    if grid not in TIME_GRIDS:
        raise LogDataError(f"unknown time grid {grid!r}; choose from {sorted(TIME_GRIDS)}")
    if "timestamp" not in frame.columns:
        raise LogDataError("time windows need a 'timestamp' column; use --window count")
    timed = frame[frame["timestamp"].notna()]
    if len(timed) < len(frame):
        logger.warning("skipping %d lines without a timestamp", len(frame) - len(timed))
    if timed.empty:
        return _frame({c: [] for c in SEQUENCE_COLUMNS})
    if "line_no" in timed.columns:
        timed = timed.sort_values(["timestamp", "line_no"], kind="stable")
    else:
        timed = timed.sort_values("timestamp", kind="stable")
    keys, abnormal = _keys_and_labels(timed)
    times = timed["timestamp"].to_numpy(dtype=np.float64)
    cells, starts, ends = TIME_GRIDS[grid](times, size, step)
    ids = [f"time-{k}" for k in cells]
    return _from_bounds(keys, abnormal, starts, ends, ids, times[np.minimum(starts, len(times) - 1)],
                        min_events)


def count_windows(frame: pd.DataFrame, size: int, step: int, min_events: int = 2) -> pd.DataFrame:
    """Cut the log into sliding windows of ``size`` consecutive lines every ``step`` lines.

    :func:`logdata.windows.fixed_windows` with ``tail="all"``: the last windows may be shorter
    than ``size``; they are kept when they reach ``min_events``.

    Args:
        frame: Structured log with ``event_id`` and ``label`` (``line_no`` orders it).
        size: Lines per window (>= 1).
        step: Lines between window starts (>= 1).
        min_events: Minimum keys per window.

    Returns:
        The sequence frame; ``start`` is the first timestamp when present, else the first line.

    >>> f = pd.DataFrame({"line_no": range(5), "event_id": list("ABCDE"), "label": ["normal"] * 5})
    >>> count_windows(f, 2, 2)["keys"].tolist()
    [['A', 'B'], ['C', 'D']]
    """
    size, step = int(size), int(step)
    if size < 1 or step < 1:
        raise LogDataError(f"count window size and step must be >= 1 (got {size}, {step})")
    ordered = _ordered(frame)
    keys, abnormal = _keys_and_labels(ordered)
    n = len(keys)
    starts, ends = windows.fixed_windows(n, size, step, tail="all")
    first = _start_values(ordered)
    ids = [f"count-{i}" for i in range(len(starts))]
    return _from_bounds(keys, abnormal, starts, ends, ids, first[starts] if n else first, min_events)


def _start_values(frame: pd.DataFrame) -> np.ndarray:
    """Per-line start value: the timestamp when known, else the line number."""
    fallback = (frame["line_no"] if "line_no" in frame.columns else pd.Series(frame.index))
    fallback = fallback.astype("float64")
    if "timestamp" in frame.columns:
        return frame["timestamp"].astype("float64").fillna(fallback).to_numpy()
    return fallback.to_numpy()


def _as_list(value: object) -> list:
    """Distinct block ids of a list/array cell, in order; anything else (null) is no block.

    A line that names the same block twice (``deleting blk_1 file …/blk_1``) counts once.
    """
    return list(dict.fromkeys(value)) if isinstance(value, list | tuple | np.ndarray) else []


def block_sessions(frame: pd.DataFrame, min_events: int = 1) -> pd.DataFrame:
    """One sequence per HDFS block id, keys in log order (a line naming two blocks joins both).

    Args:
        frame: Structured HDFS log with a ``block_ids`` list column.
        min_events: Minimum keys per block (LogGPT keeps every block: 1).

    Returns:
        The sequence frame ordered by each block's first line.

    >>> f = pd.DataFrame({"line_no": [1, 2, 3], "event_id": ["E1", "E2", "E3"],
    ...                   "label": ["normal", "abnormal", "normal"],
    ...                   "block_ids": [["b1"], ["b2"], ["b1", "b2"]]})
    >>> block_sessions(f)[["sequence_id", "keys", "label"]].to_dict("list")
    {'sequence_id': ['b1', 'b2'], 'keys': [['E1', 'E3'], ['E2', 'E3']], 'label': ['normal', 'abnormal']}
    """
    if "block_ids" not in frame.columns:
        raise LogDataError("block sessions need a 'block_ids' column (HDFS); use --window time")
    ordered = _ordered(frame)
    keys, abnormal = _keys_and_labels(ordered)
    exploded = pd.DataFrame({
        "block": ordered["block_ids"].map(_as_list),
        "key": keys, "abnormal": abnormal, "start": _start_values(ordered),
    }).explode("block").dropna(subset=["block"])
    rows: dict[str, list] = {c: [] for c in SEQUENCE_COLUMNS}
    grouped = exploded.groupby("block", sort=False)
    for block, group in grouped:
        if len(group) < max(min_events, 1):
            continue
        rows["sequence_id"].append(str(block))
        rows["keys"].append(group["key"].tolist())
        rows["label"].append(ABNORMAL if group["abnormal"].any() else NORMAL)
        rows["n_events"].append(len(group))
        rows["start"].append(float(group["start"].iloc[0]))
    return _frame(rows)


WINDOWERS: dict[str, Callable[[pd.DataFrame, WindowSpec], pd.DataFrame]] = {
    "block": lambda f, s: block_sessions(f, s.min_events),
    "time": lambda f, s: time_windows(f, s.size, s.step, s.min_events, s.grid or "half_open"),
    "count": lambda f, s: count_windows(f, int(s.size), int(s.step), s.min_events),
}


def build_sequences(frame: pd.DataFrame, spec: WindowSpec) -> pd.DataFrame:
    """Cut ``frame`` into sequences with the windowing that ``spec.kind`` names.

    Raises:
        LogDataError: On an unknown kind or a frame that lacks the needed columns.
    """
    if spec.kind not in WINDOWERS:
        raise LogDataError(f"unknown window kind {spec.kind!r}; choose from {sorted(WINDOWERS)}")
    return WINDOWERS[spec.kind](frame, spec)
