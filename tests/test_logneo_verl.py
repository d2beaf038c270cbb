"""The logneo_ppo recipe on real verl 0.9.1 code: composition, reward manager, GAE and actor loss.

(a) Token-level rewards: verl loads our reward manager from the recipe and scores rollouts with
    ``run_single``; the trainer's placement turns those scores into per-token ``rm_scores``; verl's
    own ``apply_kl_penalty`` and GAE (``compute_advantage_for_multi_trajectories`` →
    ``compute_gae_advantage_return``) see every reward on its key's token: with γ = λ = 1, zero
    values and zero KL, the return at token ``t`` is the sum of the rewards from ``t`` on,
    computed here independently from ``reward.keyseq.position_rewards``.
(b) Actor loss: on a batch of rollout rows each followed by its gold row, the loss equals verl's
    ``ppo_loss`` on the rollout rows alone plus ``μ`` × the gold continuations' cross-entropy,
    computed here with ``torch.nn.functional.cross_entropy`` on the tiny model's logits; with
    ``μ = 0`` it is verl's ``ppo_loss``; it sums over micro-batches like verl's loss; verl's own
    mini-batch iterator keeps each gold row with its rollout.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("verl")

from logdata.keyseq.vocab import KeyVocab
from reward.keyseq import position_rewards, reward_spec
from verl_recipes import compose
from verl_recipes.local.keyseq.model import build_keyseq_model

REPO = Path(__file__).resolve().parents[1]
MU = 0.5
SEED = 0


@pytest.fixture(scope="module")
def keyseq_model(keyseq_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("logneo_model")
    build_keyseq_model(KeyVocab.load(keyseq_data / "vocab.json"), "gpt_neo_tiny", out, context=64,
                       seed=SEED)
    return out


@pytest.fixture(scope="module")
def cfg(keyseq_data: Path, keyseq_model: Path):
    return compose.compose_recipe("logneo_ppo", [f"actor_rollout_ref.model.path={keyseq_model}",
                                                 f"logrl.data_dir={keyseq_data}"])


@pytest.fixture(scope="module")
def tokenizer(keyseq_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(keyseq_model)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(text.split())


# ------------------------------------------------------------------------------------------------
# the recipe


def test_recipe_composes_and_validates_with_its_plugins(cfg, keyseq_data: Path, keyseq_model: Path):
    from verl.trainer.ppo.reward import resolve_reward_manager_cls
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.trainer.ppo.v1 import get_trainer_cls

    from verl_recipes.logneo_ppo.reward_manager import KeyseqTokenRewardManager
    from verl_recipes.logneo_ppo.trainer import LogneoPPOTrainer, LogneoSettings

    compose.validate_recipe(cfg)  # critic checks included: the model path is a local folder
    assert compose.trainer_kind(cfg) == "ppo"
    assert cfg.algorithm.adv_estimator == "gae" and need_critic(cfg) and need_reference_policy(cfg)
    assert cfg.algorithm.use_kl_in_reward and not cfg.actor_rollout_ref.actor.use_kl_loss
    assert cfg.data.train_files == str(keyseq_data / "rl_train.parquet")
    assert cfg.actor_rollout_ref.model.path == cfg.critic.model.path == str(keyseq_model)
    assert resolve_reward_manager_cls(cfg) is KeyseqTokenRewardManager
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_USE_EXTERNAL_MODULES == "verl_recipes.logneo_ppo.plugin"
    assert get_trainer_cls(cfg.trainer.v1.trainer_mode) is LogneoPPOTrainer
    settings = LogneoSettings.from_config(cfg)
    assert settings.ce_coef == pytest.approx(0.1) and settings.spec == reward_spec("logneo")
    assert settings.max_gold_tokens == cfg.data.max_response_length


def test_trainer_is_verl_sync_trainer_with_doubled_actor_mini_batches(cfg):
    from verl.trainer.ppo.v1 import PPOTrainerSync
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from verl_recipes.logneo_ppo.trainer import LogneoPPOTrainer

    trainer = LogneoPPOTrainer(cfg)  # verl's constructor: no Ray, no workers yet
    assert isinstance(trainer, PPOTrainerSync)
    # verl compares the mode name with "sync": the synchronous replay buffer, refill, checkpoints
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer) is ReplayBuffer
    info = trainer._actor_update_info()
    rollouts = cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n
    assert info["global_batch_size"] == rollouts and info["mini_batch_size"] == 2 * rollouts
    assert info["dataloader_kwargs"] == {"shuffle": False}


@pytest.mark.parametrize(("overrides", "message"), [
    (["logrl.ce_coef=-1"], "must be >= 0"),
    (["actor_rollout_ref.actor.shuffle=true"], "shuffle=false"),
    (["reward.reward_manager.source=register", "reward.reward_manager.name=naive"],
     "KeyseqTokenRewardManager"),
])
def test_trainer_settings_refuse_what_would_train_wrong(keyseq_model: Path, overrides: list[str],
                                                        message: str):
    from verl_recipes.logneo_ppo.trainer import LogneoSettings

    bad = compose.compose_recipe("logneo_ppo", [f"actor_rollout_ref.model.path={keyseq_model}",
                                                *overrides])
    with pytest.raises(ValueError, match=message):
        LogneoSettings.from_config(bad)


def test_validation_refuses_an_unregistered_trainer(keyseq_model: Path):
    bad = compose.compose_recipe("logneo_ppo", [f"actor_rollout_ref.model.path={keyseq_model}",
                                                "trainer.v1.trainer_mode=no_such_trainer"])
    with pytest.raises(compose.RecipeError, match="no_such_trainer"):
        compose.validate_recipe(bad)


def test_launcher_dry_run(keyseq_model: Path, tmp_path: Path):
    proc = subprocess.run(["bash", str(REPO / "model_train.sh"), "logneo_ppo", "--dry-run",
                           f"actor_rollout_ref.model.path={keyseq_model}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainer_mode: logneo_sync" in proc.stdout
    assert "path: pkg://verl_recipes.logneo_ppo.reward_manager" in proc.stdout


# ------------------------------------------------------------------------------------------------
# (a) token-level rewards through verl's reward manager loader and GAE

# (generated response, gold continuation): exact, partial credit, ended early, ran long without
# <eos> (hit the response budget), garbage (<unk>/<pad>/<bos>, an id outside the tokenizer)
ROLLOUTS = [
    ("E1 E2 E3 <eos>", "E1 E2 E3"),
    ("E2 E1 E4 <eos>", "E1 E2 E3 E4"),
    ("E1 <eos>", "E1 E2 E3 E0"),
    ("E1 E2 E3 E4 E0", "E1 E2"),
    ("<unk> <pad> <bos> 999 <eos>", "E1 E2"),
    ("<eos>", "E3"),
]


def rollout_batch(tokenizer, rollouts: list[tuple[str, str]]):
    """A verl DataProto as the reward loop sees it: prompts, right-padded responses, masks."""
    from verl import DataProto

    responses = [[int(t) if t.isdigit() else tokenizer.convert_tokens_to_ids(t) for t in r.split()]
                 for r, _ in rollouts]
    width, prompt_len = max(map(len, responses)), 3
    resp = torch.full((len(rollouts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rollouts), prompt_len + width), dtype=torch.long)
    mask[:, :prompt_len] = 1
    for i, row in enumerate(responses):
        resp[i, : len(row)] = torch.tensor(row)
        mask[i, prompt_len: prompt_len + len(row)] = 1
    prompts = torch.tensor([ids(tokenizer, "<bos> E0 E1")] * len(rollouts))
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "attention_mask": mask,
                 "response_mask": mask[:, prompt_len:].clone()},
        non_tensors={"data_source": np.array(["bgl"] * len(rollouts), dtype=object),
                     "reward_model": np.array([{"style": "rule", "ground_truth": g}
                                               for _, g in rollouts], dtype=object)},
    ), responses


def expected_token_rewards(response: str, gold: str, preset: str) -> list[float]:
    """The placement rule, written out independently: r_t on token t, the rest on the last token."""
    tokens = response.split()
    generated = tokens[: tokens.index("<eos>")] if "<eos>" in tokens else tokens
    generated = [t if t.startswith("E") else "<unk>" for t in generated]
    rewards = list(position_rewards(generated, gold, preset))
    out = [0.0] * len(tokens)
    for t, r in enumerate(rewards):
        out[t if t < len(generated) else -1] += r
    return out


@pytest.mark.parametrize("preset", ["logneo", "loggpt"])
def test_token_rewards_reach_verl_gae_unchanged(cfg, tokenizer, preset: str):
    from verl.trainer.ppo.core_algos import FixedKLController
    from verl.trainer.ppo.ray_trainer import apply_kl_penalty
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
    from verl.utils.torch_functional import masked_whiten

    from verl_recipes.logneo_ppo.trainer import token_reward_rows

    run_cfg = compose.compose_recipe("logneo_ppo", [
        f"actor_rollout_ref.model.path={cfg.actor_rollout_ref.model.path}",
        f"reward.reward_kwargs.preset={preset}"])
    manager = load_reward_manager(run_cfg, tokenizer)
    data, responses = rollout_batch(tokenizer, ROLLOUTS)
    # what verl's agent loop stores: the manager's float on the last response token
    agent_scores = []
    for i, row in enumerate(responses):
        out = manager.loop.run_until_complete(manager.run_single(data[i: i + 1]))
        assert set(out["reward_extra_info"]) == {"score", "acc", "length_gap"}
        score = torch.zeros(len(row))
        score[-1] = out["reward_score"]
        agent_scores.append(score)
    rows, gap = token_reward_rows(tokenizer, [torch.tensor(r) for r in responses],
                                  [g for _, g in ROLLOUTS], agent_scores, [False] * len(ROLLOUTS),
                                  manager.spec)
    assert gap < 1e-5
    rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
    for i, row in enumerate(rows):
        rm_scores[i, : len(row)] = row
    # the rest of verl's _compute_advantage: in-reward KL (zero here: old == ref), then GAE
    data.batch["token_level_scores"] = rm_scores
    data.batch["old_log_probs"] = data.batch["ref_log_prob"] = torch.zeros_like(rm_scores)
    data.batch["values"] = torch.zeros_like(rm_scores)
    data, _ = apply_kl_penalty(data, FixedKLController(0.1), kl_penalty="kl")
    data = compute_advantage_for_multi_trajectories(
        data, batch_keys=[f"u{i}_0_0" for i in range(len(data))], adv_estimator="gae", gamma=1.0,
        lam=1.0, config=run_cfg.algorithm)
    mask = data.batch["response_mask"]
    for i, (response, gold) in enumerate(ROLLOUTS):
        expected = expected_token_rewards(response, gold, preset)
        n = len(expected)
        np.testing.assert_allclose(data.batch["token_level_rewards"][i, :n], expected, atol=1e-6)
        suffix = [sum(expected[t:]) for t in range(n)]
        np.testing.assert_allclose(data.batch["returns"][i, :n], suffix, atol=1e-5)
        assert float(rm_scores[i].sum()) == pytest.approx(float(agent_scores[i].sum()), abs=1e-5)
    whitened = masked_whiten(data.batch["returns"], mask)
    torch.testing.assert_close(data.batch["advantages"] * mask, whitened * mask)


def test_sequence_preset_puts_the_mean_on_the_last_token(tokenizer):
    from reward.keyseq import sequence_reward
    from verl_recipes.logneo_ppo.reward_manager import token_rewards

    out = token_rewards(tokenizer, ids(tokenizer, "E2 E1 <eos>"), "E1 E2 E3", "sequence")
    assert out[:-1].tolist() == [0.0, 0.0]
    assert out[-1] == pytest.approx(sequence_reward(["E2", "E1"], "E1 E2 E3"))


def test_malformed_generations_never_raise(tokenizer):
    from verl_recipes.logneo_ppo.reward_manager import extra_info, token_rewards

    rng = np.random.default_rng(SEED)
    low, high = reward_spec("logneo").bounds()
    for _ in range(200):
        response = rng.integers(-1, 2 * len(tokenizer), size=int(rng.integers(0, 12))).tolist()
        gold = " ".join(rng.choice(["E1", "E2", "E9", "<unk>", ""], size=int(rng.integers(0, 6))))
        out = token_rewards(tokenizer, response, gold, "logneo")
        assert out.shape == (len(response),) and np.isfinite(out).all()
        positions = max(len(response), len(gold.split()))
        assert positions * low - 1e-9 <= out.sum() <= positions * high + 1e-9
        assert 0.0 <= extra_info(tokenizer, response, gold, float(out.sum()))["acc"] <= 1.0


def test_trainer_refuses_scores_from_another_reward(tokenizer):
    from verl_recipes.logneo_ppo.trainer import token_reward_rows

    response = torch.tensor(ids(tokenizer, "E1 <eos>"))
    with pytest.raises(RuntimeError, match="differ"):
        token_reward_rows(tokenizer, [response], ["E1 E2"], [torch.tensor([0.0, 5.0])], [False],
                          reward_spec("logneo"))
    rows, gap = token_reward_rows(tokenizer, [response], ["E1 E2"], [torch.tensor([0.0, 5.0])],
                                  [True], reward_spec("logneo"))  # verl's padding rows stay zero
    assert rows[0].tolist() == [0.0, 0.0] and gap == 0.0
    # a full 1,536-token response of misses: verl's float32 score still matches its token rewards
    from verl_recipes.logneo_ppo.reward_manager import token_rewards

    long = torch.tensor(ids(tokenizer, "E0") * 1536)
    score = torch.zeros(1536)
    score[-1] = float(token_rewards(tokenizer, long.tolist(), "E1 E2 " * 768, "logneo").sum())
    token_reward_rows(tokenizer, [long], ["E1 E2 " * 768], [score], [False], reward_spec("logneo"))


# ------------------------------------------------------------------------------------------------
# (b) the actor loss: verl's PPO loss + μ × gold cross-entropy

# (prompt, generated response, gold continuation)
ACTOR_ROWS = [
    ("<bos> E0 E1", "E2 E3 <eos>", "E2 E3 E4"),
    ("<bos> E1", "E0 <eos>", "E2"),
    ("<bos> E2 E3 E4", "E0 E0 E0 E1", "E0 E1"),
]


def rollout_rows(tokenizer) -> tuple:
    """Rollout rows as verl's actor update receives them (nested), and the gold ids."""
    from tensordict import TensorDict

    gen = torch.Generator().manual_seed(SEED)
    fields: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "prompts", "responses", "input_ids", "position_ids", "response_mask", "loss_mask",
        "old_log_probs", "advantages")}
    for prompt, response, _ in ACTOR_ROWS:
        p, r = torch.tensor(ids(tokenizer, prompt)), torch.tensor(ids(tokenizer, response))
        fields["prompts"].append(p)
        fields["responses"].append(r)
        fields["input_ids"].append(torch.cat([p, r]))
        fields["position_ids"].append(torch.arange(len(p) + len(r)))
        fields["response_mask"].append(torch.ones(len(r), dtype=torch.long))
        fields["loss_mask"].append(torch.ones(len(r), dtype=torch.long))
        fields["old_log_probs"].append(-torch.rand(len(r), generator=gen) * 3)
        fields["advantages"].append(torch.randn(len(r), generator=gen))
    nested = {k: torch.nested.as_nested_tensor(v, layout=torch.jagged) for k, v in fields.items()}
    batch = TensorDict(nested, batch_size=[len(ACTOR_ROWS)])
    golds = [ids(tokenizer, g) for _, _, g in ACTOR_ROWS]
    return batch, golds


