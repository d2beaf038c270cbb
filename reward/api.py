"""The reward entry points, free of verl imports (``from reward import compute_score``)."""

from __future__ import annotations

from typing import Any

from reward.context import ScoreContext
from reward.scorer import get_composite


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    **reward_kwargs: Any,
) -> dict[str, Any]:
    """Score one model response.

    Args:
        data_source: Dataset name of the row (``bgl``, ``spirit``, …).
        solution_str: Decoded response, expected ``<think>…</think><answer>…</answer>``.
        ground_truth: Gold label, ``normal`` or ``abnormal``.
        extra_info: The row's ``extra_info`` (``log``, optional ``reference_rationale``).
        **reward_kwargs: ``preset``, ``weights``, ``params``, correctness shorthands,
            ``perplexity_model``, ``class_weights`` (see :mod:`reward.scorer`).

    Returns:
        ``{"score", "acc", "pred", <one key per active component>}`` — same keys on every call
        for one configuration. Malformed responses score low with ``pred="unknown"``.

    Raises:
        ValueError: Bad ``reward_kwargs`` or a ground truth that is not a label (data bug).

    >>> r = compute_score("bgl", "<think>x</think><answer>abnormal</answer>", "normal", {}, preset="released")
    >>> round(r["score"], 3), r["pred"], r["acc"]
    (-6.567, 'abnormal', 0.0)
    """
    composite = get_composite(reward_kwargs)
    return composite.score(ScoreContext.build(solution_str, ground_truth, data_source, extra_info))


async def compute_score_async(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    **reward_kwargs: Any,
) -> dict[str, Any]:
    """Coroutine version of :func:`compute_score` (same arguments and result)."""
    composite = get_composite(reward_kwargs)
    return await composite.score_async(
        ScoreContext.build(solution_str, ground_truth, data_source, extra_info)
    )
