"""Plain Python values from config and table containers (OmegaConf, numpy, pandas rows).

A leaf module with no project imports: :mod:`reward` and :mod:`logdata` (which already
depends on :mod:`reward`) both use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def plain(value: Any) -> Any:
    """Return ``value`` with its containers turned into plain dicts, lists and scalars.

    Mappings (dicts, OmegaConf ``DictConfig``) become dicts with string keys; lists, tuples,
    other non-text sequences (OmegaConf ``ListConfig``) and numpy arrays become lists; numpy
    scalars become Python scalars. Anything else is returned as it is.

    Args:
        value: A value read from a config or a parquet row.

    Returns:
        The same data built only from ``dict``, ``list`` and scalars.

    >>> import numpy as np
    >>> plain({"a": np.array([1, 2]), 3: (np.float32(0.5), "x")})
    {'a': [1, 2], '3': [0.5, 'x']}
    """
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # other array-library scalars
        return value.item()
    return value
