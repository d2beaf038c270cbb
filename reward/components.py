"""Registered reward components. Each documents its formula and range and has a doctest.

Notation: ``p`` is the response's think text, ``r`` the reference rationale
(``extra_info['reference_rationale']``), ``gold`` the label and ``pred`` the parsed answer.
Components never raise on malformed model output.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import Future
from typing import Any

from reward.context import ScoreContext
from reward.labels import LABELS
from reward.registry import register_component
from reward.textmetrics import bleu, bleu_tokens, rouge_f1

_GROUNDING_TOKEN_RE = re.compile(r"[a-z]{3,}")
_WORDS_RE = re.compile(r"\S+")
RELEASED_PPL_CAP = 1e6


def _ctx(text: str, gold: str = "abnormal", **extra: Any) -> ScoreContext:
    """Doctest helper: a context from a response text."""
    return ScoreContext.build(text, gold, "bgl", extra)


@register_component("format")
class FormatReward:
    """``valid`` when :func:`reward.context.check_format` passes, else ``invalid``.

    Range: ``[min(valid, invalid), max(valid, invalid)]``.

    >>> f = FormatReward(valid=0.1, invalid=-0.2)
    >>> f(_ctx("<think>x</think><answer>normal</answer>")), f(_ctx("<answer>normal</answer>"))
    (0.1, -0.2)
    """

    def __init__(self, valid: float = 0.1, invalid: float = -0.2) -> None:
        self.valid, self.invalid = float(valid), float(invalid)
        self.low, self.high = min(self.valid, self.invalid), max(self.valid, self.invalid)

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the response's format."""
        return self.valid if ctx.format_ok else self.invalid


@register_component("correctness")
class CorrectnessReward:
    """Value of the parsed answer against the gold label.

    * ``caught_anomaly`` — gold abnormal, pred abnormal;  ``correct_normal`` — both normal;
    * ``missed_anomaly`` — gold abnormal, pred normal;    ``false_alarm`` — gold normal, pred
      abnormal;
    * ``unknown`` — any other answer string (a hedge such as ``uncertain``) or no answer;
    * ``invalid`` — when set (the released reward), overrides everything whenever the format is
      invalid or the answer empty. ``None`` (ours) judges the last ``<answer>`` whatever the format.

    With ``strict_unknown`` (the default) construction fails unless ``unknown`` is at most the
    worst wrong class, so hedging never pays. Range: min to max of the values.

    >>> c = CorrectnessReward()
    >>> c(_ctx("<answer>abnormal</answer>")), c(_ctx("<answer>normal</answer>"))
    (1.0, -1.5)
    >>> c(_ctx("<answer>abnormal</answer>", "normal")), c(_ctx("<answer>maybe</answer>"))
    (-1.0, -2.0)
    """

    def __init__(
        self,
        caught_anomaly: float = 1.0,
        correct_normal: float = 1.0,
        missed_anomaly: float = -1.5,
        false_alarm: float = -1.0,
        unknown: float = -2.0,
        invalid: float | None = None,
        strict_unknown: bool = True,
    ) -> None:
        self.caught_anomaly, self.correct_normal = float(caught_anomaly), float(correct_normal)
        self.missed_anomaly, self.false_alarm = float(missed_anomaly), float(false_alarm)
        self.unknown = float(unknown)
        self.invalid = None if invalid is None else float(invalid)
        if strict_unknown and self.unknown > min(self.missed_anomaly, self.false_alarm):
            raise ValueError(
                f"unknown ({self.unknown}) must not exceed the worst wrong class "
                f"({min(self.missed_anomaly, self.false_alarm)}); pass strict_unknown=False to allow"
            )
        values = [self.caught_anomaly, self.correct_normal, self.missed_anomaly]
        values += [self.false_alarm, self.unknown] + ([] if self.invalid is None else [self.invalid])
        self.low, self.high = min(values), max(values)

    def invalid_applies(self, ctx: ScoreContext) -> bool:
        """True when the ``invalid`` override fires for ``ctx``."""
        return self.invalid is not None and (not ctx.format_ok or ctx.answer_empty)

    def judged_correct(self, ctx: ScoreContext) -> bool:
        """True when this component pays ``ctx`` as a correct answer."""
        return ctx.correct and not self.invalid_applies(ctx)

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the parsed answer."""
        if self.invalid is not None and self.invalid_applies(ctx):
            return self.invalid
        if ctx.pred not in LABELS:
            return self.unknown
        if ctx.correct:
            return self.caught_anomaly if ctx.is_abnormal else self.correct_normal
        return self.missed_anomaly if ctx.is_abnormal else self.false_alarm


@register_component("bleu")
class BleuReward:
    """Word-level smoothed BLEU-4 of ``p`` against ``r`` (:func:`reward.textmetrics.bleu`).

    Range ``[0, 1]``; 0 when either text is empty.

    >>> BleuReward()(_ctx("<think>disk failure on node</think>", reference_rationale="disk failure on node"))
    1.0
    """

    low, high = 0.0, 1.0

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think against the reference rationale."""
        return bleu(ctx.think, ctx.reference)


