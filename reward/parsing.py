"""The one answer parser shared by the training reward and evaluation.

A response is expected as ``<think>…</think><answer>normal|abnormal</answer>``. The parser
reads the **last** ``<answer>…</answer>`` block, lower-cases it and strips punctuation and
whitespace; anything other than exactly ``normal`` or ``abnormal`` is :data:`UNKNOWN`.
"""

from __future__ import annotations

import re

from reward.labels import ABNORMAL, NORMAL, UNKNOWN

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_NON_WORD_RE = re.compile(r"[\W_]+", re.UNICODE)


def normalise_answer(text: str) -> str:
    """Lower-case ``text`` and drop everything that is not a letter or digit.

    >>> normalise_answer("  Abnormal. ")
    'abnormal'
    """
    return _NON_WORD_RE.sub("", text).lower()


def extract_answer(response: str) -> str | None:
    """Return the raw text of the last ``<answer>`` block, or ``None`` when there is none.

    >>> extract_answer("<answer>a</answer><answer> b </answer>")
    ' b '
    """
    matches = _ANSWER_RE.findall(response or "")
    return matches[-1] if matches else None


def extract_think(response: str) -> str:
    """Return the text of the first ``<think>`` block, or ``""`` when there is none.

    >>> extract_think("<think> why </think><answer>normal</answer>")
    ' why '
    """
    match = _THINK_RE.search(response or "")
    return match.group(1) if match else ""


def parse_answer(response: str) -> str:
    """Parse a model response into ``normal``, ``abnormal`` or ``unknown``.

    >>> parse_answer("<think>fine</think><answer>Normal</answer>")
    'normal'
    >>> parse_answer("<answer>ABNORMAL!</answer>")
    'abnormal'
    >>> parse_answer("<answer>uncertain</answer>"), parse_answer("abnormal")
    ('unknown', 'unknown')
    """
    raw = extract_answer(response)
    if raw is None:
        return UNKNOWN
    word = normalise_answer(raw)
    return word if word in (NORMAL, ABNORMAL) else UNKNOWN
