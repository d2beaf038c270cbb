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
from reward.released import (
    OUTCOME_CORRECT,
    OUTCOME_INVALID,
    RELEASED_PPL_MAX_LENGTH,
    released_answer_outcome,
    released_length,
    released_perplexity_term,
    released_perplexity_text,
    released_semantic,
)
from reward.textmetrics import bleu, rouge_f1

_GROUNDING_TOKEN_RE = re.compile(r"[a-z]{3,}")
_WORDS_RE = re.compile(r"\S+")
RELEASED_PPL_CAP = 1e6
RULE_OURS = "ours"
RULE_RELEASED = "released"
RULES = (RULE_OURS, RULE_RELEASED)


def _ctx(text: str, gold: str = "abnormal", **extra: Any) -> ScoreContext:
    """Doctest helper: a context from a response text."""
    return ScoreContext.build(text, gold, "bgl", extra)


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    return rule


@register_component("format")
class FormatReward:
    """``valid`` when the response passes the format rule, else ``invalid``.

    ``rule="ours"``: :func:`reward.context.check_format` (the four tags once, in order, only
    whitespace around them, case-insensitive). ``rule="released"``:
    :func:`reward.released.released_format_ok` (case-sensitive, any text around the tags).
    Range: ``[min(valid, invalid), max(valid, invalid)]``.

    >>> f = FormatReward(valid=0.1, invalid=-0.5)
    >>> sure = _ctx("Sure. <think>x</think><answer>normal</answer>")
    >>> f(_ctx("<think>x</think><answer>normal</answer>")), f(sure)
    (0.1, -0.5)
    >>> FormatReward(rule="released")(_ctx("Sure. <think>x</think><answer>normal</answer>"))
    0.1
    """

    def __init__(self, valid: float = 0.1, invalid: float = -0.5, rule: str = RULE_OURS) -> None:
        self.valid, self.invalid = float(valid), float(invalid)
        self.rule = _check_rule(rule)
        self.low, self.high = min(self.valid, self.invalid), max(self.valid, self.invalid)

    def passes(self, ctx: ScoreContext) -> bool:
        """True when ``ctx``'s response passes this component's format rule."""
        return ctx.released.format_ok if self.rule == RULE_RELEASED else ctx.format_ok

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the response's format."""
        return self.valid if self.passes(ctx) else self.invalid


@register_component("correctness")
class CorrectnessReward:
    """Value of the parsed answer against the gold label.

    * ``caught_anomaly`` — gold abnormal, pred abnormal;  ``correct_normal`` — both normal;
    * ``missed_anomaly`` — gold abnormal, pred normal;    ``false_alarm`` — gold normal, pred
      abnormal;
    * ``unknown`` — any other answer string (a hedge such as ``uncertain``) or no answer;
    * ``invalid`` — when set, overrides everything whenever the format is invalid or the answer
      empty. ``None`` (ours) judges the last ``<answer>`` whatever the format.

    ``rule="ours"`` parses the answer with :func:`reward.parsing.parse_answer` (case and
    punctuation dropped: ``Abnormal.`` is ``abnormal``). ``rule="released"`` follows
    :func:`reward.released.released_answer_outcome` (``lower().strip()`` only, the released format
    rule, and ``invalid`` required).

    With ``strict_unknown`` (the default) construction fails unless ``unknown`` is at most the
    worst wrong class, so hedging never pays. Range: min to max of the values.

    >>> c = CorrectnessReward()
    >>> c(_ctx("<answer>abnormal</answer>")), c(_ctx("<answer>normal</answer>"))
    (1.0, -1.5)
    >>> c(_ctx("<answer>abnormal</answer>", "normal")), c(_ctx("<answer>maybe</answer>"))
    (-1.0, -2.2)
    """

    def __init__(
        self,
        caught_anomaly: float = 1.0,
        correct_normal: float = 1.0,
        missed_anomaly: float = -1.5,
        false_alarm: float = -1.0,
        unknown: float = -2.2,
        invalid: float | None = None,
        strict_unknown: bool = True,
        rule: str = RULE_OURS,
    ) -> None:
        self.rule = _check_rule(rule)
        if self.rule == RULE_RELEASED and invalid is None:
            raise ValueError("correctness rule 'released' needs an 'invalid' value")
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
        correct = (self.caught_anomaly, self.correct_normal)
        self.correct_range = (min(correct), max(correct))

    def invalid_applies(self, ctx: ScoreContext) -> bool:
        """True when the ``invalid`` override fires for ``ctx``."""
        if self.rule == RULE_RELEASED:
            return released_answer_outcome(ctx.released, ctx.ground_truth) == OUTCOME_INVALID
        return self.invalid is not None and (not ctx.format_ok or ctx.answer_empty)

    def judged_correct(self, ctx: ScoreContext) -> bool:
        """True when this component pays ``ctx`` as a correct answer."""
        if self.rule == RULE_RELEASED:
            return released_answer_outcome(ctx.released, ctx.ground_truth) == OUTCOME_CORRECT
        return ctx.correct and not self.invalid_applies(ctx)

    def _released_value(self, ctx: ScoreContext) -> float:
        outcome = released_answer_outcome(ctx.released, ctx.ground_truth)
        if outcome == OUTCOME_CORRECT:
            return self.caught_anomaly if ctx.is_abnormal else self.correct_normal
        return float(getattr(self, outcome))

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the answer."""
        if self.rule == RULE_RELEASED:
            return self._released_value(ctx)
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
    uses_reference = True

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
    uses_reference = True

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
    uses_reference = True

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
    """Shared plumbing for components that need the perplexity scorer.

    ``special_tokens`` and ``max_length`` say how the component's text is encoded (see
    :meth:`reward.perplexity.PerplexityScorer.encode`); ``None`` keeps the scorer's default length.
    """

    low: float
    high: float
    special_tokens: str = "bos"
    max_length: int | None = None

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

    def encode(self, contexts: list[ScoreContext]) -> list[list[int]]:
        """Token ids of each context's :meth:`text`, encoded the way this component scores them."""
        texts = [self.text(ctx) for ctx in contexts]
        return self.scorer.encode(texts, max_length=self.max_length, special_tokens=self.special_tokens)

    def submit(self, ctx: ScoreContext) -> Future:
        """Queue ``ctx``'s encoded text on the shared micro-batcher."""
        return self.scorer.submit_ids(self.encode([ctx])[0])

    def __call__(self, ctx: ScoreContext) -> float:
        """Score one context (through the micro-batcher)."""
        return self.value(self.submit(ctx).result())


