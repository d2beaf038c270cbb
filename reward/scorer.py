"""Compose components into the reward: ``score = Σ weight · value`` over the active terms.

:func:`get_composite` turns ``reward_kwargs`` into a :class:`CompositeReward` (cached per
distinct kwargs, so per-sample calls cost no rebuild). Its result dict always has ``score``,
``acc``, ``pred`` and one key per active component (the component's unweighted value; a gated
term that was not paid reports 0.0).

``reward_kwargs`` accepted:

* ``preset`` — a name in :data:`reward.presets.PRESETS` (default ``rationanomaly``);
* ``weights`` — ``{component: weight}``; 0 drops a term, a new name adds it;
* ``params`` — ``{component: {param: value}}`` overriding the preset's parameters;
* ``caught_anomaly``, ``correct_normal``, ``missed_anomaly``, ``false_alarm``, ``unknown`` —
  shorthands for ``params={"correctness": {...}}``;
* ``perplexity_model`` — local causal LM folder for the perplexity terms (dropped without it);
* ``perplexity_options`` — extra :class:`reward.perplexity.PerplexityScorer` arguments;
* ``class_weights`` — ``{abnormal: w_a, normal: w_n}``: the score of a sample is multiplied by
  the weight of its gold class (default 1.0 each). It reaches the policy gradient only with
  estimators that keep a per-group scale (see :mod:`reward.class_weights`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reward.class_weights import parse_class_weights
from reward.components import CorrectnessReward, _ModelComponent
from reward.context import ScoreContext
from reward.plain import plain
from reward.presets import COMPONENT_DEFAULTS, DEFAULT_PRESET, GATE_CORRECT, PRESETS, Term
from reward.registry import Component, build_component

logger = logging.getLogger(__name__)

CORRECTNESS_SHORTHANDS = ("caught_anomaly", "correct_normal", "missed_anomaly", "false_alarm", "unknown")
# Extra keyword arguments verl's reward managers may pass; accepted and ignored.
IGNORED_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
KNOWN_KWARGS = frozenset(
    {"preset", "weights", "params", "perplexity_model", "perplexity_options", "class_weights"}
) | frozenset(CORRECTNESS_SHORTHANDS)

NO_REFERENCE_KEY = "no_reference"
_warned: set[str] = set()
_warn_lock = threading.Lock()


@dataclass(frozen=True)
class ActiveTerm:
    """A built component with its weight and gate."""

    name: str
    weight: float
    gate: str
    component: Component


def _warn_once(topic: str, message: str, *args: Any) -> None:
    """Log ``message`` once per process and ``topic`` (re-armed by :func:`clear_cache`)."""
    with _warn_lock:
        if topic not in _warned:
            _warned.add(topic)
            logger.warning(message, *args)


def _warn_missing_model(names: Iterable[str]) -> None:
    names = ", ".join(sorted(names))
    _warn_once("model", "reward: no perplexity_model in reward_kwargs; running without %s", names)


def _warn_missing_reference(names: Iterable[str]) -> None:
    _warn_once(
        "reference",
        "reward: a row has no extra_info.reference_rationale; %s score it against an empty reference "
        "(counted in the '%s' metric, 1.0 per such row)",
        ", ".join(sorted(names)),
        NO_REFERENCE_KEY,
    )


def resolve_terms(reward_kwargs: Mapping[str, Any]) -> dict[str, Term]:
    """Resolve ``reward_kwargs`` into the final ``{component: Term}`` table (nothing built).

    Raises:
        ValueError: Unknown preset, keyword or component.
    """
    kwargs = plain(dict(reward_kwargs))
    unknown = set(kwargs) - KNOWN_KWARGS - IGNORED_KWARGS
    if unknown:
        raise ValueError(f"unknown reward_kwargs {sorted(unknown)}; known: {sorted(KNOWN_KWARGS)}")
    preset = kwargs.get("preset") or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; known: {sorted(PRESETS)}")
    terms = {
        name: Term(t.weight, dict(t.params), t.gate, t.needs_model) for name, t in PRESETS[preset].items()
    }
    for name, weight in (kwargs.get("weights") or {}).items():
        if name not in COMPONENT_DEFAULTS:
            raise ValueError(f"unknown reward component {name!r} in weights")
        base = terms.get(name, COMPONENT_DEFAULTS[name])
        terms[name] = Term(float(weight), dict(base.params), base.gate, base.needs_model)
    params = {k: dict(v) for k, v in (kwargs.get("params") or {}).items()}
    shorthand = {k: kwargs[k] for k in CORRECTNESS_SHORTHANDS if k in kwargs}
    if shorthand:
        params.setdefault("correctness", {}).update(shorthand)
    for name, overrides in params.items():
        if name not in terms:
            raise ValueError(f"params given for inactive reward component {name!r}")
        terms[name].params.update(overrides)
    terms = {name: term for name, term in terms.items() if term.weight != 0.0}
    model = kwargs.get("perplexity_model")
    needing = [name for name, term in terms.items() if term.needs_model]
    if needing and not model:
        _warn_missing_model(needing)
        terms = {name: term for name, term in terms.items() if not term.needs_model}
    for name in needing:
        if name in terms:
            terms[name].params.setdefault("model", str(model))
            terms[name].params.update(kwargs.get("perplexity_options") or {})
    return terms


def _composite_bounds(terms: Sequence[ActiveTerm]) -> tuple[float, float]:
    """Range of ``Σ weight · value``, the wider of two cases.

    Gated terms paid (so the answer is correct), or not (gated terms 0, correctness anything).
    """

    def span(term: ActiveTerm, low: float, high: float) -> tuple[float, float]:
        a, b = term.weight * low, term.weight * high
        return min(a, b), max(a, b)

    cases = []
    for paid in (False, True):
        total_low = total_high = 0.0
        for term in terms:
            if term.gate == GATE_CORRECT and not paid:
                continue
            component = term.component
            if paid and isinstance(component, CorrectnessReward):
                low, high = span(term, *component.correct_range)
            else:
                low, high = span(term, component.low, component.high)
            total_low, total_high = total_low + low, total_high + high
        cases.append((total_low, total_high))
    return min(low for low, _ in cases), max(high for _, high in cases)


class CompositeReward:
    """The weighted sum of active components for one resolved configuration.

    Args:
        terms: ``{component: Term}`` as returned by :func:`resolve_terms`.
        class_weights: ``{label: weight}`` multiplying the score by the gold class's weight.
    """

    def __init__(self, terms: Mapping[str, Term], class_weights: Mapping[str, float] | None = None) -> None:
        self.terms = [
            ActiveTerm(name, term.weight, term.gate, build_component(name, **term.params))
            for name, term in terms.items()
        ]
        self.class_weights = parse_class_weights(class_weights)
        self._reference_terms = [t.name for t in self.terms if getattr(t.component, "uses_reference", False)]
        extra = (NO_REFERENCE_KEY,) if self._reference_terms else ()
        self.keys = ("score", "acc", "pred", *(t.name for t in self.terms), *extra)
        self._correctness = next(
            (t.component for t in self.terms if isinstance(t.component, CorrectnessReward)), None
        )
        low, high = _composite_bounds(self.terms)
        self.low = min(w * low for w in self.class_weights.values())
        self.high = max(w * high for w in self.class_weights.values())

    def _paid(self, term: ActiveTerm, ctx: ScoreContext) -> bool:
        if term.gate != GATE_CORRECT:
            return True
        return self._correctness.judged_correct(ctx) if self._correctness else ctx.correct

    def _plan(self, ctx: ScoreContext) -> tuple[dict[str, float], list[ActiveTerm]]:
        """Compute every cheap term; return the values and the model terms still to score."""
        values: dict[str, float] = {}
        pending: list[ActiveTerm] = []
        for term in self.terms:
            if not self._paid(term, ctx):
                values[term.name] = 0.0
            elif isinstance(term.component, _ModelComponent):
                pending.append(term)
            else:
                values[term.name] = float(term.component(ctx))
        return values, pending

    def _finish(self, ctx: ScoreContext, values: dict[str, float]) -> dict[str, Any]:
        score = self.class_weights[ctx.ground_truth] * sum(t.weight * values[t.name] for t in self.terms)
        result: dict[str, Any] = {"score": float(score), "acc": 1.0 if ctx.correct else 0.0, "pred": ctx.pred}
        result.update((t.name, values[t.name]) for t in self.terms)
        if self._reference_terms:
            result[NO_REFERENCE_KEY] = 0.0 if ctx.has_reference else 1.0
            if not ctx.has_reference:
                _warn_missing_reference(self._reference_terms)
        return result

    def score(self, ctx: ScoreContext) -> dict[str, Any]:
        """Score one sample (model terms go through the shared micro-batcher)."""
        values, pending = self._plan(ctx)
        futures = [(t, t.component.submit(ctx)) for t in pending]
        for term, future in futures:
            values[term.name] = term.component.value(future.result())
        return self._finish(ctx, values)

    async def score_async(self, ctx: ScoreContext) -> dict[str, Any]:
        """Score one sample without blocking the event loop while the model runs."""
        values, pending = self._plan(ctx)
        futures = [(t, t.component.submit(ctx)) for t in pending]
        for term, future in futures:
            values[term.name] = term.component.value(await asyncio.wrap_future(future))
        return self._finish(ctx, values)

    def score_many(
        self, contexts: Sequence[ScoreContext], timings: dict[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """Score many samples; each model term runs once over all samples that need it.

        Args:
            contexts: Parsed samples.
            timings: When given, ``components`` and ``model`` seconds are added to it.
        """
        start = time.perf_counter()
        planned = [self._plan(ctx) for ctx in contexts]
        middle = time.perf_counter()
        model_terms = {t.name: t for _, pending in planned for t in pending}
        for name, term in model_terms.items():
            rows = [i for i, (_, pending) in enumerate(planned) if any(p.name == name for p in pending)]
            component = term.component
            log_ppls = component.scorer.log_perplexity_ids(component.encode([contexts[i] for i in rows]))
            for i, log_ppl in zip(rows, log_ppls, strict=True):
                planned[i][0][name] = component.value(log_ppl)
        end = time.perf_counter()
        results = [self._finish(ctx, values) for ctx, (values, _) in zip(contexts, planned, strict=True)]
        if timings is not None:
            timings["components"] = (
                timings.get("components", 0.0) + (middle - start) + (time.perf_counter() - end)
            )
            timings["model"] = timings.get("model", 0.0) + (end - middle)
        return results


_CACHE: dict[str, CompositeReward] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_LIMIT = 64


def get_composite(reward_kwargs: Mapping[str, Any] | None = None) -> CompositeReward:
    """Return the (cached) :class:`CompositeReward` for ``reward_kwargs``.

    Raises:
        ValueError: Bad configuration (unknown preset, component, keyword or parameter).
    """
    kwargs = {k: v for k, v in plain(dict(reward_kwargs or {})).items() if k not in IGNORED_KWARGS}
    key = json.dumps(kwargs, sort_keys=True, default=str)
    with _CACHE_LOCK:
        composite = _CACHE.get(key)
        if composite is None:
            composite = CompositeReward(resolve_terms(kwargs), kwargs.get("class_weights"))
            if len(_CACHE) >= _CACHE_LIMIT:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = composite
        return composite


def score_bounds(reward_kwargs: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """``(low, high)`` of the score for ``reward_kwargs``, from the configured components' ranges.

    Each term contributes ``weight × [low, high]`` of its component (a gated term may also
    contribute 0), times the class weights; the perplexity terms count only when
    ``perplexity_model`` is set, with the range their parameters give (nothing is loaded).

    >>> score_bounds({"preset": "answer_only"})
    (-2.7, 1.1)
    """
    composite = get_composite(reward_kwargs)
    return composite.low, composite.high


def clear_cache() -> None:
    """Forget every built :class:`CompositeReward` and re-arm the one-time warnings."""
    with _CACHE_LOCK:
        _CACHE.clear()
    with _warn_lock:
        _warned.clear()
