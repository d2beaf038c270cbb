"""Pure metric functions shared by evaluation and detection (``metrics.json`` format).

``abnormal`` is the positive class. A prediction is ``normal``, ``abnormal`` or ``unknown``; how an
``unknown`` is scored is one of :data:`UNKNOWN_CONVENTIONS`:

* ``wrong`` (default): an ``unknown`` is the opposite of the gold label, i.e. a miss (false
  negative) for an abnormal gold and a false alarm (false positive) for a normal gold.
* ``normal``: an ``unknown`` is read as ``normal`` (the reference implementation's convention).

Either way ``unknown_rate`` (the fraction of predictions that were ``unknown``) is reported.

A ratio whose denominator is zero is **undefined**: ``None`` (``null`` in ``metrics.json``,
``n/a`` in print, see :func:`format_metric`), never ``0.0``. So precision is undefined when
nothing was predicted abnormal, recall when no gold label is abnormal, and every rate when no
item was evaluated (``n == 0``, e.g. no session judged). F1 is ``2·tp / (2·tp + fp + fn)``
(the harmonic mean of precision and recall where both are defined; ``0.0`` when one of them is
``0.0`` and the other undefined), undefined only when there is no abnormal gold or prediction at
all; macro-F1 averages the F1 of the classes for which it is defined, as scikit-learn averages
over the labels present.

>>> m = binary_metrics(["abnormal", "normal", "normal"], ["abnormal", "unknown", "normal"])
>>> m["precision"], m["recall"], m["accuracy"], round(m["unknown_rate"], 3), m["n"]
(0.5, 1.0, 0.6666666666666666, 0.333, 3)
>>> binary_metrics(["normal"], ["unknown"], unknown_as="normal")["accuracy"]
1.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reward.labels import ABNORMAL, LABELS, NORMAL, PREDICTIONS, UNKNOWN

UNKNOWN_CONVENTIONS: tuple[str, ...] = ("wrong", NORMAL)

# What a session does when some of its templates have no prediction (``--missing-template-rule``).
# ``skip`` is what RationAnomaly's released evaluation does (validation/model_evaluate.py,
# get_ses_eval: a session with a template outside the test predictions is dropped whole).
MISSING_TEMPLATE_RULES: dict[str, str] = {
    "skip": "sessions with any template lacking a prediction are left out (coverage reports "
            "them; RationAnomaly's rule)",
    UNKNOWN: "a template without a prediction counts as an unknown answer",
    NORMAL: "a template without a prediction counts as normal",
    "ignore": "decide from the predicted templates only; sessions with none predicted are left out",
}

METRIC_KEYS: tuple[str, ...] = (
    "precision", "recall", "f1", "accuracy", "macro_f1", "unknown_rate", "n",
)


def _ratio(num: float, den: float) -> float | None:
    """Return ``num / den``, or ``None`` (undefined) when ``den`` is zero.

    >>> _ratio(1, 4), _ratio(0, 0)
    (0.25, None)
    """
    return float(num) / float(den) if den else None


def _f1(tp: int, fp: int, fn: int) -> float | None:
    """F1 of one class from its counts, ``2·tp / (2·tp + fp + fn)``; ``None`` when all are zero.

    >>> _f1(1, 1, 0), _f1(0, 0, 3), _f1(0, 0, 0)
    (0.6666666666666666, 0.0, None)
    """
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when none is."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def format_metric(value: Any, digits: int = 4) -> str:
    """Print form of a metric: floats with ``digits`` decimals, ``n/a`` when undefined (``None``).

    >>> format_metric(0.5), format_metric(None), format_metric(12), format_metric(1 / 3, 3)
    ('0.5000', 'n/a', '12', '0.333')
    """
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def resolve_prediction(gold: str, pred: str, unknown_as: str = "wrong") -> str:
    """Map one prediction to ``normal``/``abnormal`` under an unknown convention.

    Args:
        gold: Gold label (``normal`` or ``abnormal``).
        pred: Parsed prediction (``normal``, ``abnormal`` or ``unknown``).
        unknown_as: One of :data:`UNKNOWN_CONVENTIONS`.

    Returns:
        The prediction as a gold-style label.

    Raises:
        ValueError: On a gold label or prediction outside the shared label strings.

    >>> resolve_prediction("abnormal", "unknown"), resolve_prediction("normal", "unknown")
    ('normal', 'abnormal')
    """
    if gold not in LABELS:
        raise ValueError(f"gold label must be one of {LABELS}, got {gold!r}")
    if pred not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {pred!r}")
    if unknown_as not in UNKNOWN_CONVENTIONS:
        raise ValueError(f"unknown_as must be one of {UNKNOWN_CONVENTIONS}, got {unknown_as!r}")
    if pred != UNKNOWN:
        return pred
    if unknown_as == NORMAL:
        return NORMAL
    return NORMAL if gold == ABNORMAL else ABNORMAL


def confusion_counts(
    gold: Sequence[str], pred: Sequence[str], unknown_as: str = "wrong"
) -> dict[str, int]:
    """Count true/false positives/negatives with ``abnormal`` positive.

    Args:
        gold: Gold labels.
        pred: Parsed predictions, aligned with ``gold``.
        unknown_as: One of :data:`UNKNOWN_CONVENTIONS`.

    Returns:
        ``{"tp", "fp", "fn", "tn", "unknown"}`` counts.

    Raises:
        ValueError: When the sequences differ in length or hold foreign strings.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    counts = Counter()
    for g, p in zip(gold, pred, strict=True):
        resolved = resolve_prediction(g, p, unknown_as)
        key = ("t" if resolved == g else "f") + ("p" if resolved == ABNORMAL else "n")
        counts[key] += 1
        counts["unknown"] += p == UNKNOWN
    return {k: int(counts[k]) for k in ("tp", "fp", "fn", "tn", "unknown")}


