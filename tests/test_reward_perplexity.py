"""Perplexity scorer: one load per process, batching across concurrent calls, gating, TRL adapter."""

from __future__ import annotations

import asyncio
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reward import ABNORMAL, NORMAL, compute_score
from reward.api import compute_score_async
from reward.perplexity import clear_scorers, get_scorer
from reward.scorer import clear_cache
from reward.trl_adapter import LogRLReward, make_trl_reward_funcs

THINKS = [
    "The log reports a kernel panic on the node, which is a fatal failure.",
    "A routine heartbeat message with no error keyword.",
    "Instruction cache parity error corrected; the hardware recovered.",
    "Link failure detected between two nodes, the job aborted.",
]


def response(i: int, answer: str) -> str:
    return f"<think>{THINKS[i % len(THINKS)]} step {i}</think><answer>{answer}</answer>"


@pytest.fixture
def fresh_scorer(tiny_scorer_model: Path):
    clear_scorers()
    clear_cache()
    scorer = get_scorer(tiny_scorer_model, device="cpu", max_wait_ms=200.0)
    yield scorer
    clear_scorers()
    clear_cache()


def kwargs_for(model: Path, preset: str = "rationanomaly") -> dict:
    return {"preset": preset, "perplexity_model": str(model), "perplexity_options": {"device": "cpu"}}


def test_batched_log_perplexity_matches_single(fresh_scorer) -> None:
    texts = [*THINKS, "", "x"]
    batched = fresh_scorer.log_perplexity(texts)
    single = [fresh_scorer.log_perplexity([t])[0] for t in texts]
    for a, b in zip(batched, single, strict=True):
        assert (math.isinf(a) and math.isinf(b)) or a == pytest.approx(b, abs=1e-4)
    assert all(math.isfinite(v) and v > 0 for v in batched[:4])


def test_scorer_loaded_once_per_process(tiny_scorer_model: Path, fresh_scorer) -> None:
    assert get_scorer(tiny_scorer_model, device="cpu") is fresh_scorer


def test_sixteen_concurrent_async_calls_share_forward_passes(tiny_scorer_model: Path, fresh_scorer) -> None:
    kwargs = kwargs_for(tiny_scorer_model)

    async def run_all():
        return await asyncio.gather(
            *(
                compute_score_async("bgl", response(i, NORMAL), NORMAL, {"log": "kernel"}, **kwargs)
                for i in range(16)
            )
        )

    before = fresh_scorer.forward_passes
    results = asyncio.run(run_all())
    passes = fresh_scorer.forward_passes - before
    assert 1 <= passes <= 2
    assert all(0.0 < r["perplexity"] <= 1.0 for r in results)
    # same values as one-at-a-time scoring
    solo = compute_score("bgl", response(3, NORMAL), NORMAL, {"log": "kernel"}, **kwargs)
    assert solo["perplexity"] == pytest.approx(results[3]["perplexity"], abs=1e-4)


def test_concurrent_sync_calls_from_threads_batch(tiny_scorer_model: Path, fresh_scorer) -> None:
    kwargs = kwargs_for(tiny_scorer_model)
    before = fresh_scorer.forward_passes
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: compute_score("bgl", response(i, ABNORMAL), ABNORMAL, {}, **kwargs), range(8))
        )
    assert fresh_scorer.forward_passes - before <= 2
    assert all(r["perplexity"] > 0 for r in results)


def test_perplexity_only_where_weight_is_active(tiny_scorer_model: Path, fresh_scorer) -> None:
    kwargs = kwargs_for(tiny_scorer_model)
    before = fresh_scorer.forward_passes
    wrong = [compute_score("bgl", response(i, ABNORMAL), NORMAL, {}, **kwargs) for i in range(4)]
    assert fresh_scorer.forward_passes == before
    assert all(r["perplexity"] == 0.0 for r in wrong)
    right = compute_score("bgl", response(0, NORMAL), NORMAL, {}, **kwargs)
    assert fresh_scorer.forward_passes == before + 1 and right["perplexity"] > 0


def test_released_preset_with_perplexity(tiny_scorer_model: Path, fresh_scorer) -> None:
    result = compute_score(
        "bgl",
        response(0, NORMAL),
        NORMAL,
        {"reference_rationale": THINKS[0]},
        **kwargs_for(tiny_scorer_model, "released"),
    )
    log_ppl = fresh_scorer.log_perplexity([f"{THINKS[0]} step 0"])[0]
    assert result["perplexity_released"] == pytest.approx((100 - math.exp(log_ppl)) / 100, abs=1e-3)


def test_trl_adapter_matches_compute_score_and_logs(tiny_scorer_model: Path, fresh_scorer) -> None:
    kwargs = kwargs_for(tiny_scorer_model)
    (fn,) = make_trl_reward_funcs(kwargs)
    fn = pickle.loads(pickle.dumps(fn))
    golds = [NORMAL, ABNORMAL, NORMAL, ABNORMAL]
    completions = [[{"role": "assistant", "content": response(i, NORMAL)}] for i in range(4)]
    metrics: dict[str, float] = {}
    columns: dict[str, list] = {}
    before = fresh_scorer.forward_passes
    scores = fn(
        prompts=[[{"role": "user", "content": "log"}]] * 4,
        completions=completions,
        completion_ids=[[1]] * 4,
        reward_model=[{"style": "rule", "ground_truth": g} for g in golds],
        extra_info=[{"log": "kernel panic", "index": i} for i in range(4)],
        data_source=["bgl"] * 4,
        log_metric=metrics.__setitem__,
        log_extra=columns.__setitem__,
    )
    assert fresh_scorer.forward_passes - before == 1  # one batch for the two correct answers
    expected = [
        compute_score("bgl", response(i, NORMAL), g, {"log": "kernel panic"}, **kwargs)["score"]
        for i, g in enumerate(golds)
    ]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert metrics["logrl/acc"] == 0.5
    assert set(metrics) >= {"logrl/format", "logrl/correctness", "logrl/perplexity", "logrl/bleu"}
    assert columns["pred"] == [NORMAL] * 4


def test_trl_adapter_plain_strings_and_name() -> None:
    fn = LogRLReward({"preset": "answer_only"})
    assert fn.__name__ == "LogRLReward"
    out = fn(
        prompts=["p", "p"],
        completions=["<answer>abnormal</answer>", "garbage"],
        reward_model=[{"ground_truth": ABNORMAL}, {"ground_truth": NORMAL}],
    )
    assert out == pytest.approx([0.8, -2.2])