def engine_log_probs(model, batch) -> dict:
    """``model_output`` as verl's FSDP engine builds it without remove-padding (nested log-probs)."""
    from verl.utils.torch_functional import logprobs_from_logits

    input_ids = batch["input_ids"]
    logits = torch.cat([model(input_ids=row[None]).logits[0] for row in input_ids.unbind()])
    labels = torch.roll(input_ids.values(), shifts=-1, dims=0)
    log_probs = logprobs_from_logits(logits=logits, labels=labels)
    return {"log_probs": torch.nested.nested_tensor_from_jagged(log_probs, input_ids.offsets())}


def with_global_info(batch, rollouts: int):
    """The non-tensor entries verl's engine and trainer put on an actor mini-batch."""
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(batch, dp_size=1, batch_num_tokens=int(batch["loss_mask"].values().sum()),
                         global_batch_size=rollouts)
    return batch


def independent_ce(model, tokenizer) -> torch.Tensor:
    """Mean over gold continuations of the per-sequence mean next-key cross-entropy."""
    losses = []
    for prompt, _, gold in ACTOR_ROWS:
        p, g = ids(tokenizer, prompt), ids(tokenizer, gold)
        logits = model(input_ids=torch.tensor([p + g])).logits[0]
        losses.append(F.cross_entropy(logits[len(p) - 1: len(p) + len(g) - 1], torch.tensor(g)))
    return torch.stack(losses).mean()


