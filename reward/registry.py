"""Name → component registry.

A component is a small object built from keyword parameters with a ``__call__(ctx) -> float``
that reads a :class:`reward.context.ScoreContext`, and ``low``/``high`` attributes giving its
documented range. The registered name is also the metric key in the reward's result dict.
Components are built only when a preset or ``weights`` names them, so a heavy one (the perplexity
scorer) costs nothing unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from reward.context import ScoreContext


class Component(Protocol):
    """What every registered component provides."""

    low: float
    high: float

    def __call__(self, ctx: ScoreContext) -> float:
        """Score one parsed response; the result lies in ``[low, high]``."""
        ...


_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_component(name: str) -> Callable[[T], T]:
    """Class decorator that registers a component class under ``name``.

    Args:
        name: Registry and metric key; must be unused.

    Returns:
        The decorator, which returns the class unchanged.

    Raises:
        ValueError: ``name`` is already registered to another class.
    """

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"reward component {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_components() -> list[str]:
    """Return the sorted names of every registered component.

    >>> import reward.components
    >>> "format" in available_components()
    True
    """
    return sorted(_REGISTRY)


def build_component(name: str, **params: Any) -> Component:
    """Instantiate the component registered as ``name`` with ``params``.

    Args:
        name: A registered component name.
        **params: Constructor arguments of that component.

    Returns:
        The built component.

    Raises:
        ValueError: Unknown name or parameters the component does not take.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward component {name!r}; known: {available_components()}")
    try:
        return _REGISTRY[name](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for reward component {name!r}: {exc}") from exc
