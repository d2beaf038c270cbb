"""``model_train.sh``: dry runs compose real configs; no GPU means a pointer to --cpu / the local backend.

Every run starts from a folder outside the repository (pytest's ``tmp_path``), as a user would;
one starts the launcher by a relative path from a nested subfolder, with relative overrides.
Runs that would start a trainer use a stand-in interpreter (``LOGRL_PYTHON``): it records the
trainer's command line, environment and working directory and runs everything else (compose,
the CPU overlay, the GPU probe) with the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "model_train.sh"
HUB_ID = "Qwen/Qwen2.5-7B-Instruct"
STAMP = r"\d{8}-\d{6}"

FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the interpreter: records how the trainer would start; runs everything else
if [[ "$1" == "-m" && ( "$2" == "verl.trainer.main_ppo" || "$2" == "torch.distributed.run" ) ]]; then
  printf '%s\\n' "$@" > "$FAKE_RECORD/argv"
  env > "$FAKE_RECORD/env"
  pwd > "$FAKE_RECORD/cwd"
  echo "fake trainer ran"
  exit 0
fi
exec {real} "$@"
"""


@pytest.fixture
def caller(tmp_path: Path) -> Path:
    """An empty working folder outside the repository."""
    cwd = tmp_path / "caller"
    cwd.mkdir()
    return cwd


@pytest.fixture
def fake_python(tmp_path: Path) -> dict[str, str]:
    """Environment that makes the launcher use the recording stand-in interpreter."""
    record = tmp_path / "record"
    record.mkdir()
    script = tmp_path / "bin" / "python"
    script.parent.mkdir()
    real = REPO / ".venv" / "bin" / "python"
    script.write_text(FAKE_PYTHON.format(real=real if real.exists() else sys.executable))
    script.chmod(0o755)
    return {"LOGRL_PYTHON": str(script), "FAKE_RECORD": str(record)}


def _run(*args: str, cwd: Path, env: dict | None = None,
         launcher: str | None = None) -> subprocess.CompletedProcess:
    """Run the launcher (by ``launcher``, default its absolute path) in ``cwd``."""
    base = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "MODEL_PATH", "LOGRL_PYTHON"}}
    proc = subprocess.run(
        ["bash", launcher or str(LAUNCHER), *args], capture_output=True, text=True,
        timeout=300, cwd=cwd, env={**base, **(env or {})},
    )
    # the launcher tees a real run to logs/<recipe>-<timestamp>.log in the repository: remove ours
    for log in re.findall(r"log: (\S+\.log)", proc.stderr):
        if Path(log).parent == REPO / "logs":
            Path(log).unlink(missing_ok=True)
    return proc