@pytest.fixture(scope="module")
def actor(cfg, keyseq_model: Path):
    from transformers import AutoModelForCausalLM
    from verl.utils.config import omega_conf_to_dataclass

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(keyseq_model)
    return model, omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_actor_loss_is_verl_ppo_loss_plus_mu_cross_entropy(actor, tokenizer):
    from verl.workers.utils.losses import ppo_loss

    from verl_recipes.logneo_ppo.loss import logneo_ppo_loss
    from verl_recipes.logneo_ppo.trainer import with_gold_rows

    model, config = actor
    rollouts, golds = rollout_rows(tokenizer)
    update = with_global_info(with_gold_rows(rollouts, golds, tokenizer.eos_token_id), len(ACTOR_ROWS))
    plain = with_global_info(rollouts.clone(), len(ACTOR_ROWS))
    with torch.no_grad():
        ppo, _ = ppo_loss(config, engine_log_probs(model, plain), plain)
        ce = independent_ce(model, tokenizer)
        got, metrics = logneo_ppo_loss(config, engine_log_probs(model, update), update, ce_coef=MU)
        got0, _ = logneo_ppo_loss(config, engine_log_probs(model, update), update, ce_coef=0.0)
    assert ce > 0.1 and abs(float(ppo)) > 1e-3  # neither term is trivially zero
    assert float(got) == pytest.approx(float(ppo) + MU * float(ce), rel=1e-5, abs=1e-6)
    assert metrics["actor/ce_loss"].aggregate() == pytest.approx(float(ce), rel=1e-5)
    assert float(got0) == pytest.approx(float(ppo), rel=1e-5, abs=1e-6)


