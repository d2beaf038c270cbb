"""Every verl recipe composes against the installed verl 0.9.1 and passes its validation."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from verl_recipes import compose

PPO_RECIPES = ("rationanomaly_grpo", "ppo_gae")

# Item 1 of the training issue: the paper's GRPO setting.
RATIONANOMALY_EXPECTED = {
    "trainer.n_gpus_per_node": 8,
    "trainer.nnodes": 1,
    "actor_rollout_ref.actor.optim.lr": 4.0e-7,
    "data.train_batch_size": 32,
    "actor_rollout_ref.rollout.n": 16,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 8,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.rollout.temperature": 0.9,
    "data.max_prompt_length": 2048,
    "data.max_response_length": 1024,
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.8,
    "actor_rollout_ref.actor.fsdp_config.param_offload": True,
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": True,
    "trainer.total_epochs": 2,
    "trainer.save_freq": 10,
    "algorithm.adv_estimator": "grpo",
    "algorithm.norm_adv_by_std_in_grpo": False,
    "reward.custom_reward_function.name": "compute_score",
}


def test_recipes_are_listed():
    assert set(PPO_RECIPES) | {"sft_lora"} <= set(compose.list_recipes())


@pytest.mark.parametrize("name", PPO_RECIPES)
def test_ppo_recipe_composes_and_validates(name, tiny_chat_model):
    overrides = [f"actor_rollout_ref.model.path={tiny_chat_model}"]
    cfg = compose.compose_recipe(name, overrides)
    compose.validate_recipe(cfg)
    assert compose.trainer_kind(cfg) == "ppo"
    path = cfg.reward.custom_reward_function.path
    assert path.startswith("/") and path.endswith("reward/verl_reward.py")
    assert cfg.data.train_files.startswith("/")
    assert cfg.trainer.test_freq > 0 and cfg.data.val_files


def test_rationanomaly_values_match_the_paper():
    cfg = compose.compose_recipe("rationanomaly_grpo")
    got = {key: OmegaConf.select(cfg, key) for key in RATIONANOMALY_EXPECTED}
    assert got == RATIONANOMALY_EXPECTED
    weights = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.class_weights)
    assert weights == {"abnormal": 2.0, "normal": 1.0}


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
    assert cfg.model.lora_rank > 0 and cfg.data.messages_key == "messages"


def test_validation_can_fail():
    cfg = compose.compose_recipe("rationanomaly_grpo", ["actor_rollout_ref.actor.ppo_mini_batch_size=64"])
    with pytest.raises(compose.RecipeError, match="ppo_mini_batch_size"):
        compose.validate_recipe(cfg)


@pytest.mark.parametrize("name", [*PPO_RECIPES, "sft_lora"])
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


def test_reward_loads_through_verl_load_reward_manager(tiny_chat_model):
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import load_reward_manager

    cfg = compose.compose_recipe("rationanomaly_grpo")
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    manager = load_reward_manager(cfg, tokenizer)
    assert manager is not None
    # The composed reward function is ours, with the recipe's kwargs bound.
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(cfg)
    out = fn("synthetic", "<think>fine</think><answer>normal</answer>", "normal", {"log": "ok"})
    assert out["pred"] == "normal" and out["score"] > 0


def test_installed_trl_has_what_verl_fsdp_engine_imports() -> None:
    """verl 0.9.1's model build imports this class whenever trl is installed (see pyproject pin)."""
    from verl.utils.import_utils import is_trl_available

    assert is_trl_available()
    from trl.experimental.ppo import AutoModelForCausalLMWithValueHead

    assert hasattr(AutoModelForCausalLMWithValueHead, "state_dict")
