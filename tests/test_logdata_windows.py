"""Session windowing edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from logdata.errors import LogDataError
from logdata.windows import block_sessions, fixed_windows, time_windows


def _spans(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(starts.tolist(), ends.tolist(), strict=False))


def test_default_fixed_window_is_exactly_100_lines() -> None:
    starts, ends = fixed_windows(1000)
    assert set((ends - starts).tolist()) == {100}
    assert len(starts) == 10


@pytest.mark.parametrize(
    ("n", "size", "step", "expected"),
    [
        (0, 100, None, []),
        (1, 100, None, [(0, 1)]),
        (100, 100, None, [(0, 100)]),
        (101, 100, None, [(0, 100), (100, 101)]),
        (5, 2, 1, [(0, 2), (1, 3), (2, 4), (3, 5)]),
        (7, 3, 5, [(0, 3), (5, 7)]),
    ],
)
def test_fixed_windows(n: int, size: int, step: int | None, expected: list) -> None:
    assert _spans(*fixed_windows(n, size, step)) == expected


def test_fixed_windows_can_drop_the_partial_tail() -> None:
    assert _spans(*fixed_windows(250, 100, tail="full")) == [(0, 100), (100, 200)]


@pytest.mark.parametrize("bad", [(10, 0, None), (10, 5, 0), (10, -1, None)])
def test_fixed_windows_reject_bad_sizes(bad: tuple) -> None:
    with pytest.raises(LogDataError):
        fixed_windows(*bad)


def test_time_windows_skip_empty_gaps_and_include_the_last_line() -> None:
    ts = np.array([0.0, 1.0, 4.9, 5.0, 30.0])
    assert _spans(*time_windows(ts, 5.0)) == [(0, 3), (3, 4), (4, 5)]


def test_sliding_time_windows_overlap() -> None:
    ts = np.arange(10, dtype=float)
    spans = _spans(*time_windows(ts, size=4.0, step=2.0))
    assert spans[0] == (0, 4) and spans[1] == (2, 6)
    assert spans[-1][1] == 10


def test_time_windows_need_sorted_complete_timestamps() -> None:
    with pytest.raises(LogDataError):
        time_windows(np.array([3.0, 1.0]), 5.0)
    with pytest.raises(LogDataError):
        time_windows(np.array([1.0, np.nan]), 5.0)
    assert _spans(*time_windows(np.array([]), 5.0)) == []


def test_block_sessions_group_lines_by_first_occurrence() -> None:
    names, members = block_sessions([["b2"], ["b1", "b2"], [], ["b1", "b1"], ["b3"]])
    assert names == ["b2", "b1", "b3"]
    assert members == [[0, 1], [1, 3], [4]]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("partial", [(0, 3), (1, 4), (2, 5)]),  # later starts lie inside the window ending at 5
        ("all", [(0, 3), (1, 4), (2, 5), (3, 5), (4, 5)]),
        ("full", [(0, 3), (1, 4), (2, 5)]),
    ],
)
def test_tail_rules_of_the_one_window_implementation(tail: str, expected: list) -> None:
    assert _spans(*fixed_windows(5, 3, 1, tail=tail)) == expected
    assert _spans(*fixed_windows(7, 3, 3, tail=tail)) == {
        "partial": [(0, 3), (3, 6), (6, 7)], "all": [(0, 3), (3, 6), (6, 7)], "full": [(0, 3), (3, 6)]
    }[tail]


def test_unknown_tail_rule_is_refused() -> None:
    with pytest.raises(LogDataError, match="tail"):
        fixed_windows(5, 3, 1, tail="drop")
