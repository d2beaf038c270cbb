"""Hand cases per preset, the reward's ordering guarantees, text metrics against their oracles."""

from __future__ import annotations

import doctest
import importlib
import logging
import random

import pytest

from reward import ABNORMAL, NORMAL, UNKNOWN, compute_score
from reward.presets import PRESETS
from reward.registry import available_components, build_component
from reward.scorer import clear_cache, get_composite
from reward.textmetrics import bleu_tokens, rouge_f1, word_tokens

THINK = "<think>The log reports a kernel panic on node R02, a fatal failure.</think>"
CORRECT = {g: f"{THINK}<answer>{g}</answer>" for g in (NORMAL, ABNORMAL)}
WRONG = {NORMAL: f"{THINK}<answer>abnormal</answer>", ABNORMAL: f"{THINK}<answer>normal</answer>"}
HEDGE = f"{THINK}<answer>uncertain</answer>"
NO_ANSWER = f"{THINK}"
TRUNCATED = "<think>The log reports a kernel"
EXTRA = {"log": "kernel panic on node R02", "reference_rationale": "A kernel panic is a fatal failure."}


def score(response: str, gold: str, **kwargs) -> dict:
    return compute_score("bgl", response, gold, dict(EXTRA), **kwargs)


# (preset, response, gold, expected score) — expected values written out from the formulas.
HAND_CASES = [
    ("released", WRONG[NORMAL], NORMAL, 0.1 - 1 / 0.15),  # −6.567
    ("released", WRONG[ABNORMAL], ABNORMAL, 0.1 - 1 / 0.15),
    ("released", "<answer>abnormal</answer>", NORMAL, -1.0 - 1 / 0.15),  # invalid format −7.667
    ("released", CORRECT[NORMAL].replace("<think>", ""), NORMAL, -1.0 - 1 / 0.15),
    ("released", HEDGE, NORMAL, -0.9),
    ("released", "<think>x</think><answer> </answer>", NORMAL, 0.1 - 1 / 0.15),  # empty answer
    ("released", f"{THINK}<answer>Abnormal.</answer>", ABNORMAL, 0.1 - 1.0),  # only lower().strip()
    ("released", "<THINK>x</THINK><ANSWER>normal</ANSWER>", NORMAL, -1.0 - 1 / 0.15),  # case-sensitive
    ("released", "Sure. " + WRONG[NORMAL], NORMAL, 0.1 - 1 / 0.15),  # text around the tags allowed
    ("rationanomaly", CORRECT[ABNORMAL].replace(THINK, ""), ABNORMAL, -0.5 + 1.0),
    ("rationanomaly", WRONG[ABNORMAL], ABNORMAL, 0.1 - 1.5),
    ("rationanomaly", WRONG[NORMAL], NORMAL, 0.1 - 1.0),
    ("rationanomaly", HEDGE, ABNORMAL, 0.1 - 2.2),
    ("rationanomaly", TRUNCATED, NORMAL, -0.5 - 2.2),
    ("rationanomaly", "", NORMAL, -0.5 - 2.2),
    ("symmetric", WRONG[ABNORMAL], ABNORMAL, 0.1 - 1.0),
    ("symmetric", WRONG[NORMAL], NORMAL, 0.1 - 1.0),
    ("answer_only", CORRECT[NORMAL], NORMAL, 1.1),
    ("answer_only", "<answer>Abnormal.</answer>", ABNORMAL, -0.5 + 1.0),
    ("answer_only", HEDGE, NORMAL, 0.1 - 2.2),
]


@pytest.mark.parametrize(("preset", "response", "gold", "expected"), HAND_CASES)
def test_hand_cases(preset: str, response: str, gold: str, expected: float) -> None:
    assert score(response, gold, preset=preset)["score"] == pytest.approx(expected, abs=1e-9)


def test_released_numbers_rounded() -> None:
    assert round(score(WRONG[NORMAL], NORMAL, preset="released")["score"], 3) == -6.567
    assert round(score("<answer>abnormal</answer>", NORMAL, preset="released")["score"], 3) == -7.667
    assert round(score(HEDGE, NORMAL, preset="released")["score"], 3) == -0.9


