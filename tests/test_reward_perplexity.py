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


def _transformers_loss(model_path: Path, ids: list[int]) -> float:
    """transformers' own mean next-token loss (``labels=input_ids``) of one id list, float32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tensor = torch.tensor([ids])
    with torch.no_grad():
        return float(model(input_ids=tensor, labels=tensor).loss)


def test_log_perplexity_equals_transformers_labels_loss(tiny_scorer_model: Path, fresh_scorer) -> None:
    """Batched (padded, length-sorted) scoring equals transformers' loss of each text alone."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_scorer_model)
    texts = [*THINKS, "x y", THINKS[0] * 3]
    scorer = get_scorer(tiny_scorer_model, device="cpu", dtype="float32")
    assert scorer is not fresh_scorer  # one scorer per dtype ("auto" is bf16 on bf16-capable CPUs)
    batched = scorer.log_perplexity(texts)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for text, got in zip(texts, batched, strict=True):
        ids = (bos + tokenizer(text, add_special_tokens=False)["input_ids"])[: scorer.max_length]
        assert got == pytest.approx(_transformers_loss(tiny_scorer_model, ids), rel=1e-6, abs=1e-7)
    assert math.isinf(fresh_scorer.log_perplexity([""])[0])  # nothing to predict


def test_tokenizer_encoding_truncates_like_the_tokenizer_call(tiny_scorer_model: Path, fresh_scorer) -> None:
    """The released encoding is ``tokenizer(text, truncation=True, max_length=1024)``, no BOS added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_scorer_model)
    long_text = " ".join(THINKS) * 40
    (ids,) = fresh_scorer.encode([long_text], max_length=1024, special_tokens="tokenizer")
    assert len(tokenizer(long_text)["input_ids"]) > 1024
    assert ids == tokenizer(long_text, truncation=True, max_length=1024)["input_ids"]
    assert len(ids) == 1024
    with pytest.raises(ValueError, match="special_tokens"):
        fresh_scorer.encode(["x"], special_tokens="none")


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


def test_released_preset_scores_context_and_think(tiny_scorer_model: Path, fresh_scorer) -> None:
    """The released term is (100 − exp(loss))/100 of the context sentence, a newline, the think."""
    from transformers import AutoTokenizer

    result = compute_score(
        "bgl", response(0, NORMAL), NORMAL, {"reference_rationale": THINKS[0]},
        **kwargs_for(tiny_scorer_model, "released"),
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_scorer_model)
    context = "This is a log analysis task to determine if a log entry is normal or abnomal."
    text = f"{context}\n{THINKS[0]} step 0"
    loss = _transformers_loss(tiny_scorer_model, tokenizer(text)["input_ids"])
    assert result["perplexity_released"] == pytest.approx((100 - math.exp(loss)) / 100, rel=1e-6)


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
    # invalid format −0.5 with a caught anomaly (+1.0); invalid format with no answer (−2.2)
    assert out == pytest.approx([-0.5 + 1.0, -0.5 - 2.2])