@register_component("rouge")
class RougeReward:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F-measures of ``p`` against ``r``.

    Range ``[0, 1]``; 0 for empty or punctuation-only text.

    >>> RougeReward()(_ctx("<think>...</think>", reference_rationale="disk failure"))
    0.0
    >>> RougeReward()(_ctx("<think>disk failure</think>", reference_rationale="disk failure"))
    1.0
    """

    low, high = 0.0, 1.0

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think against the reference rationale."""
        return sum(rouge_f1(ctx.think, ctx.reference)) / 3.0


@register_component("length")
class LengthReward:
    """``min(|p|, L) / max(|p|, L)`` in whitespace words, ``L`` = reference length.

    ``L`` falls back to ``target_words`` when there is no reference. Peaks at 1 when the lengths
    match, decays smoothly on both sides, 0 for an empty think. Range ``[0, 1]``.

    >>> LengthReward()(_ctx("<think>a b</think>", reference_rationale="a b c d"))
    0.5
    >>> LengthReward(target_words=2)(_ctx("<think>a b c d</think>"))
    0.5
    """

    low, high = 0.0, 1.0

    def __init__(self, target_words: int = 110) -> None:
        self.target_words = max(1, int(target_words))

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think's length."""
        produced = len(_WORDS_RE.findall(ctx.think))
        target = len(_WORDS_RE.findall(ctx.reference)) or self.target_words
        if produced == 0:
            return 0.0
        return min(produced, target) / max(produced, target)


@register_component("grounding")
class GroundingReward:
    """Share of the log's words (``[a-z]{3,}``, lower-cased) that the think mentions.

    ``|words(log) ∩ words(p)| / |words(log)|``: the paper's factual grounding, a rationale that
    talks about the log it classifies. Range ``[0, 1]``; 0 without a log.

    >>> GroundingReward()(_ctx("<think>the kernel panic means trouble</think>", log="Kernel panic at 0x1"))
    1.0
    """

    low, high = 0.0, 1.0

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think's overlap with the log."""
        log_words = set(_GROUNDING_TOKEN_RE.findall(ctx.log.lower()))
        if not log_words:
            return 0.0
        think_words = set(_GROUNDING_TOKEN_RE.findall(ctx.think.lower()))
        return len(log_words & think_words) / len(log_words)


class _ModelComponent:
    """Shared plumbing for components that need the perplexity scorer."""

    low: float
    high: float

    def __init__(self, model: str, **scorer_options: Any) -> None:
        self.model_path = str(model)
        self.scorer_options = scorer_options
        self._scorer = None

    @property
    def scorer(self):
        """The process-wide scorer for this component's model (loaded on first use)."""
        if self._scorer is None:
            from reward.perplexity import get_scorer

            self._scorer = get_scorer(self.model_path, **self.scorer_options)
        return self._scorer

    def value(self, log_ppl: float) -> float:
        """Map a log-perplexity to this component's value."""
        raise NotImplementedError

    def text(self, ctx: ScoreContext) -> str:
        """The text whose perplexity is scored: the rationale (think) only."""
        return ctx.think

    def submit(self, ctx: ScoreContext) -> Future:
        """Queue ``ctx``'s text on the shared micro-batcher."""
        return self.scorer.submit(self.text(ctx))

    def __call__(self, ctx: ScoreContext) -> float:
        """Score one context (through the micro-batcher)."""
        return self.value(self.submit(ctx).result())


