"""Path pinning in ``verl_recipes.compose``: explicit rules, never guesses from how a value looks.

Every test composes from a folder other than the repository (``tmp_path``), as a user would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verl_recipes import compose

REPO = Path(__file__).resolve().parents[1]
PYTHONPATH_KEY = "ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work from an empty folder outside the repository, with no MODEL_PATH in the environment."""
    cwd = tmp_path / "caller"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return cwd


# --- item 1: hub ids with a dot in their name are hub ids, not repository paths --------------------

@pytest.mark.parametrize("hub_id", ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"])
def test_dotted_hub_id_is_kept_exactly(elsewhere: Path, hub_id: str) -> None:
    cfg = compose.compose_recipe("rationanomaly_grpo", [f"actor_rollout_ref.model.path={hub_id}"])
    assert cfg.actor_rollout_ref.model.path == hub_id


def test_dotted_hub_id_reaches_the_critic_and_sft_model(elsewhere: Path) -> None:
    cfg = compose.compose_recipe("ppo_gae", ["actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct"])
    assert cfg.critic.model.path == "Qwen/Qwen2.5-7B-Instruct"  # ${actor_rollout_ref.model.path}
    cfg = compose.compose_recipe("sft_lora", ["model.path=meta-llama/Llama-3.1-8B-Instruct"])
    assert cfg.model.path == "meta-llama/Llama-3.1-8B-Instruct"


def test_dotted_hub_id_from_model_path_env_is_kept(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", "Qwen/Qwen2.5-7B-Instruct")
    cfg = compose.compose_recipe("sft_lora")
    assert cfg.model.path == "Qwen/Qwen2.5-7B-Instruct"
    # resolved in the launching shell: the trainer gets the value, not the interpolation
    assert "model.path='Qwen/Qwen2.5-7B-Instruct'" in compose.path_overrides(
        compose.compose_recipe("sft_lora", absolute_paths=False))


def test_model_path_naming_a_local_folder_becomes_absolute(elsewhere: Path) -> None:
    (elsewhere / "models" / "Qwen2.5-0.5B").mkdir(parents=True)
    cfg = compose.compose_recipe("rationanomaly_grpo", ["actor_rollout_ref.model.path=models/Qwen2.5-0.5B"])
    assert cfg.actor_rollout_ref.model.path == f"{elsewhere}/models/Qwen2.5-0.5B"


def test_model_path_env_naming_a_local_folder_is_relative_to_the_caller(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (elsewhere / "llama").mkdir()
    monkeypatch.setenv("MODEL_PATH", "llama")
    cfg = compose.compose_recipe("sft_lora")
    assert cfg.model.path == f"{elsewhere}/llama"


def test_relative_override_is_relative_to_the_working_directory(elsewhere: Path) -> None:
    cfg = compose.compose_recipe("rationanomaly_grpo", ["data.train_files=mine/train.parquet",
                                                        "trainer.default_local_dir=ckpt"])
    assert cfg.data.train_files == f"{elsewhere}/mine/train.parquet"  # need not exist yet
    assert cfg.trainer.default_local_dir == f"{elsewhere}/ckpt"
    # not typed: still the recipe's, relative to the repository
    assert cfg.data.val_files == f"{REPO}/datasets/bgl/val.parquet"


def test_recipe_value_is_relative_to_the_repository_even_where_the_caller_has_it(elsewhere: Path) -> None:
    # the caller's folder holds files with the recipe's relative names: the recipe still means its own
    (elsewhere / "reward").mkdir()
    (elsewhere / "reward" / "verl_reward.py").write_text("")
    (elsewhere / "datasets" / "bgl").mkdir(parents=True)
    (elsewhere / "datasets" / "bgl" / "train.parquet").write_text("")
    cfg = compose.compose_recipe("rationanomaly_grpo")
    assert cfg.reward.custom_reward_function.path == f"{REPO}/reward/verl_reward.py"
    assert cfg.data.train_files == f"{REPO}/datasets/bgl/train.parquet"
    assert cfg.trainer.default_local_dir == f"{REPO}/checkpoints/logrl/rationanomaly_grpo_bgl"


def test_override_of_the_key_a_path_starts_with_is_the_callers(elsewhere: Path, tmp_path: Path) -> None:
    # keyseq_sft: data.train_files: ${logrl.data_dir}/train.parquet
    cfg = compose.compose_recipe("keyseq_sft", ["logrl.data_dir=seqs", f"model.path={tmp_path}"])
    assert cfg.data.train_files == f"{elsewhere}/seqs/train.parquet"
    assert cfg.data.val_files == f"{elsewhere}/seqs/val.parquet"
    cfg = compose.compose_recipe("keyseq_sft", [f"model.path={tmp_path}"])
    assert cfg.data.train_files == f"{REPO}/datasets/bgl/keyseq/train.parquet"


def test_absolute_tilde_uri_and_list_values(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    cfg = compose.compose_recipe("rationanomaly_grpo", [
        "data.train_files=[a.parquet,/srv/b.parquet,'~/c.parquet','hdfs://nn/d.parquet']",
        "data.val_files=/srv/val.parquet",
        "trainer.default_local_dir='~/ckpt'",
    ])
    assert list(cfg.data.train_files) == [f"{elsewhere}/a.parquet", "/srv/b.parquet",
                                          "/home/tester/c.parquet", "hdfs://nn/d.parquet"]
    assert cfg.data.val_files == "/srv/val.parquet"
    assert cfg.trainer.default_local_dir == "/home/tester/ckpt"
    cfg = compose.compose_recipe("keyseq_sft", ["model.path=/srv/model"])
    assert cfg.data.custom_cls.path == "pkg://verl_recipes.keyseq_sft.dataset"
    assert cfg.model.path == "/srv/model"


@pytest.mark.parametrize(("value", "kind", "expected"), [
    ("Qwen/Qwen2.5-7B-Instruct", "model", "Qwen/Qwen2.5-7B-Instruct"),
    ("meta-llama/Llama-3.1-8B-Instruct", "model", "meta-llama/Llama-3.1-8B-Instruct"),
    ("gpt2", "model", "gpt2"),
    ("here/model", "model", "/base/here/model"),  # an existing folder under base
    ("s3://bucket/model", "model", "s3://bucket/model"),
    ("/abs/model", "model", "/abs/model"),
    ("data/x.parquet", "file", "/base/data/x.parquet"),
    ("./data/../data/x.parquet", "file", "/base/data/x.parquet"),
    ("pkg://verl_recipes.keyseq_sft.dataset", "file", "pkg://verl_recipes.keyseq_sft.dataset"),
    (".:$PYTHONPATH", "search", "/base:$PYTHONPATH"),
    ("lib:${PYTHONPATH}:/opt/x", "search", "/base/lib:$PYTHONPATH:/opt/x"),
])
def test_resolve_path_rules(value: str, kind: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_is_dir = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda p: str(p) == "/base/here/model" or real_is_dir(p))
    assert compose.resolve_path(value, kind, Path("/base")) == expected


# --- item 2: Ray workers get the repository root, then their own PYTHONPATH -----------------------

@pytest.mark.parametrize("recipe", ["rationanomaly_grpo", "ppo_gae"])
def test_worker_pythonpath_is_repo_root_then_the_workers_own(elsewhere: Path, recipe: str) -> None:
    from omegaconf import OmegaConf

    cfg = compose.compose_recipe(recipe)
    # the literal string Ray expands on each worker ($NAME: OmegaConf and Hydra leave it alone)
    assert OmegaConf.select(cfg, PYTHONPATH_KEY) == f"{REPO}:$PYTHONPATH"


def test_typed_escaped_pythonpath_reference_becomes_the_form_ray_receives(elsewhere: Path) -> None:
    from omegaconf import OmegaConf

    cfg = compose.compose_recipe("rationanomaly_grpo", [f"{PYTHONPATH_KEY}='lib:\\${{PYTHONPATH}}'"])
    assert OmegaConf.select(cfg, PYTHONPATH_KEY) == f"{elsewhere}/lib:$PYTHONPATH"


class _RayInitCalled(Exception):
    pass


def test_pythonpath_through_verl_main_ppo_and_ray_appends_the_cluster_path(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The value goes through verl's own ``run_ppo`` (unresolved config → ray.init) and Ray's expansion."""
    import ray
    from omegaconf import OmegaConf
    from ray._private.utils import update_envs
    from verl.trainer import main_ppo

    seen: dict = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise _RayInitCalled

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    cfg = compose.compose_recipe("rationanomaly_grpo")
    # verl's TaskRunner resolves the whole config after ray.init: no unresolvable ${PYTHONPATH} in it
    OmegaConf.to_container(cfg, resolve=True)
    with pytest.raises(_RayInitCalled):
        main_ppo.run_ppo(cfg, None)
    value = seen["runtime_env"]["env_vars"]["PYTHONPATH"]
    assert value == f"{REPO}:$PYTHONPATH"

    # what a worker whose own PYTHONPATH is /cluster/site ends up with
    monkeypatch.setenv("PYTHONPATH", "/cluster/site")
    update_envs({"PYTHONPATH": value})
    assert os.environ["PYTHONPATH"] == f"{REPO}:/cluster/site"
    # a worker without one: no empty entry (Python would read it as the worker's cwd)
    monkeypatch.delenv("PYTHONPATH")
    update_envs({"PYTHONPATH": value})
    assert "" not in os.environ["PYTHONPATH"].split(":")
    assert os.environ["PYTHONPATH"].split(":")[0] == str(REPO)