def test_actor_loss_sums_over_micro_batches_and_trains_on_gold(actor, tokenizer):
    from verl.utils import tensordict_utils as tu

    from verl_recipes.logneo_ppo.loss import CE_MASK, logneo_ppo_loss
    from verl_recipes.logneo_ppo.trainer import with_gold_rows

    model, config = actor
    rollouts, golds = rollout_rows(tokenizer)
    update = with_global_info(with_gold_rows(rollouts, golds, tokenizer.eos_token_id), len(ACTOR_ROWS))
    with torch.no_grad():
        whole, _ = logneo_ppo_loss(config, engine_log_probs(model, update), update, ce_coef=MU)
        parts = [logneo_ppo_loss(config, engine_log_probs(model, part), part, ce_coef=MU)[0]
                 for part in tu.chunk_tensordict(update, 2)]  # [p0 g0 p1] [g1 p2 g2]
    assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-5)
    # gold rows alone (advantages of nothing): the gradient is the CE's, and it is not zero
    gold_only = tu.index_select_tensor_dict(update, [1, 3, 5])
    assert gold_only[CE_MASK].values().sum() == sum(map(len, golds))
    model.zero_grad()
    loss, _ = logneo_ppo_loss(config, engine_log_probs(model, gold_only), gold_only, ce_coef=MU)
    loss.backward()
    grad = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    assert math.isfinite(grad) and grad > 0


