"""The same reward as TRL ``GRPOTrainer`` reward functions.

TRL calls each reward function as ``f(prompts=…, completions=…, completion_ids=…, **columns)``
where ``columns`` are the dataset's other columns, one list entry per completion (for the VeRL
parquet: ``reward_model``, ``extra_info``, ``data_source``), plus ``log_metric`` and
``log_extra`` callbacks. A completion is a string or, for conversational data, a list of
``{"role", "content"}`` messages.

:func:`make_trl_reward_funcs` returns ``[LogRLReward(reward_kwargs)]``: one picklable callable
whose output is the total score (logged by TRL as ``rewards/LogRLReward/mean``). Each component
is logged through TRL's own logging: the batch mean of every component as the scalar metric
``logrl/<component>`` (via ``log_metric``), plus ``acc``, and per-completion ``pred`` and
component values as columns of the completions table (via ``log_extra``). The perplexity model
is scored once per batch over the samples that need it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reward.context import ScoreContext
from reward.scorer import get_composite

METRIC_PREFIX = "logrl/"


def completion_text(completion: Any) -> str:
    """Return the assistant text of a TRL completion (string or list of messages).

    >>> completion_text("<answer>normal</answer>")
    '<answer>normal</answer>'
    >>> completion_text([{"role": "assistant", "content": "<answer>abnormal</answer>"}])
    '<answer>abnormal</answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        texts = [m.get("content") for m in completion if isinstance(m, Mapping)]
        texts = [t for t in texts if isinstance(t, str)]
        return texts[-1] if texts else ""
    return ""


def _ground_truth(reward_model: Any) -> Any:
    return reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else reward_model


def _column(kwargs: Mapping[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    values = kwargs.get(name)
    return list(values) if values is not None else [default] * n


class LogRLReward:
    """Total LogRL reward for a TRL batch; logs every component.

    Args:
        reward_kwargs: The same ``reward_kwargs`` as the VeRL entry point.

    Picklable (holds only ``reward_kwargs``; the scorer is rebuilt lazily in each process).

    >>> fn = LogRLReward({"preset": "answer_only"})
    >>> fn(prompts=["p"], completions=["<think>x</think><answer>normal</answer>"],
    ...    reward_model=[{"ground_truth": "normal"}], extra_info=[{"log": "ok"}], data_source=["bgl"])
    [1.1]
    """

    def __init__(self, reward_kwargs: Mapping[str, Any] | None = None) -> None:
        self.reward_kwargs = dict(reward_kwargs or {})
        self.__name__ = type(self).__name__

    def score_details(self, completions: Sequence[Any], **kwargs: Any) -> list[dict[str, Any]]:
        """Return the full result dict (``score``, ``acc``, ``pred``, components) per completion."""
        n = len(completions)
        contexts = [
            ScoreContext.build(completion_text(c), _ground_truth(rm), ds, ei)
            for c, rm, ei, ds in zip(
                completions,
                _column(kwargs, "reward_model", n),
                _column(kwargs, "extra_info", n, {}),
                _column(kwargs, "data_source", n, ""),
                strict=True,
            )
        ]
        return get_composite(self.reward_kwargs).score_many(contexts)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """Score a TRL batch and log component means and per-sample details."""
        results = self.score_details(completions, **kwargs)
        _log(results, kwargs.get("log_metric"), kwargs.get("log_extra"))
        return [r["score"] for r in results]


def _log(
    results: list[dict[str, Any]],
    log_metric: Callable[[str, float], None] | None,
    log_extra: Callable[[str, list], None] | None,
) -> None:
    if not results:
        return
    keys = [k for k in results[0] if k not in ("score", "pred")]
    if log_metric is not None:
        for key in keys:
            log_metric(METRIC_PREFIX + key, sum(r[key] for r in results) / len(results))
    if log_extra is not None:
        log_extra("pred", [r["pred"] for r in results])
        for key in keys:
            log_extra(key, [r[key] for r in results])


def make_trl_reward_funcs(reward_kwargs: Mapping[str, Any] | None = None) -> list[LogRLReward]:
    """Build the TRL ``reward_funcs`` list for ``GRPOTrainer``.

    Args:
        reward_kwargs: Same keys as the VeRL ``reward_kwargs`` (``preset``, ``weights``, …).
            ``class_weights`` act only with ``scale_rewards="none"`` (or ``"batch"``) in TRL.

    Returns:
        ``[LogRLReward(reward_kwargs)]`` — use with ``reward_weights`` unset (weight 1).

    Raises:
        ValueError: Bad ``reward_kwargs`` (checked eagerly).
    """
    get_composite(reward_kwargs)  # validate now, not at the first training step
    return [LogRLReward(reward_kwargs)]
