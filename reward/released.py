r"""RationAnomaly's released reward, rule by rule, as pure functions.

The released code (``verl/utils/reward_score/RationAnomaly/__init__.py`` in the paper's VeRL
fork) scores a response in five steps. This module reproduces each one, including its quirks, so
that the ``released`` preset returns the same number as the original on every response where the
original returns one (``tests/test_reward_released_oracle.py`` checks it against ``nltk``, the
``rouge`` 1.0.1 package and transformers' ``labels=`` loss). Where the original raises, the
choice made here is stated at the function.

1. **Format** (:func:`released_format_ok`): each of ``<think>``, ``</think>``, ``<answer>``,
   ``</answer>`` occurs exactly once (case-sensitive) and their first positions are in that order.
   Text before, between and after the tags is allowed.
2. **Extraction** (:func:`released_parts`): the last ``<think>(.*?)</think>`` and the last
   ``<answer>(.*?)</answer>`` (case-sensitive), each stripped.
3. **Answer** (:func:`released_answer_outcome`): ``answer.lower().strip()`` against the gold label;
   no punctuation removal, so ``Abnormal.`` is a plain mismatch.
4. **Think** (only paid when the answer matches): ``semantic + length + perplexity`` at weight 0.5,
   with ``semantic = (100·BLEU + 100·R1 + 100·R2 + 100·RL)/800 − 0.5`` where BLEU is ``nltk``'s
   unsmoothed ``sentence_bleu`` on the *strings* (so on characters) and ROUGE is the ``rouge``
   package's (sentences split on ``.``, whitespace words, case kept, n-gram *sets*, summary-level
   union LCS); ``length`` on characters; ``perplexity = (100 − PPL)/100`` of
   ``RELEASED_PPL_CONTEXT + "\n" + think``.
5. **Total**: ``format + answer + 0.5·think``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from reward.textmetrics import clipped_matches, ngram_counts

RELEASED_TAGS: Final = ("<think>", "</think>", "<answer>", "</answer>")
# The context the released code prepends to the think before scoring its perplexity (its typo kept).
RELEASED_PPL_CONTEXT: Final = "This is a log analysis task to determine if a log entry is normal or abnomal."
RELEASED_PPL_MAX_LENGTH: Final = 1024
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_F_EPSILON: Final = 1e-8  # the rouge package's F-measure denominator guard
_BLEU_ORDER: Final = 4

# Outcomes of the released answer rule (keys of the ``correctness`` component's values).
OUTCOME_CORRECT: Final = "correct"
OUTCOME_MISSED: Final = "missed_anomaly"
OUTCOME_FALSE_ALARM: Final = "false_alarm"
OUTCOME_OTHER: Final = "unknown"
OUTCOME_INVALID: Final = "invalid"


@dataclass(frozen=True)
class ReleasedParts:
    """What the released code reads from one response.

    Attributes:
        format_ok: Result of :func:`released_format_ok`.
        think: Last think block, stripped (``""`` when absent).
        answer: Last answer block, stripped (``None`` when absent).
    """

    format_ok: bool
    think: str
    answer: str | None


def released_format_ok(response: str) -> bool:
    """The released format rule: four case-sensitive tags, each once, first positions in order.

    >>> released_format_ok("Sure. <think>x</think> so <answer>normal</answer>.")
    True
    >>> released_format_ok("<THINK>x</THINK><ANSWER>normal</ANSWER>")
    False
    >>> released_format_ok("<answer>normal</answer><think>x</think>")
    False
    """
    if any(response.count(tag) != 1 for tag in RELEASED_TAGS):
        return False
    positions = [response.find(tag) for tag in RELEASED_TAGS]
    return positions == sorted(positions)


def _last_block(pattern: re.Pattern[str], text: str) -> str | None:
    matches = pattern.findall(text)
    return matches[-1].strip() if matches else None


def released_parts(response: str) -> ReleasedParts:
    """Read format, think and answer from ``response`` the way the released code does.

    >>> released_parts("<think> a </think><answer> Normal </answer>")
    ReleasedParts(format_ok=True, think='a', answer='Normal')
    """
    think = _last_block(_THINK_RE, response)
    return ReleasedParts(released_format_ok(response), think or "", _last_block(_ANSWER_RE, response))


def released_reference(value: object) -> str:
    """The reference think: the last ``<think>`` block of a full response, else the text, stripped.

    >>> released_reference("<think> why </think><answer>normal</answer>"), released_reference(" why ")
    ('why', 'why')
    """
    if not isinstance(value, str):
        return ""
    block = _last_block(_THINK_RE, value)
    return block if block is not None else value.strip()


def released_answer_outcome(parts: ReleasedParts, gold: str) -> str:
    """Classify the answer as the released code does.

    ``invalid`` when the format fails or the answer is empty; ``correct`` when
    ``answer.lower().strip() == gold``; ``missed_anomaly`` / ``false_alarm`` for exactly the other
    label; ``unknown`` for any other string (``Abnormal.``, ``uncertain``, ``...``).

    >>> p = released_parts("<think>x</think><answer>Abnormal.</answer>")
    >>> released_answer_outcome(p, "abnormal")
    'unknown'
    >>> released_answer_outcome(released_parts("<think>x</think><answer>normal</answer>"), "abnormal")
    'missed_anomaly'
    """
    if not parts.format_ok or not parts.answer:
        return OUTCOME_INVALID
    answer = parts.answer.lower().strip()
    if answer == gold:
        return OUTCOME_CORRECT
    if gold == "abnormal" and answer == "normal":
        return OUTCOME_MISSED
    if gold == "normal" and answer == "abnormal":
        return OUTCOME_FALSE_ALARM
    return OUTCOME_OTHER


# --- BLEU: nltk's sentence_bleu([reference], hypothesis) on strings, no smoothing ------------------


def nltk_string_bleu(reference: str, hypothesis: str) -> float:
    """``nltk.translate.bleu_score.sentence_bleu([reference], hypothesis)`` on two strings.

    Strings are sequences of characters, so this is character-level BLEU-4 with uniform weights
    and nltk's ``method0``: 0 when no character matches; an order without a match contributes
    ``log(sys.float_info.min)`` (a score of about 1e-77, not exactly 0).

    >>> nltk_string_bleu("abcde", "abcde")
    1.0
    >>> nltk_string_bleu("abc", ""), nltk_string_bleu("abc", "xyz")
    (0.0, 0.0)
    """
    numerators, denominators = [], []
    for n in range(1, _BLEU_ORDER + 1):
        hyp = ngram_counts(hypothesis, n)
        numerators.append(clipped_matches(hyp, ngram_counts(reference, n)))
        denominators.append(max(1, sum(hyp.values())))
    if numerators[0] == 0:
        return 0.0
    hyp_len, ref_len = len(hypothesis), len(reference)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    logs = (
        0.25 * math.log(num / den) if num else 0.25 * math.log(sys.float_info.min)
        for num, den in zip(numerators, denominators, strict=True)
    )
    return brevity * math.exp(math.fsum(logs))


# --- ROUGE: the `rouge` 1.0.1 package's get_scores(hyp, ref, avg=True), F-measures --------------


def rouge_sentences(text: str) -> list[str]:
    """Split like the ``rouge`` package: on ``.``, non-empty pieces, whitespace collapsed.

    A whitespace-only piece is kept and becomes an empty sentence (as in the package).

    >>> rouge_sentences("Disk  failed. Node down.")
    ['Disk failed', 'Node down']
    >>> rouge_sentences("..."), rouge_sentences("a. .b")
    ([], ['a', '', 'b'])
    """
    return [" ".join(piece.split()) for piece in text.split(".") if piece]


def _words(sentences: Sequence[str]) -> list[str]:
    return [word for sentence in sentences for word in sentence.split(" ")]


def _f_measure(precision: float, recall: float) -> float:
    return 2.0 * ((precision * recall) / (precision + recall + _F_EPSILON))


def _rouge_n(hyp_words: list[str], ref_words: list[str], n: int) -> float:
    hyp = set(ngram_counts(hyp_words, n))
    ref = set(ngram_counts(ref_words, n))
    overlap = len(hyp & ref)
    precision = overlap / len(hyp) if hyp else 0.0
    recall = overlap / len(ref) if ref else 0.0
    return _f_measure(precision, recall)


def lcs_tokens(x: Sequence[str], y: Sequence[str]) -> list[str]:
    """One longest common subsequence of ``x`` and ``y``, chosen as the ``rouge`` package does.

    Iterative (the package recurses once per step and raises ``RecursionError`` past ~1,000
    words). Ties go to ``y``'s side (the package moves along ``x`` only when that is strictly
    longer), which decides *which* LCS is returned and hence ROUGE-L's word set.

    >>> lcs_tokens("a b c d".split(), "a c b d".split())
    ['a', 'c', 'd']
    """
    rows, cols = len(x), len(y)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        previous, current, xi = table[i - 1], table[i], x[i - 1]
        for j in range(1, cols + 1):
            if xi == y[j - 1]:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
    out: list[str] = []
    i, j = rows, cols
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def _rouge_l_summary(hyp_sentences: list[str], ref_sentences: list[str]) -> float:
    """Summary-level ROUGE-L F with word *sets*: ``|∪ LCS(r_i, c_j)| / |words|``."""
    union: set[str] = set()
    hyp_split = [sentence.split(" ") for sentence in hyp_sentences]
    for ref_sentence in ref_sentences:
        ref_words = ref_sentence.split(" ")
        ref_set = set(ref_words)
        for hyp_words in hyp_split:
            # an LCS holds only words common to both sentences: skip pairs that cannot grow the union
            if not (ref_set & set(hyp_words)) <= union:
                union.update(lcs_tokens(ref_words, hyp_words))
    recall = len(union) / len(set(_words(ref_sentences)))
    precision = len(union) / len(set(_words(hyp_sentences)))
    return _f_measure(precision, recall)


def rouge_package_f(hypothesis: str, reference: str) -> tuple[float, float, float] | None:
    """ROUGE-1, ROUGE-2, ROUGE-L F of ``rouge.Rouge().get_scores(hypothesis, reference)``.

    Returns ``None`` where the package raises ``ValueError`` (either side has no sentence: empty
    or only dots).

    >>> rouge_package_f("the disk failed", "the disk failed")
    (0.999999995, 0.999999995, 0.999999995)
    >>> rouge_package_f("...", "the disk failed") is None
    True
    """
    hyp, ref = rouge_sentences(hypothesis), rouge_sentences(reference)
    if not hyp or not ref:
        return None
    hyp_words, ref_words = _words(hyp), _words(ref)
    return _rouge_n(hyp_words, ref_words, 1), _rouge_n(hyp_words, ref_words, 2), _rouge_l_summary(hyp, ref)


def released_semantic(think: str, reference: str) -> float:
    """``(100·BLEU + 100·R1 + 100·R2 + 100·RL)/800 − 0.5``, in ``[−0.5, 0]``.

    Where the ``rouge`` package raises (no sentence on a side) the released code crashed; here the
    three ROUGE terms count as 0, what ROUGE means for text with nothing to match.

    >>> released_semantic("", "the disk failed")
    -0.5
    """
    rouge = rouge_package_f(think, reference) or (0.0, 0.0, 0.0)
    bleu = nltk_string_bleu(reference, think)
    return sum([100 * bleu, 100 * rouge[0], 100 * rouge[1], 100 * rouge[2]]) / 800 - 0.5


def released_length(think: str, reference: str) -> float:
    """Character-length term: ``v = 2|P−R|/(P+R)``; ``+v`` when ``P > R`` and ``v < 1``, else ``−v``.

    Rewards a think longer than the reference up to 3×, then jumps to −1; 0 when both are empty
    (where the released code divided by zero).

    >>> released_length("aaaa", "aa"), released_length("aaaaaaa", "aa"), released_length("", "")
    (0.6666666666666666, -1.1111111111111112, 0.0)
    """
    produced, target = len(think), len(reference)
    if produced + target == 0:
        return 0.0
    variation = 2 * abs(produced - target) / (target + produced)
    return variation if produced > target and variation < 1 else -variation


def released_perplexity_text(think: str) -> str:
    r"""The text whose perplexity the released code scores: its fixed context, a newline, the think.

    >>> released_perplexity_text("disk failed").endswith("abnomal.\ndisk failed")
    True
    """
    return f"{RELEASED_PPL_CONTEXT}\n{think}"


def released_perplexity_term(ppl: float, max_ppl: float) -> float:
    """``(100 − PPL)/100`` with PPL capped at ``max_ppl`` (the one deviation, to stay finite).

    >>> released_perplexity_term(50.0, 1e6), released_perplexity_term(math.inf, 1e6)
    (0.5, -9999.0)
    """
    return (100 - min(ppl, max_ppl)) / 100
