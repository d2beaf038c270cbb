"""Fast, exception-free text similarity: word-level BLEU and ROUGE-1/2/L.

The hot path of the reward scores thousands of ~300-word rationales per step. ``rouge-score``
takes about 10 ms per pair (a pure-Python O(n·m) LCS table) and ``nltk`` BLEU about 1 ms, which
caps the reward far below its 2,000 responses/s target. This module computes the same numbers:

* :func:`rouge_f1` uses ``rouge-score``'s default tokenisation (lower-case, ``[a-z0-9]+`` tokens,
  no stemming) and F-measures; ROUGE-L uses a bit-parallel LCS (Allison–Dix / Hyyrö) on Python
  integers, O(n·⌈m/64⌉) word operations.
* :func:`bleu` is ``nltk``'s ``sentence_bleu`` with uniform 4-gram weights and
  ``SmoothingFunction().method1`` (ε = 0.1), on regex word tokens.

``tests/test_reward_textmetrics.py`` checks both against the reference packages on random text.
Empty or punctuation-only text gives 0.0, never an exception (the released reward crashed there).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
BLEU_EPSILON = 0.1
BLEU_MAX_ORDER = 4


def rouge_tokens(text: str) -> list[str]:
    """Tokenise like ``rouge-score``'s default tokenizer (lower-case ``[a-z0-9]+`` runs).

    >>> rouge_tokens("Kernel PANIC at 0x1f!")
    ['kernel', 'panic', 'at', '0x1f']
    """
    return _ROUGE_TOKEN_RE.findall(text.lower())


def word_tokens(text: str) -> list[str]:
    """Tokenise into lower-cased words and single punctuation marks (for BLEU).

    >>> word_tokens("Link failed, retrying.")
    ['link', 'failed', ',', 'retrying', '.']
    """
    return _WORD_RE.findall(text.lower())


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-grams of ``tokens`` (any sequence: a string gives character n-grams).

    >>> ngram_counts("abab", 2)
    Counter({('a', 'b'): 2, ('b', 'a'): 1})
    """
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


def clipped_matches(hyp: Counter, ref: Counter) -> int:
    """Clipped n-gram matches: ``Σ min(hyp[g], ref[g])``."""
    if len(ref) < len(hyp):
        hyp, ref = ref, hyp
    get = ref.get
    return sum(min(count, get(gram, 0)) for gram, count in hyp.items())


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0 or n_hyp == 0 or n_ref == 0:
        return 0.0
    precision, recall = overlap / n_hyp, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel).

    >>> lcs_length("a b c d".split(), "a c d e".split())
    3
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        match = masks.get(token, 0)
        low = row & match
        row = ((row + low) | (row - low)) & full
    return len(a) - row.bit_count()


def rouge_f1(hypothesis: str, reference: str) -> tuple[float, float, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures, identical to ``rouge-score`` without stemming.

    Returns ``(0.0, 0.0, 0.0)`` when either side has no ``[a-z0-9]`` token.

    >>> rouge_f1("the disk failed", "the disk has failed")
    (0.8571428571428571, 0.4, 0.8571428571428571)
    >>> rouge_f1("...", "anything")
    (0.0, 0.0, 0.0)
    """
    hyp, ref = rouge_tokens(hypothesis), rouge_tokens(reference)
    if not hyp or not ref:
        return 0.0, 0.0, 0.0
    r1 = _f1(clipped_matches(ngram_counts(hyp, 1), ngram_counts(ref, 1)), len(hyp), len(ref))
    r2 = _f1(clipped_matches(ngram_counts(hyp, 2), ngram_counts(ref, 2)), max(len(hyp) - 1, 0),
             max(len(ref) - 1, 0))
    rl = _f1(lcs_length(ref, hyp), len(hyp), len(ref))
    return r1, r2, rl


def bleu_tokens(hypothesis: Sequence[str], reference: Sequence[str], smooth: bool = True) -> float:
    """Sentence BLEU-4 on token lists, as ``nltk``'s ``sentence_bleu`` with one reference.

    With ``smooth`` (default) zero n-gram counts get ``method1`` smoothing (ε = 0.1); without it
    (the released reward) any zero count makes the score 0.

    >>> round(bleu_tokens("a b c d e".split(), "a b c d e".split()), 6)
    1.0
    >>> bleu_tokens([], ["a"]), bleu_tokens(["x"], ["a"])
    (0.0, 0.0)
    >>> bleu_tokens("a b c".split(), "a b c".split(), smooth=False)
    0.0
    """
    if not hypothesis or not reference:
        return 0.0
    log_sum = 0.0
    for n in range(1, BLEU_MAX_ORDER + 1):
        overlap = clipped_matches(ngram_counts(hypothesis, n), ngram_counts(reference, n))
        if overlap == 0 and (n == 1 or not smooth):
            return 0.0
        denominator = max(1, len(hypothesis) - n + 1)
        numerator = overlap if overlap > 0 else BLEU_EPSILON
        log_sum += math.log(numerator / denominator) / BLEU_MAX_ORDER
    hyp_len, ref_len = len(hypothesis), len(reference)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_sum)


def bleu(hypothesis: str, reference: str) -> float:
    """Word-level smoothed BLEU-4 of two texts, in ``[0, 1]``; 0.0 for empty text.

    >>> bleu("the link went down", "the link went down")
    1.0
    >>> bleu("", "the link")
    0.0
    """
    return min(1.0, bleu_tokens(word_tokens(hypothesis), word_tokens(reference)))