@register_component("perplexity")
class PerplexityReward(_ModelComponent):
    """Fluency of ``p``: ``1 − min(log PPL, ln max_ppl) / ln max_ppl``.

    ``log PPL`` is the scorer's mean token NLL on the think (nats). Bounded in ``[0, 1]``:
    1 at PPL 1, 0 at ``max_ppl`` or worse, and for an empty think. The released reward's
    ``(100 − PPL)/100`` is unbounded below; this is a bounded, monotone function of log-PPL.

    >>> comp = PerplexityReward("unused")
    >>> comp.value(0.0), comp.value(math.log(1000.0)), comp.value(math.inf)
    (1.0, 0.0, 0.0)
    """

    low, high = 0.0, 1.0

    def __init__(self, model: str, max_ppl: float = 1000.0, **scorer_options: Any) -> None:
        super().__init__(model, **scorer_options)
        self.log_max = math.log(max(max_ppl, 1.0 + 1e-9))

    def value(self, log_ppl: float) -> float:
        """Map a log-perplexity to ``[0, 1]``."""
        if not math.isfinite(log_ppl):
            return 0.0
        return 1.0 - min(max(log_ppl, 0.0), self.log_max) / self.log_max


# --- the released reward's components, reproduced with their quirks -------------------------


@register_component("semantic_released")
class SemanticReleased:
    """Released semantic term: ``(BLEU_char + ROUGE-1 + ROUGE-2 + ROUGE-L) / 8 − 0.5``.

    Quirks kept: BLEU-4 is computed on *characters* without smoothing (so almost any pair
    scores ~0 BLEU… or close to 1 for near copies), the sum is halved twice. Quirk fixed: the
    released ROUGE package raised on empty/punctuation-only text and hit RecursionError on long
    unbroken text; here those give 0 similarity. Range ``[−0.5, 0]``.

    >>> SemanticReleased()(_ctx("<think>same text here</think>", reference_rationale="same text here"))
    0.0
    >>> SemanticReleased()(_ctx("<think></think>", reference_rationale="x"))
    -0.5
    """

    low, high = -0.5, 0.0

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think against the reference rationale."""
        char_bleu = bleu_tokens(list(ctx.think), list(ctx.reference), smooth=False)
        return (char_bleu + sum(rouge_f1(ctx.think, ctx.reference))) / 8.0 - 0.5


@register_component("length_released")
class LengthReleased:
    """Released length term on character lengths ``P = len(p)``, ``R = len(r)``.

    ``v = 2|P − R| / (P + R)``; the term is ``+v`` when ``R < P < 3R`` and ``−v`` otherwise.
    Quirks kept: it rewards answers *longer* than the reference, growing towards +1 at 3R and
    then jumping to −1; a perfect length match scores 0. Range ``[−2, 1]`` (0 when both empty).

    >>> LengthReleased()(_ctx("<think>aaaa</think>", reference_rationale="aa"))
    0.6666666666666666
    >>> LengthReleased()(_ctx("<think>aaaaaaa</think>", reference_rationale="aa"))
    -1.1111111111111112
    """

    low, high = -2.0, 1.0

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think's character length."""
        produced, reference = len(ctx.think), len(ctx.reference)
        if produced + reference == 0:
            return 0.0
        v = 2.0 * abs(produced - reference) / (produced + reference)
        return v if reference < produced < 3 * reference else -v


@register_component("perplexity_released")
class PerplexityReleased(_ModelComponent):
    """Released perplexity term ``(100 − PPL) / 100``.

    Quirk kept: unbounded below (PPL 1,000 gives −9). To stay finite, PPL is capped at
    ``1e6`` (and an empty think counts as that cap). Range ``[−9999, 0.99]``.

    >>> comp = PerplexityReleased("unused")
    >>> comp.value(0.0), comp.value(math.log(200.0)), comp.value(math.inf)
    (0.99, -1.0, -9999.0)
    """

    low, high = (100.0 - RELEASED_PPL_CAP) / 100.0, 0.99

    def value(self, log_ppl: float) -> float:
        """Map a log-perplexity to the released term."""
        if not math.isfinite(log_ppl):
            return (100.0 - RELEASED_PPL_CAP) / 100.0
        ppl = min(math.exp(min(log_ppl, 50.0)), RELEASED_PPL_CAP)
        return round((100.0 - ppl) / 100.0, 12)
