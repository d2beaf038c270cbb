"""Real verl 0.9.1: reward manager loading, run_single on a DataProto, the class-weighted estimator."""

from __future__ import annotations

import os
import subprocess
import sys
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
        "reward.reward_manager.source=importlib",
        "reward.reward_manager.name=LogRLRewardManager",
        f"reward.reward_manager.module.path={path}",
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
    assert type(manager).__name__ == "LogRLRewardManager"
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


def _assert_fresh_python_ok(code: str, **env: str) -> None:
    """Run ``code`` in a fresh interpreter (outside the repo) and require it to print ``ok``.

    verl's plugin discovery is off: the ``verl.plugins`` entry point of an installed logrl would
    register the estimator at ``import verl`` and hide the mechanism under test.
    """
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none", **env}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_reward_manager_import_registers_estimator_in_a_fresh_process() -> None:
    """The TaskRunner only runs resolve_reward_manager_cls; that must register the estimator."""
    code = f"""
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.reward import resolve_reward_manager_cls
assert "grpo_class_weighted" not in core_algos.ADV_ESTIMATOR_REGISTRY
cfg = OmegaConf.create({{"reward": {{"reward_manager": {{"source": "importlib",
      "name": "LogRLRewardManager", "module": {{"path": "{REWARD_FILE}"}}}}}}}})
cls = resolve_reward_manager_cls(cfg)
assert cls.__name__ == "LogRLRewardManager", cls
assert "grpo_class_weighted" in core_algos.ADV_ESTIMATOR_REGISTRY
print("ok")
"""
    _assert_fresh_python_ok(code, PYTHONPATH="")


def test_verl_external_modules_env_registers_estimator() -> None:
    """The recipe's mechanism: VERL_USE_EXTERNAL_MODULES=reward.advantage in every Ray process."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo import core_algos\n"
        "assert 'grpo_class_weighted' in core_algos.ADV_ESTIMATOR_REGISTRY\n"
        "print('ok')\n"
    )
    _assert_fresh_python_ok(code, VERL_USE_EXTERNAL_MODULES="reward.advantage")


def _group_batch(offset: float):
    """Two groups of four: one abnormal log, one normal log, two right and two wrong answers each."""
    from verl import DataProto

    rows, uids = [], []
    for uid, gold in (("g_abnormal", ABNORMAL), ("g_normal", NORMAL)):
        for ok in (True, True, False, False):
            rows.append(
                compute_score("bgl", RESPONSES[(gold, ok)], gold, {}, abnormal_offset=offset)["score"]
            )
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


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_class_weighted_advantage_on_verl_compute_advantage(norm_by_std: bool) -> None:
    from verl.trainer.ppo.ray_trainer import compute_advantage

    import reward.advantage  # noqa: F401  (registers the estimator)

    algo = OmegaConf.create(
        {
            "adv_estimator": "grpo_class_weighted",
            "norm_adv_by_std_in_grpo": norm_by_std,
            "class_weighting": {"missed_anomaly": 3.0, "false_alarm": 1.0, "abnormal_offset": 100.0},
        }
    )
    plain = compute_advantage(
        _group_batch(0.0),
        adv_estimator="grpo",
        num_repeat=4,
        norm_adv_by_std_in_grpo=norm_by_std,
        config=algo,
    )
    ours = compute_advantage(
        _group_batch(100.0),
        adv_estimator="grpo_class_weighted",
        num_repeat=4,
        norm_adv_by_std_in_grpo=norm_by_std,
        config=algo,
    )
    # the carrier offset cancels: dividing out the weights gives back plain GRPO exactly
    weights = torch.tensor([3.0] * 4 + [1.0] * 4).unsqueeze(-1)
    torch.testing.assert_close(
        ours.batch["advantages"] / weights, plain.batch["advantages"], atol=1e-4, rtol=1e-4
    )
    plain_ratio = _update_size(plain, "g_abnormal") / _update_size(plain, "g_normal")
    ours_ratio = _update_size(ours, "g_abnormal") / _update_size(ours, "g_normal")
    assert ours_ratio == pytest.approx(3.0 * plain_ratio, rel=1e-4)
    if norm_by_std:
        # GRPO's std normalisation cancels the reward's class asymmetry ...
        assert plain_ratio == pytest.approx(1.0, rel=1e-4)
        # ... and the estimator restores it after normalisation, in the configured ratio
        assert ours_ratio == pytest.approx(3.0, rel=1e-4)
    else:
        # Dr. GRPO keeps the reward's scale: missed anomalies already weigh more
        assert plain_ratio > 1.0


def test_logged_scores_lose_the_carrier_offset() -> None:
    """After the advantage step, verl's token_level_scores (what it logs) hold the true reward."""
    from verl.trainer.ppo.metric_utils import compute_data_metrics
    from verl.trainer.ppo.ray_trainer import compute_advantage

    import reward.advantage  # noqa: F401  (registers the estimator)

    algo = OmegaConf.create({"adv_estimator": "grpo_class_weighted", "norm_adv_by_std_in_grpo": True,
                             "class_weighting": {"abnormal_offset": 100.0}})
    batch = _group_batch(100.0)
    true_scores = _group_batch(0.0).batch["token_level_rewards"].sum(-1)
    assert float(batch.batch["token_level_rewards"].sum(-1).max()) > 50  # the carrier is there
    # as in verl's fit loop without KL in the reward: the rewards *are* the scores
    batch.batch["token_level_scores"] = batch.batch["token_level_rewards"]
    batch = compute_advantage(batch, adv_estimator="grpo_class_weighted", num_repeat=4, config=algo)
    torch.testing.assert_close(batch.batch["token_level_scores"].sum(-1), true_scores)
    n, length = batch.batch["response_mask"].shape
    batch.batch["responses"] = torch.zeros((n, length), dtype=torch.long)
    batch.batch["prompts"] = torch.zeros((n, length), dtype=torch.long)
    batch.batch["attention_mask"] = torch.ones((n, 2 * length), dtype=torch.long)
    batch.batch["returns"] = batch.batch["advantages"]
    metrics = compute_data_metrics(batch, use_critic=False)
    assert metrics["critic/score/mean"] == pytest.approx(float(true_scores.mean()), abs=1e-5)
    assert metrics["critic/score/max"] < 50


def test_class_weighting_rejects_bad_config() -> None:
    from reward.advantage import class_weighting_settings

    with pytest.raises(ValueError, match="unknown"):
        class_weighting_settings({"class_weighting": {"bogus": 1}})
    assert class_weighting_settings(None)["missed_anomaly"] == 2.0


def test_installed_entry_point_registers_estimator_at_import_verl() -> None:
    """pyproject's ``verl.plugins`` entry point registers the estimator in any process (Ray workers)."""
    code = """
from verl.trainer.ppo import core_algos
assert "grpo_class_weighted" in core_algos.ADV_ESTIMATOR_REGISTRY, sorted(core_algos.ADV_ESTIMATOR_REGISTRY)
print("ok")
"""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_USE_EXTERNAL_PLUGINS")}
    env["PYTHONPATH"] = ""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