def metrics_from_counts(counts: Mapping[str, int]) -> dict[str, float | int | None]:
    """Turn confusion counts into the metric dict of ``metrics.json``.

    Args:
        counts: ``tp``, ``fp``, ``fn``, ``tn`` and ``unknown`` counts.

    Returns:
        ``precision``, ``recall``, ``f1`` (abnormal positive), ``accuracy``, ``macro_f1`` (mean of
        the abnormal-positive and normal-positive F1 where defined), ``unknown_rate`` and ``n``;
        a metric with a zero denominator is ``None`` (see the module docstring).

    >>> metrics_from_counts({"tp": 1, "fp": 1, "fn": 0, "tn": 2, "unknown": 0})["f1"]
    0.6666666666666666
    """
    tp, fp, fn, tn = (int(counts.get(k, 0)) for k in ("tp", "fp", "fn", "tn"))
    n = tp + fp + fn + tn
    f1 = _f1(tp, fp, fn)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": f1,
        "accuracy": _ratio(tp + tn, n),
        "macro_f1": _mean_defined((f1, _f1(tn, fn, fp))),
        "unknown_rate": _ratio(int(counts.get("unknown", 0)), n),
        "n": n,
    }


def binary_metrics(
    gold: Sequence[str], pred: Sequence[str], unknown_as: str = "wrong"
) -> dict[str, float | int | None]:
    """Precision, recall, F1, accuracy, macro-F1 and unknown rate with ``abnormal`` positive.

    Args:
        gold: Gold labels (``normal``/``abnormal``).
        pred: Parsed predictions (``normal``/``abnormal``/``unknown``), aligned with ``gold``.
        unknown_as: ``wrong`` (default) or ``normal``; see the module docstring.

    Returns:
        The metric dict (keys :data:`METRIC_KEYS`) plus the raw ``tp``/``fp``/``fn``/``tn``.
    """
    counts = confusion_counts(gold, pred, unknown_as)
    out: dict[str, float | int | None] = dict(metrics_from_counts(counts))
    out.update({k: counts[k] for k in ("tp", "fp", "fn", "tn")})
    return out


def confusion_matrix(gold: Sequence[str], pred: Sequence[str]) -> list[list[int]]:
    """Raw 2×3 confusion matrix: rows gold (normal, abnormal), columns predicted (+ unknown).

    >>> confusion_matrix(["normal", "abnormal"], ["unknown", "abnormal"])
    [[0, 0, 1], [0, 1, 0]]
    """
    matrix = [[0] * len(PREDICTIONS) for _ in LABELS]
    for g, p in zip(gold, pred, strict=True):
        matrix[LABELS.index(g)][PREDICTIONS.index(p)] += 1
    return matrix


def vote(preds: Iterable[str]) -> str:
    """Majority vote over several predictions of one template; a tie is ``unknown``.

    >>> vote(["abnormal", "abnormal", "normal"]), vote(["normal", "abnormal"]), vote([])
    ('abnormal', 'unknown', 'unknown')
    """
    ranked = Counter(preds).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return UNKNOWN
    return ranked[0][0]


def session_prediction(template_preds: Iterable[str]) -> str:
    """Combine a session's template predictions: abnormal if any is abnormal.

    Otherwise ``unknown`` when any template is unknown, else ``normal``. How the ``unknown`` is
    then scored is the caller's unknown convention.

    >>> session_prediction(["normal", "unknown"]), session_prediction(["unknown", "abnormal"])
    ('unknown', 'abnormal')
    """
    preds = set(template_preds)
    if ABNORMAL in preds:
        return ABNORMAL
    return UNKNOWN if UNKNOWN in preds else NORMAL


