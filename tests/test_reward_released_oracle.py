"""The `released` preset against an oracle built from the libraries RationAnomaly's code calls.

The oracle below restates the released reward (``verl/utils/reward_score/RationAnomaly/__init__.py``
in the paper's VeRL fork) step by step and computes every number with the published libraries:
``nltk``'s ``sentence_bleu`` on the raw strings, ``rouge.Rouge`` 1.0.1 and transformers' own
``labels=`` loss of the scorer model. It imports nothing from ``reward`` except to call the preset.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import warnings
from pathlib import Path

import pytest

from reward import ABNORMAL, NORMAL, compute_score
from reward.context import ScoreContext
from reward.scorer import clear_cache, get_composite

rouge_package = pytest.importorskip("rouge")
torch = pytest.importorskip("torch")

CONTEXT = "This is a log analysis task to determine if a log entry is normal or abnomal."
TAGS = ("<think>", "</think>", "<answer>", "</answer>")

REFERENCES = {
    ABNORMAL: "The log reports a kernel panic on node R02. A kernel panic halts the node, so the entry "
    "signals a fatal failure.",
    NORMAL: "The message records a routine link check on node R02. Nothing failed and no error code "
    "appears.",
}
THINKS = [
    "The log reports a kernel panic on node R02. A kernel panic halts the node, so the entry signals a "
    "fatal failure.",
    "A kernel panic on R02 halts the node. This is a fatal failure",
    "kernel panic kernel panic kernel panic. node node node.",
    "The Message records a routine LINK check. nothing failed.\nNo error code appears.",
    "short",
    "Routine check, nothing failed, no error code: the node R02 is fine and the link is up and the check "
    "passed on time with every counter at zero and no retry needed at all, so this entry is normal.",
    "no sentence breaks here just words about a panic on a node that halts and fails",
    "Disk. . failed",
    "The log reports a kernel panic on node R02 which halts the node and signals a fatal failure "
    "of the kernel on that node; a panic is never routine.",
]


def _wrap(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


RESPONSES: list[tuple[str, str]] = [
    *[(_wrap(t, ABNORMAL), ABNORMAL) for t in THINKS],
    *[(_wrap(t, NORMAL), NORMAL) for t in THINKS[3:7]],
    (_wrap(THINKS[0], NORMAL), ABNORMAL),  # missed anomaly
    (_wrap(THINKS[3], ABNORMAL), NORMAL),  # false alarm
    (_wrap(THINKS[0], "Abnormal."), ABNORMAL),  # punctuation: a plain mismatch for the original
    (_wrap(THINKS[0], "ABNORMAL"), ABNORMAL),
    (_wrap(THINKS[3], "  Normal \n"), NORMAL),
    (_wrap(THINKS[0], "..."), ABNORMAL),
    (_wrap(THINKS[0], "uncertain"), NORMAL),
    (_wrap(THINKS[0], " "), ABNORMAL),  # empty answer
    ("Sure. " + _wrap(THINKS[0], ABNORMAL) + " Hope this helps.", ABNORMAL),
    ("<THINK>" + THINKS[0] + "</THINK><ANSWER>abnormal</ANSWER>", ABNORMAL),
    (_wrap(THINKS[0], ABNORMAL) + "<answer>normal</answer>", ABNORMAL),  # two answers
    ("<answer>abnormal</answer><think>" + THINKS[0] + "</think>", ABNORMAL),  # answer first
    ("<think>" + THINKS[0] + "<answer>abnormal</answer>", ABNORMAL),  # unclosed think
    (_wrap(THINKS[0], ABNORMAL)[: -len("</answer>")], ABNORMAL),  # truncated
    ("", NORMAL),
    ("abnormal", ABNORMAL),
    ("<think>x</think>\n\n<answer>normal</answer>", NORMAL),
    ("<think>" + THINKS[1] + "</think> therefore <answer>abnormal</answer>", ABNORMAL),
    ("<THINK>ignored</THINK><think>" + THINKS[2] + "</think><answer>abnormal</answer>", ABNORMAL),
    (_wrap(" ".join(["panic"] * 40) + ".", ABNORMAL), ABNORMAL),
]


def _original_rouge(hypothesis: str, reference: str) -> tuple[float, float, float]:
    scores = rouge_package.Rouge().get_scores(hypothesis, reference, avg=True)
    return scores["rouge-1"]["f"], scores["rouge-2"]["f"], scores["rouge-l"]["f"]


class Oracle:
    """The released reward, restated; every number from nltk, rouge and transformers."""

    def __init__(self, model_path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)

    def perplexity(self, think: str) -> float:
        inputs = self.tokenizer(f"{CONTEXT}\n{think}", return_tensors="pt", padding=True, truncation=True,
                                max_length=1024)
        with torch.no_grad():
            loss = self.model(**inputs, labels=inputs["input_ids"]).loss
        return torch.exp(loss).item()

    def think_score(self, reference: str, think: str) -> float:
        from nltk.translate.bleu_score import sentence_bleu

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bleu = sentence_bleu([reference], think, weights=(0.25, 0.25, 0.25, 0.25))
        r1, r2, rl = _original_rouge(think, reference)
        semantic = sum([100 * bleu, 100 * r1, 100 * r2, 100 * rl]) / 800 - 0.5
        variation = 2 * abs(len(think) - len(reference)) / (len(reference) + len(think))
        length = variation if len(think) > len(reference) and variation < 1 else -variation
        return semantic + length + (100 - self.perplexity(think)) / 100

    def score(self, response: str, gold: str, reference: str) -> float:
        valid = all(response.count(tag) == 1 for tag in TAGS)
        first = [response.find(tag) for tag in TAGS]
        if first[0] > first[1] or first[1] > first[2] or first[2] > first[3]:
            valid = False
        answers = re.findall(r"<answer>(.*?)</answer>", response, re.DOTALL)
        thinks = re.findall(r"<think>(.*?)</think>", response, re.DOTALL)
        think = thinks[-1].strip() if answers and thinks else None
        answer = answers[-1].strip() if answers and thinks else None
        think_score = 0.0
        if valid and answer:
            think_score = self.think_score(reference, think)
            said = answer.lower().strip()
            answer_score = 1.0 if said == gold else -1.0
            if (gold, said) in ((ABNORMAL, NORMAL), (NORMAL, ABNORMAL)):
                answer_score = answer_score / 0.15
        else:
            answer_score = -1.0 / 0.15
        if answer_score < 0:
            think_score = 0.0
        return (0.1 if valid else -1.0) + answer_score + 0.5 * think_score


@pytest.fixture(scope="module")
def oracle(tiny_scorer_model: Path) -> Oracle:
    return Oracle(tiny_scorer_model)


@pytest.fixture
def released(tiny_scorer_model: Path) -> dict:
    clear_cache()
    return {"preset": "released", "perplexity_model": str(tiny_scorer_model),
            "perplexity_options": {"device": "cpu"}}


def _extra(gold: str, full_reference: bool) -> dict:
    reference = REFERENCES[gold]
    text = f"<think> {reference} </think><answer>{gold}</answer>" if full_reference else reference
    return {"log": "kernel panic on node R02", "reference_rationale": text}


def test_at_least_thirty_responses_and_every_branch_covered(oracle: Oracle) -> None:
    assert len(RESPONSES) >= 30
    scores = [oracle.score(r, g, REFERENCES[g]) for r, g in RESPONSES]
    branches = {round(s, 3) for s in scores}
    # invalid format, valid + wrong class, valid + other string, and think-paid answers all occur
    fixed = {-7.667, -6.567, -0.9}
    assert fixed <= branches and sum(round(s, 3) not in fixed for s in scores) >= 10


def test_released_preset_equals_the_original_on_every_response(oracle: Oracle, released: dict) -> None:
    composite = get_composite(released)
    contexts = [ScoreContext.build(r, g, "bgl", _extra(g, i % 2 == 0)) for i, (r, g) in enumerate(RESPONSES)]
    batched = composite.score_many(contexts)
    for i, ((response, gold), result) in enumerate(zip(RESPONSES, batched, strict=True)):
        expected = oracle.score(response, gold, REFERENCES[gold])
        single = compute_score("bgl", response, gold, _extra(gold, i % 2 == 1), **released)["score"]
        assert result["score"] == pytest.approx(expected, rel=1e-6), response
        assert single == pytest.approx(expected, rel=1e-6), response


def test_the_issue_examples(oracle: Oracle, released: dict) -> None:
    """Text around the tags is allowed, tags are case-sensitive, answers are only lower-cased."""
    sure = "Sure. " + _wrap(THINKS[0], ABNORMAL)
    upper = "<THINK>" + THINKS[0] + "</THINK><ANSWER>abnormal</ANSWER>"
    for response, expected in ((upper, -1.0 - 1 / 0.15), (_wrap(THINKS[0], "Abnormal."), -0.9),
                               (_wrap(THINKS[0], "..."), -0.9)):
        assert compute_score("bgl", response, ABNORMAL, _extra(ABNORMAL, False), **released)["score"] == (
            pytest.approx(expected))
    got = compute_score("bgl", sure, ABNORMAL, _extra(ABNORMAL, False), **released)["score"]
    assert got > -6.567 and got == pytest.approx(oracle.score(sure, ABNORMAL, REFERENCES[ABNORMAL]), rel=1e-6)


@pytest.mark.parametrize("think", ["", "...", " . "])
def test_where_rouge_raises_ours_scores_rouge_as_zero(oracle: Oracle, released: dict, think: str) -> None:
    """The original raises ValueError (no sentence for the rouge package); ours: ROUGE terms 0."""
    response, reference = _wrap(think, ABNORMAL), REFERENCES[ABNORMAL]
    with pytest.raises(ValueError):
        oracle.score(response, ABNORMAL, reference)
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bleu = sentence_bleu([reference], think.strip(), weights=(0.25,) * 4)
    stripped = think.strip()
    variation = 2 * abs(len(stripped) - len(reference)) / (len(reference) + len(stripped))
    perplexity_term = (100 - oracle.perplexity(stripped)) / 100
    expected = 0.1 + 1.0 + 0.5 * ((100 * bleu) / 800 - 0.5 - variation + perplexity_term)
    got = compute_score("bgl", response, ABNORMAL, _extra(ABNORMAL, False), **released)
    assert math.isfinite(got["score"]) and got["score"] == pytest.approx(expected, rel=1e-6)
    # a wrong answer never pays the think, so the crash-free value is just format + answer
    wrong = compute_score("bgl", _wrap(think, NORMAL), ABNORMAL, _extra(ABNORMAL, False), **released)
    assert wrong["score"] == pytest.approx(0.1 - 1 / 0.15)


def test_long_think_equals_the_original_without_its_recursion_limit(oracle: Oracle, released: dict) -> None:
    """The rouge package recurses once per LCS step: ~1,000 words without a period raise
    RecursionError. Ours gives the value the package computes when given room to recurse."""
    think = " ".join(f"kernel panic on node R{i % 50:02d} halts" for i in range(260))
    response = _wrap(think, ABNORMAL)
    with pytest.raises(RecursionError):
        oracle.score(response, ABNORMAL, think)
    result: dict[str, float] = {}

    def deep() -> None:
        sys.setrecursionlimit(20_000)
        result["expected"] = oracle.score(response, ABNORMAL, think)

    limit, size = sys.getrecursionlimit(), threading.stack_size(256 * 1024 * 1024)
    try:
        worker = threading.Thread(target=deep)
        worker.start()
        worker.join()
    finally:
        sys.setrecursionlimit(limit)
        threading.stack_size(size)
    extra = {"reference_rationale": think}
    got = compute_score("bgl", response, ABNORMAL, extra, **released)["score"]
    assert got == pytest.approx(result["expected"], rel=1e-6)
