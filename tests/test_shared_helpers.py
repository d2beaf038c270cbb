"""One implementation per repeated job: plain values, text-metric argument order."""

from __future__ import annotations

import doctest
from collections import OrderedDict

import numpy as np
import pytest

HYPOTHESIS = "the disk failed"
REFERENCE = "the disk failed with an uncorrectable error on node seven"


def test_plain_converts_containers_numpy_and_mappings() -> None:
    from reward.plain import plain

    value = OrderedDict(a=np.array([1, 2]), b=(np.float32(0.5), "x"), c=np.int64(3))
    assert plain(value) == {"a": [1, 2], "b": [0.5, "x"], "c": 3}
    assert type(plain(value)["c"]) is int and plain("text") == "text"
    assert plain({1: [np.array([[1.0]])]}) == {"1": [[[1.0]]]}


def test_plain_doctest() -> None:
    import reward.plain

    assert doctest.testmod(reward.plain).failed == 0


def test_reward_and_data_stage_share_plain() -> None:
    from reward import scorer
    from verl_recipes.local.chat import rationales

    assert not hasattr(scorer, "_plain") and not hasattr(rationales, "_plain")
    assert not hasattr(rationales, "write_parquet")


@pytest.mark.parametrize("name", ["bleu", "rouge_l"])
def test_validation_metrics_take_hypothesis_first(name: str) -> None:
    from reward import textmetrics
    from validation import metrics

    ours = getattr(metrics, name)
    theirs = textmetrics.bleu if name == "bleu" else (lambda h, r: textmetrics.rouge_f1(h, r)[2])
    if name == "bleu":  # the order matters (ROUGE-L's F-measure is symmetric)
        assert theirs(HYPOTHESIS, REFERENCE) != theirs(REFERENCE, HYPOTHESIS)
    assert ours(HYPOTHESIS, REFERENCE) == pytest.approx(theirs(HYPOTHESIS, REFERENCE))
    assert ours(hypothesis=HYPOTHESIS, reference=REFERENCE) == pytest.approx(
        theirs(HYPOTHESIS, REFERENCE))


def test_rationale_metrics_take_hypotheses_first() -> None:
    from reward.textmetrics import bleu
    from validation.metrics import rationale_metrics

    got = rationale_metrics([HYPOTHESIS], [REFERENCE])
    assert got["bleu"] == pytest.approx(bleu(HYPOTHESIS, REFERENCE))
    assert rationale_metrics(hypotheses=[HYPOTHESIS], references=[REFERENCE]) == got
