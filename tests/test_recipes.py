"""Every verl recipe composes against the installed verl 0.9.1 and passes its validation.

The RationAnomaly recipe is checked against the paper's released launcher: every hyper-parameter
that launcher passes to verl, compared on the configuration our launcher would hand verl (the
recipe composed with verl's ``ppo_trainer`` defaults and the launcher's path pins, which is what
``bash model_train.sh rationanomaly_grpo --dry-run`` prints).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_recipes import compose

REPO = Path(__file__).resolve().parents[1]
PPO_RECIPES = ("rationanomaly_grpo", "ppo_gae")
# next-key PPO recipes (key-sequence data, key tokenizer): composed and validated with a keyseq model
# in tests/test_logneo_verl.py
KEYSEQ_PPO_RECIPES = ("logneo_ppo",)

# RationAnomaly's released GRPO launcher: github.com/Gravityless/RationAnomaly, model_train.sh
# (commit 727e0ac), its `python -m verl.trainer.main_ppo` command line. Each value is the one that
# launcher passes; the comment is the argument as written there.
PAPER_LAUNCHER: dict[str, object] = {
    "algorithm.adv_estimator": "grpo",  # algorithm.adv_estimator=grpo
    "data.train_batch_size": 32,  # data.train_batch_size=32
    "data.max_prompt_length": 2048,  # data.max_prompt_length=2048
    "data.max_response_length": 1024,  # data.max_response_length=1024
    "data.truncation": "left",  # data.truncation=left
    "actor_rollout_ref.actor.optim.lr": 4e-7,  # actor_rollout_ref.actor.optim.lr=4e-7
    "actor_rollout_ref.model.use_remove_padding": True,  # ...model.use_remove_padding=True
    "actor_rollout_ref.actor.ppo_mini_batch_size": 8,  # ...actor.ppo_mini_batch_size=8
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 1,  # ...ppo_micro_batch_size_per_gpu=1
    "actor_rollout_ref.actor.use_kl_loss": True,  # ...actor.use_kl_loss=True
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,  # ...actor.kl_loss_coef=0.001
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",  # ...actor.kl_loss_type=low_var_kl
    # ...model.enable_gradient_checkpointing=True
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.actor.fsdp_config.param_offload": True,  # ...fsdp_config.param_offload=True
    # ...actor.fsdp_config.optimizer_offload=True
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
    # ...rollout.log_prob_micro_batch_size_per_gpu=1
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 1,
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,  # ...tensor_model_parallel_size=1
    "actor_rollout_ref.rollout.name": "vllm",  # ...rollout.name=vllm
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.8,  # ...gpu_memory_utilization=0.8
    "actor_rollout_ref.rollout.temperature": 0.9,  # ...rollout.temperature=0.9
    "actor_rollout_ref.rollout.n": 16,  # ...rollout.n=16
    # ...ref.log_prob_micro_batch_size_per_gpu=4
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 4,
    "actor_rollout_ref.ref.fsdp_config.param_offload": True,  # ...ref.fsdp_config.param_offload=True
    "algorithm.kl_ctrl.kl_coef": 0.001,  # algorithm.kl_ctrl.kl_coef=0.001
    "trainer.critic_warmup": 0,  # trainer.critic_warmup=0
    "trainer.n_gpus_per_node": 8,  # trainer.n_gpus_per_node=8
    "trainer.nnodes": 1,  # trainer.nnodes=1
    "trainer.default_hdfs_dir": None,  # trainer.default_hdfs_dir=null
    "trainer.save_freq": 10,  # trainer.save_freq=10
    "trainer.test_freq": -1,  # trainer.test_freq=-1
    "trainer.val_before_train": False,  # trainer.val_before_train=false
    "trainer.total_epochs": 2,  # trainer.total_epochs=2
    # Not passed by the launcher, so verl's default: standard GRPO divides advantages by the
    # group's std (verl's packaged ppo_trainer.yaml; test_verl_default_is_the_papers_grpo).
    "algorithm.norm_adv_by_std_in_grpo": True,
}
# Launcher arguments not compared, and why: data.train_files/val_files (our dataset layout,
# checked in test_ppo_recipe_composes_and_validates), data.val_batch_size=32 (deprecated in
# verl 0.9.1, validation-only batching), actor_rollout_ref.model.path (test_paper_model), the
# logger list (test_paper_loggers), project/experiment names and default_local_dir (bookkeeping).

# Where the recipe deliberately differs from the launcher, and why (also in the recipe README).
DEVIATIONS: dict[str, str] = {
    "actor_rollout_ref.model.use_remove_padding": "packed sequences need flash-attn, which "
    "requirements.txt does not install (sdpa attention instead)",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "throughput only: micro-batches "
    "accumulate to the same mini-batch of 8 prompts x 16 rollouts",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "throughput only (old log-probs)",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": "throughput only (reference log-probs)",
    "trainer.test_freq": "validate every 10 steps (the launcher never validated)",
    "trainer.val_before_train": "a baseline validation score before the first update",
    "algorithm.norm_adv_by_std_in_grpo": "Dr. GRPO, so the class weights in the reward reach the "
    "advantages instead of cancelling (reward/class_weights.py)",
}


@pytest.fixture
def grpo_cfg(monkeypatch: pytest.MonkeyPatch):
    """The rationanomaly_grpo config our launcher hands verl, with MODEL_PATH unset."""
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return compose.compose_recipe("rationanomaly_grpo")


def test_recipes_are_listed():
    assert set(PPO_RECIPES) | set(KEYSEQ_PPO_RECIPES) | {"sft_lora"} <= set(compose.list_recipes())


@pytest.mark.parametrize("name", PPO_RECIPES)
def test_ppo_recipe_composes_and_validates(name, tiny_chat_model):
    overrides = [f"actor_rollout_ref.model.path={tiny_chat_model}"]
    cfg = compose.compose_recipe(name, overrides)
    compose.validate_recipe(cfg)
    assert compose.trainer_kind(cfg) == "ppo"
    # paths pinned to the repository (the recipe's relative values), the model as typed
    assert cfg.reward.custom_reward_function.path == f"{REPO}/reward/verl_reward.py"
    assert cfg.data.train_files == f"{REPO}/datasets/bgl/train.parquet"
    assert cfg.data.val_files == f"{REPO}/datasets/bgl/val.parquet"
    assert cfg.actor_rollout_ref.model.path == str(tiny_chat_model)
    assert cfg.trainer.test_freq == 10  # both recipes validate every 10 steps


def test_rationanomaly_matches_the_papers_launcher(grpo_cfg):
    got = {key: OmegaConf.select(grpo_cfg, key, default="<absent>") for key in PAPER_LAUNCHER}
    differ = {key for key, value in PAPER_LAUNCHER.items() if got[key] != value}
    # every difference from the paper is a documented deviation, and every documented deviation
    # is a real difference
    assert differ == set(DEVIATIONS), {key: (PAPER_LAUNCHER[key], got[key]) for key in differ}


def test_verl_default_is_the_papers_grpo():
    """The launcher leaves std normalisation at verl's default: True in verl's own yaml."""
    import verl

    verl_yaml = OmegaConf.load(Path(verl.__file__).parent / "trainer" / "config" / "ppo_trainer.yaml")
    assert verl_yaml.algorithm.norm_adv_by_std_in_grpo is True


def test_paper_model(grpo_cfg):
    # launcher: MODEL_PATH=./models/llama-2-7b-chat-hf, a local copy of this hub model
    assert grpo_cfg.actor_rollout_ref.model.path == "meta-llama/Llama-2-7b-chat-hf"


def test_paper_loggers(grpo_cfg):
    # launcher: trainer.logger=['wandb','console']
    assert sorted(grpo_cfg.trainer.logger) == ["console", "wandb"]


def test_class_weights_reach_the_reward_verl_loads(grpo_cfg, tiny_chat_model):
    """verl's reward manager scores with our function, the recipe's class weights bound (2 : 1)."""
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    manager = load_reward_manager(grpo_cfg, tokenizer)
    assert type(manager) is NaiveRewardManager  # reward.reward_manager.name: naive
    unweighted = compose.compose_recipe(
        "rationanomaly_grpo", ["reward.custom_reward_function.reward_kwargs.class_weights.abnormal=1.0"])
    plain = load_reward_manager(unweighted, tokenizer).compute_score
    for gold, weight in (("abnormal", 2.0), ("normal", 1.0)):
        for answer in ("abnormal", "normal"):
            text = f"<think>fine</think><answer>{answer}</answer>"
            got = manager.compute_score("synthetic", text, gold, {"log": "ok"})
            base = plain("synthetic", text, gold, {"log": "ok"})
            assert got["pred"] == answer and got["acc"] == float(answer == gold)
            assert got["score"] == pytest.approx(weight * base["score"]), (gold, answer)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm.norm_adv_by_std_in_grpo=true"],  # std normalisation cancels the weights
        ["algorithm.adv_estimator=grpo_passk", "algorithm.norm_adv_by_std_in_grpo=true"],
    ],
)
def test_validation_refuses_class_weights_the_estimator_cancels(overrides, tiny_chat_model):
    cfg = compose.compose_recipe(
        "rationanomaly_grpo", [f"actor_rollout_ref.model.path={tiny_chat_model}", *overrides]
    )
    with pytest.raises(compose.RecipeError, match="do not survive"):
        compose.validate_recipe(cfg)
    # the same estimator without class weights is fine
    cfg = compose.compose_recipe(
        "rationanomaly_grpo",
        [f"actor_rollout_ref.model.path={tiny_chat_model}", *overrides,
         "~reward.custom_reward_function.reward_kwargs.class_weights"],
    )
    compose.validate_recipe(cfg)


def test_ppo_gae_uses_a_critic():
    from verl.trainer.ppo.utils import need_critic

    cfg = compose.compose_recipe("ppo_gae")
    assert cfg.algorithm.adv_estimator == "gae" and need_critic(cfg)


def test_sft_lora_composes_and_validates(tiny_chat_model):
    cfg = compose.compose_recipe("sft_lora", [f"model.path={tiny_chat_model}"])
    compose.validate_recipe(cfg)
    assert compose.trainer_kind(cfg) == "sft"
    assert cfg.model.lora_rank == 16 and cfg.data.messages_key == "messages"
    assert cfg.data.train_files == f"{REPO}/datasets/bgl/sft_train.parquet"


def test_sft_validation_rejects_a_backwards_profile_interval(tiny_chat_model):
    cfg = compose.compose_recipe("sft_lora", [f"model.path={tiny_chat_model}",
                                              "trainer.profile_interval=[5,1]"])
    with pytest.raises(compose.RecipeError, match=r"profile_interval must be \[start, end\]"):
        compose.validate_recipe(cfg)


@pytest.mark.parametrize("weight", ["0", "-1.0", "nan"])
def test_validation_rejects_a_class_weight_that_is_not_positive(weight, tiny_chat_model):
    cfg = compose.compose_recipe("rationanomaly_grpo", [
        f"actor_rollout_ref.model.path={tiny_chat_model}",
        f"reward.custom_reward_function.reward_kwargs.class_weights.abnormal={weight}"])
    with pytest.raises(compose.RecipeError, match=r"class_weights\.abnormal must be finite and > 0"):
        compose.validate_recipe(cfg)


def test_validation_can_fail():
    cfg = compose.compose_recipe("rationanomaly_grpo", ["actor_rollout_ref.actor.ppo_mini_batch_size=64"])
    with pytest.raises(compose.RecipeError, match="ppo_mini_batch_size"):
        compose.validate_recipe(cfg)


@pytest.mark.parametrize("name", [*PPO_RECIPES, *KEYSEQ_PPO_RECIPES, "sft_lora"])
def test_no_recipe_sets_the_stale_top_level_reward_keys(name):
    raw = OmegaConf.load(compose.recipe_yaml(name))
    assert "custom_reward_function" not in raw
    assert "reward_manager" not in (raw.get("reward_model") or {})


def test_stale_reward_key_is_refused():
    with pytest.raises(compose.RecipeError, match="custom_reward_function"):
        compose.compose_recipe("rationanomaly_grpo", ["custom_reward_function.path=/x.py"])


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(compose.RecipeError, match="unknown recipe"):
        compose.compose_recipe("no_such_recipe")


def test_installed_trl_has_what_verl_fsdp_engine_imports() -> None:
    """verl 0.9.1's model build imports this class whenever trl is installed (see pyproject pin)."""
    from verl.utils.import_utils import is_trl_available

    assert is_trl_available()
    from trl.experimental.ppo import AutoModelForCausalLMWithValueHead

    assert hasattr(AutoModelForCausalLMWithValueHead, "state_dict")


@pytest.mark.parametrize(("cpu_max", "cap"), [("200000 100000\n", 2), ("50000 100000\n", 1),
                                              ("150000 100000\n", 2), ("max 100000\n", None)])
def test_cpu_threads_follow_the_cgroup_quota_not_the_host(tmp_path, cpu_max: str, cap: int | None):
    # os.cpu_count() counts the host: a container given 2 of 64 cores got 64 threads per process
    from verl_recipes.cpu import usable_cpus

    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert usable_cpus(path) == (cores if cap is None else min(cores, cap))