def test_gold_rows_follow_their_rollouts_in_verl_mini_batches(tokenizer):
    from verl.utils import tensordict_utils as tu

    from verl_recipes.logneo_ppo.loss import CE_MASK
    from verl_recipes.logneo_ppo.trainer import with_gold_rows

    rollouts, golds = rollout_rows(tokenizer)
    update = with_gold_rows(rollouts, [golds[0], None, golds[2]], tokenizer.eos_token_id)
    assert update.batch_size[0] == 2 * len(ACTOR_ROWS)
    for i, gold in enumerate([golds[0], None, golds[2]]):
        rollout, row = update[2 * i], update[2 * i + 1]
        assert torch.equal(rollout["responses"], rollouts[i]["responses"])
        assert torch.equal(row["prompts"], rollouts[i]["prompts"])
        assert int(rollout[CE_MASK].sum()) == 0 and int(row["response_mask"].sum()) == 0
        assert int(row["loss_mask"].sum()) == 0 and float(row["advantages"].abs().sum()) == 0
        if gold is None:  # verl's padding rows: a one-token gold row without CE
            assert row["responses"].tolist() == [tokenizer.eos_token_id] and row[CE_MASK].sum() == 0
        else:
            assert row["responses"].tolist() == gold and row[CE_MASK].tolist() == [1.0] * len(gold)
            assert row["input_ids"].tolist() == rollouts[i]["prompts"].tolist() + gold
            assert row["position_ids"].tolist() == list(range(len(row["input_ids"])))
    # verl's own mini-batch iterator (shuffle off, as the recipe sets) keeps each pair together
    pairs = [tu.index_select_tensor_dict(update, [2 * i, 2 * i + 1]) for i in range(3)]
    for mini, pair in zip(tu.make_iterator(update, mini_batch_size=2, epochs=1,
                                           dataloader_kwargs={"shuffle": False}), pairs, strict=True):
        assert torch.equal(mini["input_ids"].values(), pair["input_ids"].values())