def _recorded(fake: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
    record = Path(fake["FAKE_RECORD"])
    argv = (record / "argv").read_text().splitlines()
    env = dict(line.split("=", 1) for line in (record / "env").read_text().splitlines() if "=" in line)
    return argv, env, (record / "cwd").read_text().strip()


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_dry_run_default_recipe_prints_a_valid_config(caller):
    checks = {"actor_rollout_ref.rollout.n": 16, "data.train_batch_size": 32,
              "actor_rollout_ref.actor.optim.lr": 4.0e-7, "trainer.n_gpus_per_node": 8,
              "trainer.nnodes": 2}
    proc = _run("--dry-run", "trainer.nnodes=2", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    reward_path = Path(cfg["reward"]["custom_reward_function"]["path"])
    assert reward_path.is_absolute() and reward_path.is_file()
    assert "custom_reward_function" not in cfg or not cfg["custom_reward_function"]["path"]
    for key, value in checks.items():
        assert _get(cfg, key) == value, key
    assert Path(cfg["data"]["train_files"]).is_absolute()


# --- items 1, 2, 5: from any folder, hub ids kept, repository paths absolute, nothing written -----

def test_dry_run_from_another_folder_with_a_dotted_hub_id(caller):
    proc = _run("rationanomaly_grpo", "--dry-run", f"actor_rollout_ref.model.path={HUB_ID}", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert _get(cfg, "actor_rollout_ref.model.path") == "Qwen/Qwen2.5-7B-Instruct"
    assert _get(cfg, "data.train_files") == f"{REPO}/datasets/bgl/train.parquet"
    assert _get(cfg, "data.val_files") == f"{REPO}/datasets/bgl/val.parquet"
    assert _get(cfg, "reward.custom_reward_function.path") == f"{REPO}/reward/verl_reward.py"
    assert _get(cfg, "trainer.default_local_dir") == f"{REPO}/checkpoints/logrl/rationanomaly_grpo_bgl"
    # item 2: the repository root, then the worker's own PYTHONPATH (Ray expands $PYTHONPATH)
    assert _get(cfg, "ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH") == f"{REPO}:$PYTHONPATH"
    assert list(caller.iterdir()) == []


def test_dry_run_relative_override_is_relative_to_the_caller(caller):
    proc = _run("ppo_gae", "--dry-run", "actor_rollout_ref.model.path=meta-llama/Llama-3.1-8B-Instruct",
                "data.train_files=mine/train.parquet", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert _get(cfg, "data.train_files") == f"{caller}/mine/train.parquet"
    assert _get(cfg, "data.val_files") == f"{REPO}/datasets/bgl/val.parquet"
    assert _get(cfg, "critic.model.path") == "meta-llama/Llama-3.1-8B-Instruct"
    assert list(caller.iterdir()) == []


def test_dry_run_sft_lora(caller):
    proc = _run("sft_lora", "--dry-run", "model.path=meta-llama/Llama-3.1-8B-Instruct", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["lora_rank"] == 16
    assert cfg["model"]["path"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert cfg["data"]["train_files"] == f"{REPO}/datasets/bgl/sft_train.parquet"


def test_dry_run_local_prints_the_local_config(caller, tmp_path):
    proc = _run("local", "--dry-run", f"model={tmp_path}", "trainer.max_steps=2", "reward.preset=answer_only",
                cwd=caller)
    assert proc.returncode == 0, proc.stderr
    assert '"max_steps": 2' in proc.stdout and '"preset": "answer_only"' in proc.stdout


def test_bad_inputs_give_one_line_errors(caller):
    proc = _run("--dry-run", "data.train_batch_size=3", cwd=caller)  # below ppo_mini_batch_size 8
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("local", "--dry-run", "no_such_key=1", cwd=caller)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("--cpu-ranks", "0", "--dry-run", cwd=caller)
    assert proc.returncode == 2 and "--cpu-ranks" in proc.stderr


def test_help_documents_cpu(caller):
    proc = _run("--help", cwd=caller)
    assert proc.returncode == 0
    assert "--cpu " in proc.stdout and "--cpu-ranks N" in proc.stdout and "--dry-run" in proc.stdout
    assert "set -euo" not in proc.stdout  # the usage header only


# --- item 3: bash before 4.4 and empty arrays ------------------------------------------------------
# bash 4.2 (where "${EMPTY[@]}" under `set -u` is an "unbound variable" error) cannot be installed
# here, so (a) the launcher runs with no override at all, and (b) every array expansion in it is
# checked to use the ${NAME[@]+"${NAME[@]}"} form that every bash version accepts.

def test_dry_run_without_any_override(caller):
    proc = _run("--dry-run", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["actor_rollout_ref"]["rollout"]["n"] == 16


def test_every_array_expansion_is_guarded_for_old_bash():
    # code only: comments may spell the unguarded form out
    text = "\n".join(line for line in LAUNCHER.read_text().splitlines() if not line.lstrip().startswith("#"))
    guarded = re.compile(r'\$\{(\w+)\[@\]\+"\$\{\1\[@\]\}"\}')
    unguarded = re.findall(r'\$\{#?\w+\[[@*]\][^}]*\}', guarded.sub("", text))
    assert unguarded == []
    assert set(guarded.findall(text)) == {"OVERRIDES", "OVERLAY", "CMD", "FIXES", "ATTACH", "ARGS"}


# --- item 4: no local GPU needed when attaching to a Ray cluster ----------------------------------

@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present")
def test_real_run_without_gpu_points_to_cpu_and_local_backend(caller):
    proc = _run("rationanomaly_grpo", cwd=caller)
    assert proc.returncode == 3
    assert "bash model_train.sh local" in proc.stderr
    assert "bash model_train.sh rationanomaly_grpo --cpu" in proc.stderr
    assert "RAY_ADDRESS" in proc.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present")
def test_ray_address_attaches_without_a_local_gpu(caller, fake_python):
    proc = _run("rationanomaly_grpo", f"actor_rollout_ref.model.path={HUB_ID}", cwd=caller,
                env={**fake_python, "RAY_ADDRESS": "10.1.2.3:6379"})
    assert proc.returncode == 0, proc.stderr
    assert "Ray cluster at RAY_ADDRESS=10.1.2.3:6379" in proc.stderr
    argv, env, cwd = _recorded(fake_python)
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    assert env["RAY_ADDRESS"] == "10.1.2.3:6379"
    assert f"actor_rollout_ref.model.path={HUB_ID}" in argv
    assert "data.train_files='" + f"{REPO}/datasets/bgl/train.parquet'" in argv
    assert "ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH='" + f"{REPO}:$PYTHONPATH'" in argv
    # item 5: Hydra's run folder under <repo>/logs/hydra, not outputs/<date>/<time> in the caller's cwd
    runs = [a for a in argv if a.startswith("hydra.run.dir=")]
    assert len(runs) == 1
    assert re.fullmatch(rf"hydra\.run\.dir='{re.escape(str(REPO))}/logs/hydra/rationanomaly_grpo-{STAMP}'",
                        runs[0])
    assert env["WANDB_DIR"] == f"{REPO}/logs"
    assert cwd == str(caller)
    assert list(caller.iterdir()) == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present")
def test_ray_address_does_not_excuse_a_torchrun_recipe(caller):
    proc = _run("sft_lora", cwd=caller, env={"RAY_ADDRESS": "10.1.2.3:6379"})
    assert proc.returncode == 3
    assert "torchrun" in proc.stderr


# --- item 6: --cpu ---------------------------------------------------------------------------------

def test_dry_run_cpu_prints_the_cpu_config_and_user_overrides_win(caller):
    proc = _run("rationanomaly_grpo", "--dry-run", "--cpu", "--cpu-ranks", "2",
                f"actor_rollout_ref.model.path={HUB_ID}",
                "actor_rollout_ref.rollout.agent.num_workers=3", cwd=caller)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert _get(cfg, "actor_rollout_ref.rollout.enable_sleep_mode") is False  # from the overlay
    assert _get(cfg, "actor_rollout_ref.actor.strategy") == "fsdp2"
    assert _get(cfg, "trainer.n_gpus_per_node") == 2
    assert _get(cfg, "ray_kwargs.ray_init.num_gpus") == 2
    assert _get(cfg, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM") == "cpu"
    assert _get(cfg, "actor_rollout_ref.rollout.agent.num_workers") == 3  # typed: beats the overlay's 1
    assert _get(cfg, "actor_rollout_ref.model.path") == "Qwen/Qwen2.5-7B-Instruct"
    assert _get(cfg, "data.train_files") == f"{REPO}/datasets/bgl/train.parquet"
    assert list(caller.iterdir()) == []


def test_cpu_run_exports_the_platform_env_and_starts_main_ppo(caller, fake_python):
    proc = _run("rationanomaly_grpo", "--cpu", f"actor_rollout_ref.model.path={HUB_ID}",
                "data.dataloader_num_workers=2", cwd=caller, env=fake_python)
    assert proc.returncode == 0, proc.stderr
    argv, env, _ = _recorded(fake_python)
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    assert env["VERL_PLATFORM"] == "cpu" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    overlay = argv.index("++actor_rollout_ref.rollout.enable_sleep_mode=false")
    assert "++trainer.n_gpus_per_node=1" in argv
    # overlay first, then what the user typed (Hydra: the last override of a key wins)
    assert argv.index("++data.dataloader_num_workers=0") < argv.index("data.dataloader_num_workers=2")
    assert overlay < argv.index(f"actor_rollout_ref.model.path={HUB_ID}")
    assert not any(a.startswith("actor_rollout_ref.model.path='") for a in argv)  # hub id not pinned


def test_cpu_run_of_an_sft_recipe_starts_torchrun_with_the_ranks(caller, fake_python):
    proc = _run("sft_lora", "--cpu", "--cpu-ranks", "2", f"model.path={HUB_ID}", cwd=caller, env=fake_python)
    assert proc.returncode == 0, proc.stderr
    argv, env, _ = _recorded(fake_python)
    assert argv[:6] == ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
                        "-m"]
    assert argv[6] == "verl.trainer.sft_trainer"
    assert "++engine.strategy=fsdp2" in argv and "++trainer.n_gpus_per_node=2" in argv
    assert env["VERL_PLATFORM"] == "cpu"
    assert any(re.fullmatch(rf"hydra\.run\.dir='{re.escape(str(REPO))}/logs/hydra/sft_lora-{STAMP}'", a)
               for a in argv)
    assert list(caller.iterdir()) == []


def test_relative_launcher_from_a_nested_subfolder(tmp_path, fake_python):
    """``bash ../../…/model_train.sh`` from caller/project/run: typed relative paths are relative
    to that folder, the recipe's to the repository, and Hydra gets an absolute config folder."""
    work = tmp_path / "caller" / "project" / "run"
    (work / "models" / "tiny").mkdir(parents=True)  # an existing local model folder, typed relative
    launcher = os.path.relpath(LAUNCHER, work)
    assert launcher.startswith("..")
    proc = _run("rationanomaly_grpo", "--cpu", "actor_rollout_ref.model.path=models/tiny",
                "data.train_files=../data/train.parquet", cwd=work, env=fake_python,
                launcher=launcher)
    assert proc.returncode == 0, proc.stderr
    argv, _, cwd = _recorded(fake_python)
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    assert f"--config-path={REPO}/verl_recipes/rationanomaly_grpo" in argv
    assert f"actor_rollout_ref.model.path='{tmp_path}/caller/project/run/models/tiny'" in argv
    assert f"data.train_files='{tmp_path}/caller/project/data/train.parquet'" in argv
    assert f"data.val_files='{REPO}/datasets/bgl/val.parquet'" in argv
    hydra_dir = rf"hydra\.run\.dir='{re.escape(str(REPO))}/logs/hydra/rationanomaly_grpo-{STAMP}'"
    assert any(re.fullmatch(hydra_dir, a) for a in argv)
    assert cwd == str(work)
    assert sorted(p.name for p in work.iterdir()) == ["models"]  # nothing written here


def test_cpu_is_refused_for_the_local_backend(caller):
    proc = _run("local", "--cpu", "--dry-run", cwd=caller)
    assert proc.returncode == 2 and "--cpu is for verl recipes" in proc.stderr
