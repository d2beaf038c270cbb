"""One parsed sample, shared by every component so that each response is parsed once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from reward.labels import ABNORMAL, LABELS, NORMAL
from reward.parsing import extract_answer, extract_think, normalise_answer, parse_answer
from reward.released import ReleasedParts, released_parts, released_reference

_TAG_RE = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
_FORMAT_ORDER = ("<think>", "</think>", "<answer>", "</answer>")


def check_format(response: str) -> bool:
    r"""Tell whether ``response`` is exactly ``<think>…</think><answer>…</answer>``.

    Each of the four tags must occur exactly once, in that order, with only whitespace before
    ``<think>``, between ``</think>`` and ``<answer>`` and after ``</answer>``. A truncated
    response (a missing closing tag) fails.

    >>> check_format("<think>ok</think>\n<answer>normal</answer>")
    True
    >>> check_format("<think>ok</think><answer>normal")
    False
    >>> check_format("<think>a</think><think>b</think><answer>normal</answer>")
    False
    """
    tags = [match.group(0).lower() for match in _TAG_RE.finditer(response)]
    if tuple(tags) != _FORMAT_ORDER:
        return False
    pieces = _TAG_RE.split(response)
    # pieces: before <think>, think, between, answer, after </answer>
    return not (pieces[0].strip() or pieces[2].strip() or pieces[4].strip())


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _reference_text(value: Any) -> str:
    """Return a reference rationale's think text (strip tags when it is a full response)."""
    if not isinstance(value, str):
        return ""
    return extract_think(value) if "<think>" in value.lower() else value


@dataclass(frozen=True)
class ScoreContext:
    """Everything a component may read about one sample; derived fields are computed lazily.

    Attributes:
        solution_str: The decoded model response.
        ground_truth: Gold label, ``normal`` or ``abnormal``.
        data_source: Dataset name (``bgl``, ``spirit``, …).
        extra_info: The parquet row's ``extra_info`` (``log``, ``reference_rationale`` …).
    """

    solution_str: str
    ground_truth: str
    data_source: str = ""
    extra_info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, solution_str: Any, ground_truth: Any, data_source: Any = "", extra_info: Any = None
    ) -> ScoreContext:
        """Coerce loosely typed inputs (``None``, numpy strings, …) into a context.

        Raises:
            ValueError: ``ground_truth`` is not a gold label (a data bug, caught loudly).
        """
        gold = str(ground_truth).strip().lower() if ground_truth is not None else ""
        if gold not in LABELS:
            raise ValueError(f"ground_truth must be one of {LABELS}, got {ground_truth!r}")
        text = solution_str if isinstance(solution_str, str) else ""
        return cls(text, gold, str(data_source or ""), _as_mapping(extra_info))

    @cached_property
    def answer_raw(self) -> str | None:
        """Raw text of the last ``<answer>`` block (``None`` when absent)."""
        return extract_answer(self.solution_str)

    @cached_property
    def answer_empty(self) -> bool:
        """True when there is no answer block or it holds no letter or digit."""
        return self.answer_raw is None or not normalise_answer(self.answer_raw)

    @cached_property
    def pred(self) -> str:
        """Parsed prediction: ``normal``, ``abnormal`` or ``unknown``."""
        return parse_answer(self.solution_str)

    @cached_property
    def correct(self) -> bool:
        """True when the parsed prediction equals the gold label."""
        return self.pred == self.ground_truth

    @cached_property
    def format_ok(self) -> bool:
        """Result of :func:`check_format` on the response."""
        return check_format(self.solution_str)

    @cached_property
    def think(self) -> str:
        """Text of the first ``<think>`` block (``""`` when absent)."""
        return extract_think(self.solution_str)

    @cached_property
    def reference(self) -> str:
        """Reference rationale text from ``extra_info['reference_rationale']`` (or ``""``)."""
        return _reference_text(self.extra_info.get("reference_rationale"))

    @cached_property
    def has_reference(self) -> bool:
        """True when ``extra_info['reference_rationale']`` holds non-blank text."""
        return bool(self.reference.strip())

    @cached_property
    def released(self) -> ReleasedParts:
        """Format, think and answer as RationAnomaly's released code reads them."""
        return released_parts(self.solution_str)

    @cached_property
    def released_reference(self) -> str:
        """The reference think as the released code reads it (last block, stripped)."""
        return released_reference(self.extra_info.get("reference_rationale"))

    @cached_property
    def log(self) -> str:
        """The input log from ``extra_info['log']`` (or ``""``)."""
        value = self.extra_info.get("log")
        return value if isinstance(value, str) else ""

    @property
    def is_abnormal(self) -> bool:
        """True when the gold label is ``abnormal``."""
        return self.ground_truth == ABNORMAL

    @property
    def is_normal(self) -> bool:
        """True when the gold label is ``normal``."""
        return self.ground_truth == NORMAL