@register_component("perplexity")
class PerplexityReward(_ModelComponent):
    """Fluency of ``p``: ``1 − min(log PPL, ln max_ppl) / ln max_ppl``.

    ``log PPL`` is the scorer's mean token NLL on the think (nats), after the tokenizer's BOS when
    it has one. Bounded in ``[0, 1]``: 1 at PPL 1, 0 at ``max_ppl`` or worse, and for an empty
    think. The released reward's ``(100 − PPL)/100`` is unbounded below; this is a bounded,
    monotone function of log-PPL.

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


# --- the released reward's think terms (reward/released.py holds the rules) --------------------


@register_component("semantic_released")
class SemanticReleased:
    """Released semantic term, :func:`reward.released.released_semantic` of the released think.

    ``(100·BLEU + 100·R1 + 100·R2 + 100·RL)/800 − 0.5`` with nltk's unsmoothed BLEU-4 on
    characters and the ``rouge`` package's ROUGE. Range ``[−0.5, 0]``.

    >>> same = _ctx("<think>same text here</think>", reference_rationale="same text here")
    >>> round(SemanticReleased()(same), 6)
    -0.0
    >>> SemanticReleased()(_ctx("<think></think>", reference_rationale="x"))
    -0.5
    """

    low, high = -0.5, 0.0
    uses_reference = True

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think against the reference rationale."""
        return released_semantic(ctx.released.think, ctx.released_reference)


@register_component("length_released")
class LengthReleased:
    """Released length term, :func:`reward.released.released_length` on character lengths.

    ``v = 2|P − R| / (P + R)``; ``+v`` when ``R < P < 3R``, else ``−v``: it rewards a think
    *longer* than the reference, growing towards +1 at 3R and then jumping to −1; a perfect
    length match scores 0. Range ``[−2, 1]``.

    >>> LengthReleased()(_ctx("<think>aaaa</think>", reference_rationale="aa"))
    0.6666666666666666
    >>> LengthReleased()(_ctx("<think>aaaaaaa</think>", reference_rationale="aa"))
    -1.1111111111111112
    """

    low, high = -2.0, 1.0
    uses_reference = True

    def __call__(self, ctx: ScoreContext) -> float:
        """Score the think's character length."""
        return released_length(ctx.released.think, ctx.released_reference)


@register_component("perplexity_released")
class PerplexityReleased(_ModelComponent):
    """Released perplexity term ``(100 − PPL) / 100``.

    As the released code: PPL is the exponentiated mean token loss over the fixed context
    sentence, a newline and the think (context tokens inside the loss), encoded by the tokenizer's
    own call (its special tokens: none for GPT-2), truncated at 1,024 tokens, scored in float32.
    One deviation, to stay finite: PPL is capped at ``max_ppl`` (1e6; the original is unbounded
    below). Range ``[(100 − max_ppl)/100, 0.99]``.

    >>> comp = PerplexityReleased("unused")
    >>> comp.value(0.0), round(comp.value(math.log(200.0)), 9), comp.value(math.inf)
    (0.99, -1.0, -9999.0)
    """

    high = 0.99
    special_tokens = "tokenizer"
    max_length = RELEASED_PPL_MAX_LENGTH

    def __init__(
        self, model: str, max_ppl: float = RELEASED_PPL_CAP, dtype: str = "float32", **scorer_options: Any
    ) -> None:
        super().__init__(model, dtype=dtype, **scorer_options)
        self.max_ppl = float(max_ppl)
        self.log_max_ppl = math.log(self.max_ppl)
        self.low = released_perplexity_term(math.inf, self.max_ppl)

    def text(self, ctx: ScoreContext) -> str:
        """The released code's perplexity text: its context sentence, a newline, the think."""
        return released_perplexity_text(ctx.released.think)

    def value(self, log_ppl: float) -> float:
        """Map a log-perplexity to the released term."""
        ppl = math.exp(log_ppl) if log_ppl < self.log_max_ppl else math.inf
        return released_perplexity_term(ppl, self.max_ppl)
