"""RL fine-tuning of next-key models (verl_recipes/local/keyseq/rl.py): losses by hand, runs, resume."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reward.keyseq import KEYSEQ_PRESETS
from verl_recipes.local.keyseq import rl, rl_losses, rl_rollout
from verl_recipes.local.keyseq.rl import METRIC_KEYS, KeyseqRL, RLConfig, RolloutBatch, actor_loss, train
from verl_recipes.local.keyseq.rl_losses import gae, ppo_policy_loss, reinforce_loss, value_loss
from verl_recipes.local.keyseq.rl_rollout import (
    Episode,
    left_pad,
    load_episodes,
    sample_responses,
    token_logprobs,
    token_rewards,
)

#: The settings of the short runs: tiny batches, one torch thread, an evaluation every step.
SMALL = dict(batch_size=4, ppo_epochs=2, minibatch_size=2, lr=1e-3, critic_lr=1e-3, k=2,
             eval_every=1, device="cpu", threads=1, seed=3)


@pytest.fixture(scope="module")
def keyseq_data(tmp_path_factory):
    """A ``logdata sequences`` folder of E1 E2 E3 E4 cycles and a tiny model built for it."""
    from logdata.keyseq.sequences import SequenceConfig, build_sequence_datasets
    from verl_recipes.local.keyseq.pretrain import init_model

    root = tmp_path_factory.mktemp("keyseq_rl")
    keys = [f"E{1 + i % 4}" for i in range(120)]
    keys[100:103] = ["E3", "E1", "E1"]
    gaps = np.random.default_rng(0).choice([1.0, 2.0, 9.0], size=120)  # windows of varied length
    log = pd.DataFrame({"line_no": range(1, 121), "timestamp": np.cumsum(gaps),
                        "event_id": keys, "label": ["normal"] * 100 + ["abnormal"] * 20})
    data = root / "seq"
    build_sequence_datasets(log, data, SequenceConfig(data_source="bgl", n_train=10))
    init_model(data, root / "model", "gpt_neo_tiny", context=64, seed=0)
    return data, root / "model"


def test_doctests_hold():
    for module in (rl_losses, rl_rollout, rl):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


# --- the maths, by hand ----------------------------------------------------------------------

def _close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=0)


def test_gae_matches_the_hand_computation():
    # gamma 0.9, lambda 0.8; the second episode ends after two tokens (its third column is
    # padding holding garbage that must not leak in)
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 0.2], [0.3, 0.4, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # episode 1: d2 = 2 - 0.2 = 1.8; d1 = 0 + 0.9*0.2 - 1 = -0.82, A1 = d1 + 0.72*1.8 = 0.476;
    #            d0 = 1 + 0.9*1 - 0.5 = 1.4, A0 = 1.4 + 0.72*0.476 = 1.74272
    # episode 2: d1 = 1 - 0.4 = 0.6 (V after the end is 0); d0 = 0.9*0.4 - 0.3 = 0.06,
    #            A0 = 0.06 + 0.72*0.6 = 0.492
    _close(adv, [[1.74272, 0.476, 1.8], [0.492, 0.6, 0.0]])
    _close(ret, [[2.24272, 1.476, 2.0], [0.792, 1.0, 0.0]])


def test_ppo_loss_matches_the_hand_computation():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.5, 9.0]])
    old = torch.zeros(1, 5)
    logp = ratios.log().requires_grad_(True)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -2.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])  # the last token is padding
    loss, clip_frac = ppo_policy_loss(logp, old, advantages, mask, clip=0.2)
    # token by token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   r 1.5, A 1:  max(-1.5, -1.2) = -1.2 (clipped)    r 0.5, A 1:   max(-0.5, -0.8) = -0.5
    #   r 1.1, A -1: max(1.1, 1.1)   = 1.1               r 0.5, A -2:  max(1.0, 1.6)   = 1.6 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 1.6) / 4)
    assert clip_frac.item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp of -A*r is -A*r: zero where the clipped branch is taken, and zero on padding
    _close(logp.grad, [[0.0, -0.5 / 4, 1.1 / 4, 0.0, 0.0]])


def test_value_and_reinforce_losses_match_the_hand_computation():
    values = torch.tensor([[1.0, 0.0, 3.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # token 1: (1-2)^2 = 1 vs clip(1, -0.5, 0.5) = 0.5: (0.5-2)^2 = 2.25 -> 2.25
    # token 2: (0-1)^2 = 1 vs 1 -> 1; mean of halves: (2.25 + 1) / 2 / 2
    assert value_loss(values, old, returns, mask, clip=0.5).item() == pytest.approx(3.25 / 4)
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    assert reinforce_loss(logp, torch.tensor([[1.0, -1.0, 5.0]]), mask).item() == pytest.approx(
        (1.0 * -1.0 * -1 + -1.0 * -2.0 * -1) / 2)


def test_token_rewards_charge_unfilled_positions_to_eos():
    loggpt = KEYSEQ_PRESETS["loggpt"]
    assert token_rewards(["E1", "E2"], ["E1", "E2", "E3", "E4"], True, loggpt).tolist() == [
        1.0, 1.0, -2.0]  # <eos> at position 2 left positions 2 and 3 unfilled
    assert token_rewards(["E1", "E2"], ["E1", "E2"], False, loggpt).tolist() == [1.0, 1.0]
    seq = KEYSEQ_PRESETS["sequence"]
    last = token_rewards(["E1", "E9"], ["E1", "E2"], False, seq)
    assert last[0] == 0.0 and last[1] != 0.0
    assert token_rewards(["E1", "E9"], ["E1", "E2"], False, seq, broadcast=True).tolist() == [
        last[1], last[1]]


# --- rollouts on a tiny model ----------------------------------------------------------------

def test_sampled_logprobs_equal_the_teacher_forced_ones(keyseq_data):
    from verl_recipes.local.keyseq.model import load_model

    data, model_dir = keyseq_data
    model, tok = load_model(model_dir)
    episodes, _ = load_episodes(data, tok, 0.2)
    episodes = episodes[:5]
    assert len({len(e.prompt) for e in episodes}) > 1  # so some prompts are left-padded
    prompt_ids, prompt_mask = left_pad([e.prompt for e in episodes], tok.pad_token_id)
    limits = [len(e.gold) for e in episodes]
    response, response_mask, sampled = sample_responses(
        model, prompt_ids, prompt_mask, limits, tok.eos_token_id, tok.pad_token_id,
        torch.Generator().manual_seed(0))
    assert (response_mask.sum(1) <= torch.tensor(limits)).all()
    logp, _ = token_logprobs(model, prompt_ids, prompt_mask, response, response_mask)
    assert torch.allclose(logp * response_mask, sampled, atol=1e-5)
    # left padding changes nothing: each episode alone, unpadded, gives the same numbers
    for row, episode in enumerate(episodes):
        n = int(response_mask[row].sum())
        alone, _ = token_logprobs(model, torch.tensor([episode.prompt]),
                                  torch.ones(1, len(episode.prompt), dtype=torch.long),
                                  response[row:row + 1, :n], response_mask[row:row + 1, :n])
        assert torch.allclose(alone[0], logp[row, :n], atol=1e-5)


def test_episodes_cut_from_train_parquet_equal_rl_train(keyseq_data, tmp_path):
    import shutil

    from verl_recipes.local.keyseq.model import load_model

    data, model_dir = keyseq_data
    _, tok = load_model(model_dir)
    copy = tmp_path / "seq"
    shutil.copytree(data, copy)
    (copy / "rl_train.parquet").unlink()
    from_rl, origin_rl = load_episodes(data, tok, 0.2)
    from_train, origin_train = load_episodes(copy, tok, 0.2)
    assert origin_rl == "rl_train.parquet" and origin_train.startswith("train.parquet")
    assert from_rl == from_train
    gold = pd.read_parquet(data / "rl_train.parquet")["reward_model"].map(
        lambda r: r["ground_truth"].split()).tolist()
    assert [list(e.gold) for e in from_rl] == gold


def _batch(trainer: KeyseqRL, step: int = 1) -> RolloutBatch:
    generator = rl.step_generator(trainer.config.seed, step)
    batch, _ = trainer.rollout(trainer.draw(generator), generator)
    return batch


def _trainer(keyseq_data, **overrides) -> KeyseqRL:
    from verl_recipes.local.keyseq.model import load_model

    data, model_dir = keyseq_data
    policy, tok = load_model(model_dir)
    reference, _ = load_model(model_dir)
    config = RLConfig(**{**SMALL, **overrides}).resolved()
    episodes, _ = load_episodes(data, tok, config.prefix_ratio)
    return KeyseqRL(policy, reference, tok, episodes, config)


def test_an_early_eos_is_charged_the_positions_it_left_unfilled(keyseq_data):
    trainer = _trainer(keyseq_data, algorithm="reinforce")  # loggpt: +1 / -1 per position
    tok = trainer.tokenizer
    gold = ("E1", "E2", "E3", "E4")
    ids = tok.convert_tokens_to_ids
    episodes = [Episode((tok.bos_token_id,), gold, tuple(ids(list(gold))))] * 2
    response = torch.tensor([[*ids(["E1", "E2"]), tok.eos_token_id, tok.pad_token_id],
                             ids(["E1", "E3", "E3", "E4"])])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    rewards, stats = trainer._score(episodes, response, mask)
    assert rewards.tolist() == [[1.0, 1.0, -2.0, 0.0], [1.0, -1.0, 1.0, 1.0]]
    assert stats["early_eos"] == 0.5 and stats["response_len"] == 3.5
    assert stats["reward_exact"] == pytest.approx((2 / 4 + 3 / 4) / 2)


def test_ppo_advantages_are_gae_of_the_kl_shaped_rewards(keyseq_data):
    trainer = _trainer(keyseq_data, kl_coef=0.3, whiten=False, gamma=0.9, lam=0.7)
    with torch.no_grad():  # move the policy away from the reference so the KL is not zero
        for param in trainer.policy.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
        for param in trainer.critic.head.parameters():
            param.fill_(0.1)
    batch = _batch(trainer)
    mask = batch.response_mask
    kl = (batch.old_logp - batch.ref_logp) * mask
    assert kl.abs().sum() > 0 and batch.old_values.abs().sum() > 0
    expected, returns = gae(batch.rewards - 0.3 * kl, batch.old_values, mask, 0.9, 0.7)
    torch.testing.assert_close(batch.advantages, expected)
    torch.testing.assert_close(batch.returns, returns)


def test_ce_regulariser_adds_exactly_mu_times_the_gold_cross_entropy(keyseq_data):
    trainer = _trainer(keyseq_data, ce_coef=0.0)
    batch = _batch(trainer)
    without, parts = actor_loss(trainer.policy, batch, "ppo", 0.2, 0.0)
    with_ce, _ = actor_loss(trainer.policy, batch, "ppo", 0.2, 0.5)
    # the CE computed independently: each episode alone, transformers' own loss on the gold keys
    episodes = trainer.draw(rl.step_generator(trainer.config.seed, 1))
    total, count = 0.0, 0
    for episode in episodes:
        ids = torch.tensor([[*episode.prompt, *episode.gold_ids]])
        labels = ids.clone()
        labels[0, : len(episode.prompt)] = -100
        loss = trainer.policy(input_ids=ids, labels=labels).loss
        total += loss.item() * len(episode.gold_ids)
        count += len(episode.gold_ids)
    assert (with_ce - without).item() == pytest.approx(0.5 * total / count, abs=1e-5)
    assert parts["ce"] == pytest.approx(total / count, abs=1e-5)


def test_reinforce_raises_the_logprob_of_a_rewarded_key(keyseq_data):
    trainer = _trainer(keyseq_data, algorithm="reinforce")
    batch = _batch(trainer).select(torch.tensor([0]))
    batch.response_mask[:, 1:] = 0  # one sampled key

    def logp_of_sampled(model):
        with torch.no_grad():
            logp, _ = token_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.response,
                                     batch.response_mask)
        return logp[0, 0].item()

    for reward, direction in ((1.0, 1), (-1.0, -1)):
        model = _trainer(keyseq_data).policy
        before = logp_of_sampled(model)
        batch.advantages = torch.full_like(batch.advantages, reward)
        loss, _ = actor_loss(model, batch, "reinforce", 0.2, 0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert direction * (logp_of_sampled(model) - before) > 0, (reward, before)


# --- runs --------------------------------------------------------------------------------------

def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_three_step_ppo_run_writes_metrics_best_and_last(keyseq_data, tmp_path):
    from logdata.io import sha256_file
    from validation.keyseq_detect import detect
    from verl_recipes.local.keyseq.model import model_vocab

    data, model_dir = keyseq_data
    out = tmp_path / "run"
    summary = train(data, model_dir, out, RLConfig(steps=3, **{**SMALL, "eval_every": 2}),
                    progress=False)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(list(r) == list(METRIC_KEYS) for r in rows)
    assert [r["val_recall"] is not None for r in rows] == [True, False, True, True]
    for row in rows[1:]:
        assert row["tokens"] > 0 and row["value_loss"] is not None and row["clip_frac"] is not None
        assert math.isfinite(row["kl"]) and math.isfinite(row["ce"])
        assert -1.0 <= row["reward_mean"] <= 1.0
        assert row["reward_exact"] + row["reward_partial"] + row["reward_miss"] == pytest.approx(1)
    assert rows[-1]["tokens_total"] == sum(r["tokens"] for r in rows[1:])
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["config"]["reward"] == "logneo"
    assert state["config"]["ce_coef"] == 0.1
    for name in ("model.safetensors", "optimizer.safetensors", "critic/model.safetensors",
                 "critic/value_head.safetensors", "critic/optimizer.safetensors"):
        assert (out / "last" / name).is_file(), name
    assert not [p for p in out.rglob("*") if p.suffix in {".bin", ".pt", ".pkl", ".pth"}]
    assert summary["best"]["step"] in (0, 2, 3)
    # best/ keeps the vocabulary record and loads in the detector unchanged
    assert model_vocab(out / "best") == model_vocab(model_dir)
    assert model_vocab(out / "best")["sha256"] == sha256_file(data / "vocab.json")
    result = detect(out / "best", data / "test.parquet", tmp_path / "detect", k=2, sweep=[1, 2],
                    progress=False)
    assert result["keyseq"]["k"] == 2


def test_resume_continues_the_step_numbers_and_matches_an_uninterrupted_run(keyseq_data, tmp_path):
    data, model_dir = keyseq_data
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(data, model_dir, straight, RLConfig(steps=3, **SMALL), progress=False)
    train(data, model_dir, stopped, RLConfig(steps=2, **SMALL), progress=False)
    train(data, None, stopped, RLConfig(steps=3), resume=True, progress=False)
    rows = _rows(stopped)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert json.loads((stopped / "last" / "trainer_state.json").read_text())["step"] == 3
    same = [k for k in METRIC_KEYS if k not in {"seconds"}]
    assert {k: rows[-1][k] for k in same} == {k: _rows(straight)[-1][k] for k in same}


def test_cli_reinforce_run_and_refusals(keyseq_data, tmp_path, capsys):
    data, model_dir = keyseq_data
    out = tmp_path / "reinforce"
    argv = ["--input", str(data), "--model", str(model_dir), "--out", str(out), "--algorithm",
            "reinforce", "--steps", "2", "--batch-size", "4", "--k", "2", "--threads", "1",
            "--device", "cpu", "--no-progress"]
    assert rl.main(argv) == 0
    assert "best normal-key recall@2" in capsys.readouterr().out
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[1]["value_loss"] is None and rows[1]["clip_frac"] is None
    assert json.loads((out / "last" / "trainer_state.json").read_text())["config"]["reward"] == (
        "loggpt")
    assert not (out / "last" / "critic").exists()
    assert rl.main(argv) == 2  # an existing run is refused
    assert "--resume" in capsys.readouterr().err
    assert rl.main([*argv, "--overwrite"]) == 0
    assert rl.main(["--input", str(data), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert rl.main([*argv[:-1], "--out", str(tmp_path / "x"), "--clip", "0"]) == 2


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce", "topk_margin"])
def test_rl_raises_the_reward_on_deterministic_cycles(keyseq_data, tmp_path, algorithm):
    """The keys cycle E1 E2 E3 E4, so every continuation is predictable: the reward must rise."""
    data, model_dir = keyseq_data  # a randomly initialised model
    out = tmp_path / algorithm
    train(data, model_dir, out, RLConfig(
        algorithm=algorithm, steps=20, batch_size=16, lr=3e-3, critic_lr=1e-3, kl_coef=0.0,
        ce_coef=0.0, k=1, eval_every=0, device="cpu", threads=1, seed=0), progress=False)
    rewards = [r["reward_mean"] for r in _rows(out)[1:]]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.1, rewards


def test_model_train_sh_local_logneo_runs_the_local_trainer(keyseq_data, tmp_path):
    import subprocess

    data, model_dir = keyseq_data
    repo = Path(__file__).resolve().parents[1]
    settings = [f"input={data}", f"model={model_dir}", f"out={tmp_path / 'run'}", "steps=1",
                "batch_size=4", "k=2", "threads=1", "no_progress=", "algorithm=reinforce"]
    dry = subprocess.run(["bash", "model_train.sh", "local_logneo", "--dry-run", *settings[:3]],
                         cwd=repo, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and dry.stdout.strip().endswith(
        f"-m verl_recipes.local.keyseq.rl --input {data} --model {model_dir} --out "
        f"{tmp_path / 'run'}")
    proc = subprocess.run(["bash", "model_train.sh", "local_logneo", *settings], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["step"] for r in _rows(tmp_path / "run")] == [0, 1]


def test_topk_margin_moves_only_keys_outside_the_margin(keyseq_data):
    """The hinge is zero for a gold key already leading the K-th by more than the margin."""
    from verl_recipes.local.keyseq.rl_losses import topk_margin_loss

    logits = torch.tensor([[[9.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]], requires_grad=True)
    targets = torch.tensor([[0, 1]])  # the first leads by 9, the second trails by 1 (rank 1)
    loss, inside = topk_margin_loss(logits, targets, torch.ones(1, 2), k=1, margin=1.0)
    loss.backward()
    assert inside.item() == 0.5
    assert logits.grad[0, 0].abs().max() < 1e-3  # softplus(1 - 9) ~ 3e-4: nearly no push
    assert logits.grad[0, 1, 1] < 0 and logits.grad[0, 1, 2] > 0  # raise gold, lower the rival


def test_topk_margin_step_targets_eos_where_the_detector_judges_it(keyseq_data):
    trainer = _trainer(keyseq_data, algorithm="topk_margin", ce_coef=0.0)
    episodes = trainer.episodes[:4]
    trainer.judge_eos = False
    without = trainer.margin_update(episodes)["tokens"]
    trainer.judge_eos = True
    with_eos = trainer.margin_update(episodes)["tokens"]
    assert with_eos == without + len(episodes)
