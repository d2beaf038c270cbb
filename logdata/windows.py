"""Session windows over a chronological line sequence.

Each function returns ``(starts, ends)`` int64 arrays of half-open row ranges ``[start, end)``
into the line sequence; a session is abnormal if any of its lines is.
"""

from __future__ import annotations

import numpy as np

from logdata.errors import LogDataError

#: What happens to the last windows when lines run out (see :func:`fixed_windows`).
TAIL_RULES = ("partial", "all", "full")


def fixed_windows(n_lines: int, size: int = 100, step: int | None = None,
                  tail: str = "partial") -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``size`` consecutive lines every ``step`` lines (``step`` defaults to ``size``).

    The one line-count window of both tracks (template sessions, key sequences); ``tail`` says
    what happens when lines run out before a window is full:

    * ``partial`` (sessions): keep a shorter last window, unless it lies wholly inside the
      previous one (overlapping windows would repeat the same lines);
    * ``all`` (key sequences): keep every shorter window, one per start (callers drop the ones
      below their minimum length);
    * ``full``: keep only windows of exactly ``size`` lines.

    Raises:
        LogDataError: ``size`` or ``step`` below 1, or an unknown ``tail``.

    >>> [a.tolist() for a in fixed_windows(250, 100)]
    [[0, 100, 200], [100, 200, 250]]
    >>> [a.tolist() for a in fixed_windows(5, 3, 1, tail="all")], [a.tolist() for a in fixed_windows(5, 3, 1)]
    ([[0, 1, 2, 3, 4], [3, 4, 5, 5, 5]], [[0, 1, 2], [3, 4, 5]])
    """
    step = size if step is None else step
    if size < 1 or step < 1:
        raise LogDataError(f"window size and step must be >= 1, got {size} and {step}")
    if tail not in TAIL_RULES:
        raise LogDataError(f"unknown window tail rule {tail!r}; choose from {TAIL_RULES}")
    if n_lines <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.arange(0, n_lines, step, dtype=np.int64)
    ends = np.minimum(starts + size, n_lines)
    if tail == "full":
        keep = ends - starts == size
    elif tail == "partial":
        keep = np.ones(len(starts), bool)
        keep[1:] = ends[1:] > ends[:-1]
    else:
        keep = np.ones(len(starts), bool)
    return starts[keep], ends[keep]


def time_window_grid(timestamps: np.ndarray, size: float, step: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-empty sliding windows ``[t0 + k*step, t0 + k*step + size)`` over sorted ``timestamps``.

    Returns:
        ``(k, starts, ends)``: each kept window's grid index and its half-open row range.

    >>> [a.tolist() for a in time_window_grid(np.array([0., 1., 5., 6., 20.]), 5.0)]
    [[0, 1, 4], [0, 2, 4], [2, 4, 5]]
    """
    step = size if step is None else step
    if size <= 0 or step <= 0:
        raise LogDataError(f"time window size and step must be > 0, got {size} and {step}")
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if np.isnan(ts).any():
        raise LogDataError("time windows need a timestamp on every line")
    if (np.diff(ts) < 0).any():
        raise LogDataError("time windows need non-decreasing timestamps")
    grid = np.arange(int((ts[-1] - ts[0]) // step) + 1, dtype=np.int64)
    origins = ts[0] + step * grid.astype(np.float64)
    starts = np.searchsorted(ts, origins, side="left").astype(np.int64)
    ends = np.searchsorted(ts, origins + size, side="left").astype(np.int64)
    keep = ends > starts
    return grid[keep], starts[keep], ends[keep]


def time_windows(timestamps: np.ndarray, size: float, step: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of ``size`` seconds every ``step`` seconds over sorted ``timestamps``.

    Windows start at the first timestamp; empty windows are dropped.

    >>> [a.tolist() for a in time_windows(np.array([0., 1., 5., 6., 20.]), 5.0)]
    [[0, 2, 4], [2, 4, 5]]
    """
    _, starts, ends = time_window_grid(timestamps, size, step)
    return starts, ends


def block_sessions(block_lists: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Group line positions by HDFS block id, in order of each block's first line.

    Args:
        block_lists: per line, the block ids it mentions.

    Returns:
        (block ids, for each block the positions of its lines in order).

    >>> block_sessions([["b1"], ["b2"], ["b1", "b2"], []])
    (['b1', 'b2'], [[0, 2], [1, 2]])
    """
    order: dict[str, list[int]] = {}
    for position, blocks in enumerate(block_lists):
        for blk in dict.fromkeys(blocks or ()):
            order.setdefault(blk, []).append(position)
    return list(order), list(order.values())