def test_released_think_terms_hand_worked() -> None:
    """Hand-worked: think "aaaa" vs reference "aa" (characters).

    BLEU (nltk, on characters): unigram 2/4, bigram 1/3, trigram and 4-gram 0 → float_info.min;
    so BLEU ≈ 1e-154, i.e. 0. ROUGE (rouge package): one sentence, word sets {aaaa} vs {aa}: 0.
    semantic = 0/800 − 0.5 = −0.5; length: v = 2·2/6 = 2/3, P > R and v < 1 → +2/3.
    score = 0.1 + 1 + 0.5·(−0.5 + 2/3).
    """
    extra = {"reference_rationale": "aa"}
    correct = compute_score("bgl", "<think>aaaa</think><answer>abnormal</answer>", ABNORMAL, extra,
                            preset="released")
    assert correct["semantic_released"] == pytest.approx(-0.5, abs=1e-12)
    assert correct["length_released"] == pytest.approx(2 / 3)
    assert correct["score"] == pytest.approx(1.1 + 0.5 * (-0.5 + 2 / 3))
    # same words, one repeated: rouge-1 on word *sets* is 1.0 (rouge-score's counts would give 0.8)
    twice = compute_score("bgl", "<think>disk disk failed</think><answer>abnormal</answer>", ABNORMAL,
                          {"reference_rationale": "disk failed"}, preset="released")
    wrong = compute_score("bgl", "<think>aaaa</think><answer>normal</answer>", ABNORMAL, extra,
                          preset="released")
    assert wrong["semantic_released"] == 0.0 and wrong["length_released"] == 0.0
    # 16 vs 11 characters: v = 2·5/27, P > R and v < 1 → +10/27. ROUGE by hand on word sets:
    # R1 {disk, failed} both sides → F = 2·(1/(2 + 1e-8)); R2 {disk disk, disk failed} vs
    # {disk failed} → P 1/2, R 1; RL: LCS words {disk, failed} of 2 and 2 distinct words → as R1.
    assert twice["length_released"] == pytest.approx(10 / 27)
    from nltk.translate.bleu_score import sentence_bleu

    f_one, f_two = 2 * (1 / (2 + 1e-8)), 2 * (0.5 / (1.5 + 1e-8))
    bleu = sentence_bleu(["disk failed"], "disk disk failed")
    expected = (100 * bleu + 100 * f_one + 100 * f_two + 100 * f_one) / 800 - 0.5
    assert twice["semantic_released"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("gold", [NORMAL, ABNORMAL])
@pytest.mark.parametrize("preset", ["rationanomaly", "symmetric", "answer_only"])
def test_orderings_per_gold(preset: str, gold: str) -> None:
    correct = score(CORRECT[gold], gold, preset=preset)["score"]
    wrong = score(WRONG[gold], gold, preset=preset)["score"]
    for bad in (HEDGE, NO_ANSWER, TRUNCATED, ""):
        unknown = score(bad, gold, preset=preset)
        assert unknown["pred"] == UNKNOWN
        assert correct > unknown["score"]
        assert unknown["score"] <= wrong
    assert correct > wrong


def test_unknown_never_beats_any_wrong_answer_even_across_formats() -> None:
    worst_wrong = min(
        score(r, g)["score"] for g in (NORMAL, ABNORMAL) for r in (WRONG[g], WRONG[g].replace("<think>", ""))
    )
    best_unknown = max(score(r, g)["score"] for g in (NORMAL, ABNORMAL) for r in (HEDGE, NO_ANSWER))
    assert best_unknown <= worst_wrong


def test_missed_anomaly_lower_than_false_alarm() -> None:
    missed = score(WRONG[ABNORMAL], ABNORMAL)
    false_alarm = score(WRONG[NORMAL], NORMAL)
    assert missed["score"] < false_alarm["score"]
    sym_missed = score(WRONG[ABNORMAL], ABNORMAL, preset="symmetric")["score"]
    assert sym_missed == pytest.approx(score(WRONG[NORMAL], NORMAL, preset="symmetric")["score"])


def test_same_keys_and_types() -> None:
    results = [score(r, g) for r in (CORRECT[NORMAL], HEDGE, "", TRUNCATED) for g in (NORMAL, ABNORMAL)]
    keys = {tuple(r) for r in results}
    assert keys == {
        ("score", "acc", "pred", "format", "correctness", "bleu", "rouge", "length", "grounding",
         "no_reference")
    }
    assert all(isinstance(r["pred"], str) and r["acc"] in (0.0, 1.0) for r in results)


def test_weights_params_and_shorthands() -> None:
    base = score(WRONG[ABNORMAL], ABNORMAL)
    assert score(WRONG[ABNORMAL], ABNORMAL, missed_anomaly=-1.8)["score"] == pytest.approx(
        base["score"] - 0.3
    )
    dropped = score(CORRECT[NORMAL], NORMAL, weights={"bleu": 0, "format": 2.0})
    assert (
        "bleu" not in dropped
        and dropped["score"] > score(CORRECT[NORMAL], NORMAL, weights={"bleu": 0})["score"]
    )
    added = score(CORRECT[NORMAL], NORMAL, preset="answer_only", weights={"grounding": 1.0})
    assert added["grounding"] == pytest.approx(1.0)
    tuned = score(CORRECT[NORMAL], NORMAL, preset="answer_only", params={"format": {"valid": 0.5}})
    assert tuned["score"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown reward_kwargs"):
        score(CORRECT[NORMAL], NORMAL, bogus=1)
    with pytest.raises(ValueError, match="unknown reward preset"):
        score(CORRECT[NORMAL], NORMAL, preset="nope")
    with pytest.raises(ValueError, match="worst wrong class"):
        score(CORRECT[NORMAL], NORMAL, unknown=0.0)
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("bgl", CORRECT[NORMAL], "maybe", {})


def test_class_weights_scale_the_score_of_their_gold_class() -> None:
    weights = {"abnormal": 2.0, "normal": 0.5}
    answer_only = {"preset": "answer_only", "class_weights": weights}
    # missed anomaly: 2 x (format 0.1 + correctness -1.5); false alarm: 0.5 x (0.1 - 1.0)
    assert score(WRONG[ABNORMAL], ABNORMAL, **answer_only)["score"] == pytest.approx(2.0 * (0.1 - 1.5))
    assert score(WRONG[NORMAL], NORMAL, **answer_only)["score"] == pytest.approx(0.5 * (0.1 - 1.0))
    assert score(CORRECT[ABNORMAL], ABNORMAL, **answer_only)["score"] == pytest.approx(2.0 * 1.1)
    # accuracy and component values are not weighted
    result = score(WRONG[ABNORMAL], ABNORMAL, **answer_only)
    assert (result["acc"], result["correctness"], result["format"]) == (0.0, -1.5, 0.1)
    # bounds of answer_only [-0.5 - 2.2, 0.1 + 1.0] scaled by the largest weight at both ends
    composite = get_composite(answer_only)
    assert (composite.low, composite.high) == pytest.approx((2.0 * -2.7, 2.0 * 1.1))


@pytest.mark.parametrize("bad", [{"anomalous": 2.0}, {"abnormal": 0.0}, {"normal": -1}, {"abnormal": "x"}])
def test_class_weights_reject_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="class_weights"):
        score(CORRECT[NORMAL], NORMAL, class_weights=bad)


def test_missing_perplexity_model_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    clear_cache()
    with caplog.at_level(logging.WARNING, logger="reward.scorer"):
        for preset in ("rationanomaly", "released", "symmetric"):
            result = score(CORRECT[NORMAL], NORMAL, preset=preset)
            assert "perplexity" not in result and "perplexity_released" not in result
    assert sum("perplexity_model" in r.message for r in caplog.records) == 1


def test_missing_reference_rationale_warns_once_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    clear_cache()
    bare = {"log": EXTRA["log"]}
    with caplog.at_level(logging.WARNING, logger="reward.scorer"):
        missing = [compute_score("bgl", CORRECT[NORMAL], NORMAL, bare) for _ in range(3)]
        present = compute_score("bgl", CORRECT[NORMAL], NORMAL, dict(EXTRA))
        blank = compute_score("bgl", CORRECT[NORMAL], NORMAL, {**bare, "reference_rationale": "  "})
    assert [r["no_reference"] for r in missing] == [1.0, 1.0, 1.0]
    assert (present["no_reference"], blank["no_reference"]) == (0.0, 1.0)
    assert missing[0]["bleu"] == 0.0 and present["bleu"] > 0.0
    assert sum("reference_rationale" in r.message for r in caplog.records) == 1
    # a preset without reference-based terms has no such key and logs nothing
    caplog.clear()
    clear_cache()
    with caplog.at_level(logging.WARNING, logger="reward.scorer"):
        assert "no_reference" not in compute_score("bgl", CORRECT[NORMAL], NORMAL, bare, preset="answer_only")
    assert not caplog.records


def test_registry_builds_only_named_components() -> None:
    composite = get_composite({"preset": "answer_only"})
    assert [t.name for t in composite.terms] == ["format", "correctness"]
    assert set(PRESETS) == {"rationanomaly", "released", "answer_only", "symmetric"}
    for name in ("format", "correctness", "bleu", "rouge", "length", "grounding", "perplexity"):
        assert name in available_components()
    with pytest.raises(ValueError, match="unknown reward component"):
        build_component("nope")


def _random_text(rng: random.Random, vocab: list[str], n: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def test_text_metrics_match_reference_packages() -> None:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    rng = random.Random(0)
    vocab = ["disk", "failed", "node", "kernel", "panic", ",", ".", "error", "ok", "R02", "link"]
    oracle = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    smooth = SmoothingFunction().method1
    for _ in range(60):
        hyp = _random_text(rng, vocab, rng.randint(1, 40))
        ref = _random_text(rng, vocab, rng.randint(1, 40))
        expected = oracle.score(ref, hyp)
        got = rouge_f1(hyp, ref)
        for value, key in zip(got, ("rouge1", "rouge2", "rougeL"), strict=True):
            assert value == pytest.approx(expected[key].fmeasure, abs=1e-12)
        h, r = word_tokens(hyp), word_tokens(ref)
        assert bleu_tokens(h, r) == pytest.approx(sentence_bleu([r], h, smoothing_function=smooth), abs=1e-12)


@pytest.mark.parametrize(
    "module",
    [
        "reward.textmetrics",
        "reward.context",
        "reward.components",
        "reward.parsing",
        "reward.labels",
        "reward.registry",
        "reward.trl_adapter",
        "reward.api",
        "reward.perplexity",
        "reward.released",
        "reward.scorer",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