def session_outcomes(
    sessions: Sequence[tuple[Sequence[str], str]],
    template_pred: Mapping[str, str],
    missing_rule: str = "skip",
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Gold and predicted labels of the sessions a missing-template rule keeps.

    Args:
        sessions: ``(templates, gold_label)`` per session.
        template_pred: Template text → parsed prediction.
        missing_rule: A key of :data:`MISSING_TEMPLATE_RULES`.

    Returns:
        ``(gold, pred, coverage)`` where ``coverage`` holds ``n_sessions`` (all sessions),
        ``coverage`` (evaluated / all), ``complete_sessions`` (sessions whose templates all have
        predictions), ``template_coverage`` (distinct session templates with a prediction /
        distinct session templates) and ``missing_template_rule``.

    Raises:
        ValueError: On an unknown rule.

    >>> session_outcomes([(["a", "b"], "abnormal"), (["c"], "normal")], {"a": "normal", "b": "abnormal"})
    (['abnormal'], ['abnormal'], {'n_sessions': 2, 'coverage': 0.5, 'complete_sessions': 1, \
'template_coverage': 0.6666666666666666, 'missing_template_rule': 'skip'})
    """
    if missing_rule not in MISSING_TEMPLATE_RULES:
        raise ValueError(f"missing_rule must be one of {sorted(MISSING_TEMPLATE_RULES)}")
    gold: list[str] = []
    pred: list[str] = []
    complete = 0
    distinct: set[str] = set()
    for templates, label in sessions:
        distinct.update(templates)
        known = [template_pred[t] for t in templates if t in template_pred]
        missing = len(known) < len(templates)
        complete += not missing
        if (missing and missing_rule == "skip") or (not known and missing_rule == "ignore"):
            continue
        if missing and missing_rule in (UNKNOWN, NORMAL):
            known += [missing_rule] * (len(templates) - len(known))
        gold.append(label)
        pred.append(session_prediction(known))
    coverage = {
        "n_sessions": len(sessions),
        "coverage": _ratio(len(gold), len(sessions)),
        "complete_sessions": complete,
        "template_coverage": _ratio(sum(t in template_pred for t in distinct), len(distinct)),
        "missing_template_rule": missing_rule,
    }
    return gold, pred, coverage


def session_metrics(
    sessions: Sequence[tuple[Sequence[str], str]],
    template_pred: Mapping[str, str],
    unknown_as: str = "wrong",
    missing_rule: str = "skip",
) -> dict[str, Any]:
    """Session-level metrics from per-template predictions.

    A session is abnormal if any template is predicted abnormal, else unknown if any is unknown,
    else normal (:func:`session_prediction`); the unknown convention then scores it.

    Args:
        sessions: ``(templates, gold_label)`` per session.
        template_pred: Template text → parsed prediction.
        unknown_as: Unknown convention, see the module docstring.
        missing_rule: A key of :data:`MISSING_TEMPLATE_RULES`.

    Returns:
        The metric dict over the evaluated sessions plus the coverage keys of
        :func:`session_outcomes`.
    """
    gold, pred, coverage = session_outcomes(sessions, template_pred, missing_rule)
    out: dict[str, Any] = binary_metrics(gold, pred, unknown_as)
    out.update(coverage)
    return out


def bleu(hypothesis: str, reference: str) -> float:
    """Sentence BLEU-4 (NLTK ``method1`` smoothing) of ``hypothesis`` against ``reference``.

    The arguments come in the order of :func:`reward.textmetrics.bleu`, which computes it.

    >>> bleu("the disk failed with an error", "the disk failed with an error")
    1.0
    """
    from reward.textmetrics import bleu as _bleu

    return float(_bleu(hypothesis, reference))


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure (as ``rouge-score`` without stemming) of ``hypothesis`` against ``reference``.

    The arguments come in the order of :func:`reward.textmetrics.rouge_f1`, which computes it.

    >>> rouge_l("a b c d", "a b c d")
    1.0
    """
    from reward.textmetrics import rouge_f1

    return float(rouge_f1(hypothesis, reference)[2])


def rationale_metrics(hypotheses: Sequence[str],
                      references: Sequence[str]) -> dict[str, float | int | None]:
    """Mean BLEU and ROUGE-L of generated rationales against reference rationales.

    Args:
        hypotheses: Generated rationale texts (the ``<think>`` parts).
        references: Reference rationale texts, aligned with ``hypotheses``.

    Returns:
        ``{"bleu", "rouge_l", "n"}``; the means are ``None`` (undefined) with ``n == 0``.
    """
    pairs = list(zip(hypotheses, references, strict=True))
    if not pairs:
        return {"bleu": None, "rouge_l": None, "n": 0}
    return {
        "bleu": sum(bleu(hypothesis=h, reference=r) for h, r in pairs) / len(pairs),
        "rouge_l": sum(rouge_l(hypothesis=h, reference=r) for h, r in pairs) / len(pairs),
        "n": len(pairs),
    }
