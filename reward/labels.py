"""Label strings shared by every stage.

Gold labels are exactly :data:`NORMAL` and :data:`ABNORMAL`; a parsed model answer is one of
:data:`PREDICTIONS` (the gold labels plus :data:`UNKNOWN`). Every stage imports these names
instead of writing the strings.
"""

from __future__ import annotations

from typing import Final

NORMAL: Final = "normal"
ABNORMAL: Final = "abnormal"
UNKNOWN: Final = "unknown"

LABELS: Final[tuple[str, str]] = (NORMAL, ABNORMAL)
PREDICTIONS: Final[tuple[str, str, str]] = (NORMAL, ABNORMAL, UNKNOWN)
POSITIVE: Final = ABNORMAL


def is_label(value: object) -> bool:
    """Tell whether ``value`` is one of the two gold label strings.

    >>> is_label("abnormal"), is_label("Abnormal"), is_label(None)
    (True, False, False)
    """
    return isinstance(value, str) and value in LABELS
