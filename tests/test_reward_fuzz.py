"""Property-based fuzzing: arbitrary output never breaks the reward (100k-run: benchmarks/fuzz_reward.py)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reward import LABELS, PREDICTIONS, compute_score
from reward.presets import PRESETS
from reward.scorer import get_composite

TAGS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<THINK>",
    "<answer >",
    "normal",
    "abnormal",
    "Normal.",
    "ABNORMAL!",
    "uncertain",
    " ",
    "\n",
    ".",
    "…",
    "<",
    ">",
    "/",
]
LONG_THINK = "<think>" + " ".join(["word"] * 10_000) + "</think><answer>normal</answer>"
LONG_NO_BREAK = "<think>" + "a" * 50_000 + "</think><answer>abnormal</answer>"

fragments = st.one_of(st.sampled_from(TAGS), st.text(max_size=30))
responses = st.lists(fragments, max_size=40).map("".join)
references = st.one_of(st.none(), st.text(max_size=200), responses)
extras = st.fixed_dictionaries(
    {"log": st.one_of(st.none(), st.text(max_size=80)), "reference_rationale": references}
)


def check(response: str, gold: str, extra: dict, preset: str) -> None:
    result = compute_score("bgl", response, gold, extra, preset=preset)
    composite = get_composite({"preset": preset})
    assert tuple(result) == composite.keys
    assert result["pred"] in PREDICTIONS and result["acc"] in (0.0, 1.0)
    low, high = composite.low, composite.high
    assert math.isfinite(result["score"]) and low - 1e-9 <= result["score"] <= high + 1e-9
    for term in composite.terms:
        assert term.component.low - 1e-9 <= result[term.name] <= term.component.high + 1e-9


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses, st.sampled_from(LABELS), extras, st.sampled_from(sorted(PRESETS)))
@example(LONG_THINK, "normal", {"log": "x", "reference_rationale": "short reason"}, "rationanomaly")
@example(LONG_NO_BREAK, "abnormal", {"log": None, "reference_rationale": "a" * 900}, "released")
@example(
    "<think></think><answer>normal</answer>", "normal", {"log": "", "reference_rationale": "..."}, "released"
)
@example(
    "<think>!!!</think><answer>normal</answer>",
    "normal",
    {"log": "", "reference_rationale": ""},
    "rationanomaly",
)
@example(
    "<think><think>a</think></think><answer><answer>abnormal</answer></answer>",
    "abnormal",
    {"log": "a", "reference_rationale": None},
    "symmetric",
)
def test_fuzz_never_raises_and_stays_bounded(response: str, gold: str, extra: dict, preset: str) -> None:
    check(response, gold, extra, preset)


def test_non_string_inputs_are_unknown() -> None:
    for bad in (None, 3, b"<answer>normal</answer>"):
        result = compute_score("bgl", bad, "normal", None)
        assert result["pred"] == "unknown" and math.isfinite(result["score"])