@pytest.mark.parametrize("name", ["verl_recipes.logneo_ppo.reward_manager",
                                  "verl_recipes.logneo_ppo.trainer",
                                  "verl_recipes.value_heads"])
def test_module_doctests(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_cpu_overlay_keeps_the_recipe_plugins() -> None:
    # the CPU overlay used to replace VERL_USE_EXTERNAL_MODULES with the platform alone, which
    # dropped the logneo_sync trainer and the flash-attn-free value heads on every --cpu run
    from verl_recipes.cpu import cpu_env, cpu_overrides

    key = "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES="
    for recipe, modules in (("logneo_ppo", "verl_recipes.logneo_ppo.plugin"),
                            ("ppo_gae", "verl_recipes.value_heads")):
        expected = f"verl_recipes.cpu.platform,{modules}"
        assert f"{key}'{expected}'" in cpu_overrides("ppo", recipe=recipe)
        assert cpu_env(recipe)["VERL_USE_EXTERNAL_MODULES"] == expected
    assert cpu_env()["VERL_USE_EXTERNAL_MODULES"] == "verl_recipes.cpu.platform"
    assert cpu_env("rationanomaly_grpo")["VERL_USE_EXTERNAL_MODULES"] == "verl_recipes.cpu.platform"


def test_cpu_overlay_is_a_config_verl_accepts(keyseq_data: Path, keyseq_model: Path) -> None:
    # the overlay once set critic.model.fsdp_config (a key of older verl); only a run with a
    # critic converts that section, so the GRPO end-to-end run never saw verl refuse it
    from verl_recipes.cpu import cpu_overrides

    overrides = [f"actor_rollout_ref.model.path={keyseq_model}", f"logrl.data_dir={keyseq_data}",
                 *cpu_overrides("ppo", recipe="logneo_ppo")]
    cfg = compose.compose_recipe("logneo_ppo", overrides)
    compose.validate_recipe(cfg)  # the critic's sections included: its model is a local folder
    assert cfg.critic.fsdp.mixed_precision.param_dtype == "fp32"
    assert cfg.actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype == "fp32"
