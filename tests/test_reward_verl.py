"""Real verl 0.9.1: reward manager, run_single on a DataProto, class weights through verl's estimators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

import verl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reward import ABNORMAL, NORMAL, compute_score

REPO = Path(__file__).resolve().parents[1]
REWARD_FILE = REPO / "reward" / "verl_reward.py"
RESPONSES = {
    (ABNORMAL, True): "<think>kernel panic is fatal</think><answer>abnormal</answer>",
    (ABNORMAL, False): "<think>looks routine</think><answer>normal</answer>",
    (NORMAL, True): "<think>routine message</think><answer>normal</answer>",
    (NORMAL, False): "<think>sounds bad</think><answer>abnormal</answer>",
}


def ppo_config(*overrides: str):
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def reward_overrides(
    name: str = "compute_score", preset: str = "rationanomaly", path: str = str(REWARD_FILE)
) -> list[str]:
    return [
        f"reward.custom_reward_function.path={path}",
        f"reward.custom_reward_function.name={name}",
        f"+reward.custom_reward_function.reward_kwargs.preset={preset}",
        "reward.reward_manager.name=naive",
    ]


def make_batch(tokenizer, rows: list[tuple[str, str]]):
    from verl import DataProto

    prompt_len, resp_len = 4, 48
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"][:resp_len] for text, _ in rows]
    responses = torch.full((len(rows), resp_len), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rows), prompt_len + resp_len), dtype=torch.long)
    for i, ids in enumerate(encoded):
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, :prompt_len] = 1
        mask[i, prompt_len : prompt_len + len(ids)] = 1
    prompts = torch.ones((len(rows), prompt_len), dtype=torch.long)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["bgl"] * len(rows), dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": g} for _, g in rows], dtype=object),
            "extra_info": np.array(
                [{"log": "kernel panic", "index": i} for i in range(len(rows))], dtype=object
            ),
        },
    )


@pytest.mark.parametrize(
    ("name", "path"),
    [("compute_score", str(REWARD_FILE)), ("compute_score_async", "pkg://reward.verl_reward")],
)
def test_load_reward_manager_and_run_single(tiny_chat_model: Path, name: str, path: str) -> None:
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    config = ppo_config(*reward_overrides(name=name, path=path))
    manager = load_reward_manager(config, tokenizer)
    assert type(manager).__name__ == "NaiveRewardManager"
    rows = [(RESPONSES[(g, ok)], g) for g in (ABNORMAL, NORMAL) for ok in (True, False)]
    data = make_batch(tokenizer, rows)
    for i, (text, gold) in enumerate(rows):
        out = manager.loop.run_until_complete(manager.run_single(data[i : i + 1]))
        decoded = tokenizer.decode(
            data.batch["responses"][i][: len(tokenizer(text)["input_ids"])], skip_special_tokens=True
        )
        expected = compute_score("bgl", decoded, gold, {"log": "kernel panic"}, preset="rationanomaly")
        assert out["reward_score"] == pytest.approx(expected["score"])
        assert out["reward_extra_info"]["pred"] == expected["pred"]
        assert set(out["reward_extra_info"]) == set(expected)


def test_released_preset_through_verl(tiny_chat_model: Path) -> None:
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    manager = load_reward_manager(ppo_config(*reward_overrides(preset="released")), tokenizer)
    data = make_batch(tokenizer, [(RESPONSES[(NORMAL, False)], NORMAL)])
    out = manager.loop.run_until_complete(manager.run_single(data))
    assert round(out["reward_score"], 3) == -6.567


def _group_batch(class_weights: dict[str, float]):
    """Two groups of four: one abnormal log, one normal log, two right and two wrong answers each."""
    from verl import DataProto

    rows, uids = [], []
    for uid, gold in (("g_abnormal", ABNORMAL), ("g_normal", NORMAL)):
        for ok in (True, True, False, False):
            result = compute_score("bgl", RESPONSES[(gold, ok)], gold, {}, preset="answer_only",
                                   class_weights=class_weights)
            rows.append(result["score"])
            uids.append(uid)
    resp_len = 5
    rewards = torch.zeros((len(rows), resp_len))
    rewards[:, -1] = torch.tensor(rows)
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": torch.ones((len(rows), resp_len))},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def _update_size(data, group: str) -> float:
    rows = data.non_tensor_batch["uid"] == group
    return float(data.batch["advantages"][torch.from_numpy(rows)].abs().sum())


# answer_only: right 0.1 + 1.0; missed anomaly 0.1 - 1.5; false alarm 0.1 - 1.0. Two right and two
# wrong per group, so Dr. GRPO's advantages are +-spread/2 and a group's update size is 2 x spread.
SPREAD_ABNORMAL, SPREAD_NORMAL = 1.1 - (-1.4), 1.1 - (-0.9)


@pytest.mark.parametrize(
    ("norm_by_std", "expected_ratio"),
    [(False, 3.0 * SPREAD_ABNORMAL / SPREAD_NORMAL), (True, 1.0)],
)
def test_class_weights_through_verl_grpo(norm_by_std: bool, expected_ratio: float) -> None:
    """Dr. GRPO keeps the reward's class weight (and its asymmetry); std-normalised GRPO cancels both."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    algo = OmegaConf.create({"adv_estimator": "grpo", "norm_adv_by_std_in_grpo": norm_by_std})
    data = compute_advantage(_group_batch({"abnormal": 3.0, "normal": 1.0}), adv_estimator="grpo",
                             num_repeat=4, norm_adv_by_std_in_grpo=norm_by_std, config=algo)
    ratio = _update_size(data, "g_abnormal") / _update_size(data, "g_normal")
    assert ratio == pytest.approx(expected_ratio, rel=1e-4)


@pytest.mark.parametrize(
    ("estimator", "norm_by_std", "accepted"),
    [
        ("grpo", False, True),
        ("rloo", True, True),
        ("reinforce_plus_plus", True, True),
        ("gae", True, True),
        ("grpo", True, False),
        ("grpo_passk", True, False),
    ],
)
def test_check_class_weights_against_verl_estimators(estimator: str, norm_by_std: bool, accepted: bool):
    from reward.class_weights import check_class_weights

    algo = OmegaConf.create({"adv_estimator": estimator, "norm_adv_by_std_in_grpo": norm_by_std,
                             "gamma": 1.0, "lam": 1.0})
    weighted = {"class_weights": {"abnormal": 2.0, "normal": 1.0}}
    if accepted:
        check_class_weights(estimator, algo, weighted)
    else:
        with pytest.raises(ValueError, match="do not survive"):
            check_class_weights(estimator, algo, weighted)
    # equal weights: nothing to keep, every estimator is fine
    check_class_weights(estimator, algo, {"class_weights": {"abnormal": 1.5, "normal": 1.5}})
