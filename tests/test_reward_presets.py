"""The preset table: ordering guarantees proved from the table, bounds from the components."""

from __future__ import annotations

from pathlib import Path

import pytest

from reward import ABNORMAL, NORMAL, compute_score
from reward.presets import GATE_CORRECT, ORDERED_PRESETS, PRESETS
from reward.scorer import clear_cache, score_bounds

# Ranges of the components our presets pay for the think, written out from their formulas.
THINK_RANGES = {"bleu": (0, 1), "rouge": (0, 1), "length": (0, 1), "grounding": (0, 1), "perplexity": (0, 1)}


def _think_span(preset: str) -> tuple[float, float]:
    """Lowest and highest total of the gated (think) terms, perplexity included."""
    low = high = 0.0
    for name, term in PRESETS[preset].items():
        if term.gate != GATE_CORRECT:
            continue
        a, b = (term.weight * v for v in THINK_RANGES[name])
        low, high = low + min(a, b), high + max(a, b)
    return low, high


@pytest.mark.parametrize("preset", sorted(ORDERED_PRESETS))
def test_ordering_holds_for_every_preset_that_claims_it(preset: str) -> None:
    """valid+correct > invalid+correct > valid+wrong > any hedge, whatever the think terms pay."""
    fmt = PRESETS[preset]["format"].params
    answer = PRESETS[preset]["correctness"].params
    think_low, think_high = _think_span(preset)
    correct = (answer["caught_anomaly"], answer["correct_normal"])
    wrong = (answer["missed_anomaly"], answer["false_alarm"])
    valid_correct_min = fmt["valid"] + min(correct) + think_low
    invalid_correct_max = fmt["invalid"] + max(correct) + think_high
    invalid_correct_min = fmt["invalid"] + min(correct) + think_low
    valid_wrong_max = fmt["valid"] + max(wrong)
    invalid_wrong_min = fmt["invalid"] + min(wrong)
    hedge_max = fmt["valid"] + answer["unknown"]
    assert valid_correct_min > invalid_correct_max
    assert invalid_correct_min > valid_wrong_max
    assert invalid_wrong_min > hedge_max


def test_answer_before_think_no_longer_outscores_a_valid_response() -> None:
    """The review's case: a perfect think after the answer beat a valid response (1.2 vs 1.108)."""
    reference = "A kernel panic on node R02 is a fatal failure."
    extra = {"log": "kernel panic on node R02", "reference_rationale": reference}
    flipped = compute_score("bgl", f"<answer>abnormal</answer><think>{reference}</think>", ABNORMAL, extra)
    valid = compute_score("bgl", "<think>bad</think><answer>abnormal</answer>", ABNORMAL, extra)
    assert flipped["format"] < 0 < valid["format"]
    assert valid["score"] > flipped["score"]


# Hand-derived: format [invalid, valid] + correctness [min, max] (+ paid think terms when correct).
# rationanomaly: low −0.5 − 2.2; high 0.1 + 1 + 0.4 (0.5 with perplexity).
# released: low −1 − 1/0.15; high 0.1 + 1 + 0.5·(0 + 1) (+ 0.5·0.99); with perplexity the low is
# a correct answer with the worst think: −1 + 1 + 0.5·(−0.5 − 2 − 9999).
EXPECTED_BOUNDS = {
    ("rationanomaly", False): (-2.7, 1.5),
    ("rationanomaly", True): (-2.7, 1.6),
    ("symmetric", False): (-2.7, 1.5),
    ("answer_only", True): (-2.7, 1.1),
    ("released", False): (-1.0 - 1 / 0.15, 1.6),
    ("released", True): (-5000.75, 2.095),
}


@pytest.mark.parametrize(("preset", "with_model"), sorted(EXPECTED_BOUNDS))
def test_bounds_follow_the_configured_components(preset: str, with_model: bool) -> None:
    kwargs = {"preset": preset, **({"perplexity_model": "/not/loaded"} if with_model else {})}
    assert score_bounds(kwargs) == pytest.approx(EXPECTED_BOUNDS[(preset, with_model)])
    weighted = score_bounds({**kwargs, "class_weights": {"abnormal": 2.0, "normal": 1.0}})
    low, high = EXPECTED_BOUNDS[(preset, with_model)]
    assert weighted == pytest.approx((2 * low, 2 * high))


@pytest.fixture(scope="module")
def overconfident_scorer(tmp_path_factory: pytest.TempPathFactory, tiny_model_builder) -> Path:
    """A tiny GPT-2 whose embeddings are scaled ×200: confidently wrong, perplexity far above 1e6."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tiny_model_builder.build_tiny_causal_lm(
        tmp_path_factory.mktemp("overconfident"), arch="gpt2", vocab_size=384, hidden_size=32, num_layers=2,
        num_heads=2, seed=3, max_positions=1024,
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(200.0)
    model.save_pretrained(out)
    return out


def test_released_with_a_bad_scorer_stays_inside_its_computed_bounds(overconfident_scorer: Path) -> None:
    """The old table said −7.667 was the floor; with a perplexity model the score goes far below."""
    clear_cache()
    kwargs = {"preset": "released", "perplexity_model": str(overconfident_scorer),
              "perplexity_options": {"device": "cpu"}}
    extra = {"reference_rationale": "disk failure on node R02. The node halts."}
    thinks = ["disk failure on node R02", "zq xv kw pp", "The node halts. " * 20]
    scores = [compute_score("bgl", f"<think>{t}</think><answer>normal</answer>", NORMAL, extra, **kwargs)
              for t in thinks]
    low, high = score_bounds(kwargs)
    assert min(s["score"] for s in scores) < -7.667
    assert all(low <= s["score"] <= high for s in scores)
    assert min(s["perplexity_released"] for s in scores) == pytest.approx(-9999.0)


_REF = "A kernel panic halts the node. The entry signals a fatal failure."
_THINK = "The log reports a kernel panic. A kernel panic halts the node, a fatal failure."
README_ROWS = {
    "valid, correct": f"<think>{_THINK}</think><answer>abnormal</answer>",
    "text around the tags": f"Sure. <think>{_THINK}</think><answer>abnormal</answer>",
    "upper-case tags": f"<THINK>{_THINK}</THINK><ANSWER>abnormal</ANSWER>",
    "answer `Abnormal.`": f"<think>{_THINK}</think><answer>Abnormal.</answer>",
    "answer `...`": f"<think>{_THINK}</think><answer>...</answer>",
    "hedge `uncertain`": f"<think>{_THINK}</think><answer>uncertain</answer>",
    "wrong class (missed anomaly)": f"<think>{_THINK}</think><answer>normal</answer>",
    "answer before think": f"<answer>abnormal</answer><think>{_REF}</think>",
    "empty think, correct": "<think></think><answer>abnormal</answer>",
    "no tags": "abnormal",
    "truncated": f"<think>{_THINK}</think><answer>abnor",
}


def test_readme_example_table_matches_the_reward(repo_root: Path) -> None:
    """Every row of reward/README.md's "How the two presets differ" table, recomputed."""
    text = (repo_root / "reward" / "README.md").read_text(encoding="utf-8")
    section = text[text.index("How the two presets differ") :]
    table = section[section.index("\n| response") :].strip().split("\n\n")[0].splitlines()
    rows = {}
    for line in table[2:]:  # after the header and the |---| line
        name, ours, released = (cell.strip() for cell in line.strip("|").split("|"))
        rows[name] = (float(ours), float(released))
    assert set(rows) == set(README_ROWS)
    extra = {"log": "kernel panic on node R02", "reference_rationale": _REF}
    for name, response in README_ROWS.items():
        got = tuple(
            round(compute_score("bgl", response, ABNORMAL, extra, preset=p)["score"], 3)
            for p in ("rationanomaly", "released")
        )
        assert got == rows[name], name
