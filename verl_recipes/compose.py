"""Compose a recipe against the installed verl with Hydra and run verl's own config validation.

A recipe is a folder ``verl_recipes/<name>/`` holding ``<name>.yaml``: a Hydra config whose
search path is ``pkg://verl.trainer.config`` and whose defaults start from one of verl's trainer
configs (``ppo_trainer`` or ``sft_trainer_engine``), holding only the deltas. This module composes
such a recipe exactly as ``python -m verl.trainer.main_ppo --config-path … --config-name …`` would,
without starting Ray or touching a GPU, so tests and ``model_train.sh --dry-run`` see the same
configuration the trainer will.

Usage::

    python -m verl_recipes.compose rationanomaly_grpo --validate trainer.nnodes=2
    python -m verl_recipes.compose sft_lora --print-overrides      # absolute-path overrides

Example:
    >>> cfg = compose_recipe("rationanomaly_grpo")            # doctest: +SKIP
    >>> cfg.actor_rollout_ref.rollout.n                        # doctest: +SKIP
    16
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logdata.errors import run_cli

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent
REPO_ROOT = RECIPES_DIR.parent

# Which trainer a recipe extends, told apart by a key only that trainer's config has, and how the
# launcher starts it. One row per verl trainer family.
TRAINER_KINDS: dict[str, dict[str, str]] = {
    "ppo": {"marker": "actor_rollout_ref", "module": "verl.trainer.main_ppo", "runner": "python"},
    "sft": {"marker": "engine", "module": "verl.trainer.sft_trainer", "runner": "torchrun"},
}

# Config keys holding file paths that must be absolute before Ray workers (other cwd) read them.
# Relative values are resolved against the repository root.
PATH_KEYS: tuple[str, ...] = (
    "reward.custom_reward_function.path",
    "reward.reward_manager.module.path",
    "data.train_files",
    "data.val_files",
    "data.custom_cls.path",
    "trainer.default_local_dir",
    "actor_rollout_ref.model.path",
    "critic.model.path",
    "model.path",
    "ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH",
)

# Keys that verl 0.9.1 accepts without complaint but never reads (moved under ``reward.*``); its
# ``legacy_reward_impl`` defaults declare them as null, so only a non-null value is an error.
STALE_KEYS: tuple[str, ...] = (
    "custom_reward_function.path",
    "custom_reward_function.name",
    "custom_reward_function.reward_kwargs",
    "reward_model.reward_manager",
)

LOCAL_RECIPES: tuple[str, ...] = ("local", "local_sft")


class RecipeError(ValueError):
    """A recipe cannot be found, composed or validated."""


def list_recipes() -> list[str]:
    """Return the names of the recipes in ``verl_recipes/`` (folders holding ``<name>.yaml``).

    Returns:
        Sorted recipe names.
    """
    return sorted(p.parent.name for p in RECIPES_DIR.glob("*/*.yaml") if p.stem == p.parent.name)


def recipe_yaml(name: str) -> Path:
    """Return the yaml file of recipe ``name``.

    Args:
        name: Recipe folder name, e.g. ``rationanomaly_grpo``.

    Raises:
        RecipeError: When no such recipe exists.
    """
    path = RECIPES_DIR / name / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_recipes() + list(LOCAL_RECIPES))
        raise RecipeError(f"unknown recipe {name!r}; known: {known}")
    return path


def _absolute(value: Any) -> Any:
    """Make a path (or list of paths) absolute against the repository root; keep other values."""
    if isinstance(value, str) and value and "://" not in value and not value.startswith("~"):
        path = Path(value)
        if path.is_absolute():
            return value
        here = Path.cwd() / path
        # A path that exists from the caller's folder wins; otherwise it is repository-relative.
        candidate = os.path.normpath(here if here.exists() else REPO_ROOT / path)
        # Hub ids such as ``meta-llama/Llama-2-7b-chat-hf`` are kept as they are.
        first = path.parts[0] if path.parts else ""
        if Path(candidate).exists() or path.suffix or first in {"datasets", "checkpoints", "outputs"}:
            return candidate
        return value
    if isinstance(value, list | tuple):
        return [_absolute(v) for v in value]
    return value


def _raw(cfg: Any, key: str) -> Any:
    """Return the unresolved value at dotted ``key`` (interpolations kept as text)."""
    node: Any = cfg
    for part in key.split("."):
        node = node._get_node(part) if node is not None else None
    return node._value() if node is not None else None


def path_overrides(cfg: Any) -> list[str]:
    """Return Hydra overrides pinning every path in :data:`PATH_KEYS` to its resolved absolute value.

    Environment interpolations (``${oc.env:MODEL_PATH,…}``) are resolved here, in the launching
    shell, so Ray workers on other nodes see the same values.

    Args:
        cfg: A composed config (``DictConfig``).

    Returns:
        Overrides such as ``reward.custom_reward_function.path=/abs/reward/verl_reward.py``.
    """
    from omegaconf import OmegaConf

    out = []
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        fixed = _absolute(value)
        if fixed == value and "${" not in str(_raw(cfg, key)):
            continue
        rendered = "[" + ",".join(f"'{v}'" for v in fixed) + "]" if isinstance(fixed, list) else f"'{fixed}'"
        out.append(f"{key}={rendered}")
    return out


def compose_recipe(name: str, overrides: Sequence[str] = (), *, absolute_paths: bool = True) -> Any:
    """Compose recipe ``name`` with Hydra against the installed verl.

    Args:
        name: Recipe name (see :func:`list_recipes`).
        overrides: Hydra overrides (``key=value``, ``+key=value``, ``~key``).
        absolute_paths: Resolve relative paths in :data:`PATH_KEYS` against the repository root.

    Returns:
        The composed ``DictConfig``.

    Raises:
        RecipeError: When the recipe is unknown, fails to compose, or sets a stale key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    path = recipe_yaml(name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base=None):
            cfg = compose(config_name=name, overrides=list(overrides))
            if absolute_paths:
                fixes = path_overrides(cfg)
                if fixes:
                    cfg = compose(config_name=name, overrides=[*overrides, *fixes])
    except (HydraException, OmegaConfBaseException) as err:
        raise RecipeError(f"recipe {name!r} does not compose: {err}") from err
    finally:
        GlobalHydra.instance().clear()
    check_no_stale_keys(cfg)
    return cfg


def check_no_stale_keys(cfg: Any) -> None:
    """Refuse configs that set keys verl 0.9.1 silently ignores (old top-level reward keys).

    Raises:
        RecipeError: When a stale key such as top-level ``custom_reward_function`` is present.
    """
    from omegaconf import OmegaConf

    for key in STALE_KEYS:
        if OmegaConf.select(cfg, key, default=None) is not None:
            raise RecipeError(
                f"{key} is ignored by verl 0.9.1; use reward.custom_reward_function.* and "
                "reward.reward_manager.name instead"
            )


def trainer_kind(cfg: Any) -> str:
    """Return ``ppo`` or ``sft``: which verl trainer the composed config is for."""
    for kind, row in TRAINER_KINDS.items():
        if row["marker"] in cfg:
            return kind
    raise RecipeError("config extends neither ppo_trainer nor sft_trainer_engine")


def _validate_ppo(cfg: Any) -> None:
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        use_critic = need_critic(cfg)
    if use_critic and not Path(str(cfg.critic.model.path)).expanduser().is_dir():
        # verl's CriticConfig loads the model config; without a local model, skip that part.
        logger.warning("critic checks skipped: critic.model.path is not a local folder")
        use_critic = False
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=use_critic)
    # The trainer converts these sections to dataclasses too; a typo there fails here, not on GPUs.
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    omega_conf_to_dataclass(cfg.algorithm.kl_ctrl)
    _check_reward(cfg)
    _check_adv_estimator(cfg)


def _check_reward(cfg: Any) -> None:
    """The reward file exists and the reward manager name is registered in verl."""
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    path = cfg.reward.custom_reward_function.get("path")
    if path and not Path(str(path)).is_file():
        raise RecipeError(f"reward.custom_reward_function.path does not exist: {path}")
    resolve_reward_manager_cls(cfg)


def _check_adv_estimator(cfg: Any) -> None:
    """The advantage estimator is registered once the recipe's external modules are imported."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    modules = OmegaConf.select(
        cfg, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES", default=""
    )
    for module in filter(None, str(modules or "").split(",")):
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        importlib.import_module(module.strip())
    get_adv_estimator_fn(cfg.algorithm.adv_estimator)


def _validate_sft(cfg: Any) -> None:
    from verl.utils.config import omega_conf_to_dataclass

    # The same conversions SFTTrainer._build_config runs; the model one loads the model config, so
    # it only runs when the path is a local folder (tests pass a tiny model).
    for section in ("engine", "optim", "checkpoint", "profiler"):
        omega_conf_to_dataclass(cfg[section])
    if Path(str(cfg.model.path)).expanduser().is_dir():
        omega_conf_to_dataclass(cfg.model)
    interval = list(cfg.trainer.profile_interval)
    if len(interval) != 2 or interval[1] < interval[0]:
        raise RecipeError(f"trainer.profile_interval must be [start, end], got {interval}")


def validate_recipe(cfg: Any) -> None:
    """Run verl's own validation on a composed config, on CPU (no Ray, no GPU).

    For PPO-family recipes this is ``verl.utils.config.validate_config`` (batch-size divisibility,
    micro-batch settings, actor/critic dataclass checks) plus the dataclass conversion of the
    rollout, reward and KL sections; for SFT recipes, the dataclass conversions ``SFTTrainer`` does.

    Raises:
        RecipeError: When verl rejects the config.
    """
    check_no_stale_keys(cfg)
    kind = trainer_kind(cfg)
    try:
        # verl's validators print progress; keep stdout for the composed config.
        with contextlib.redirect_stdout(sys.stderr):
            _validate_ppo(cfg) if kind == "ppo" else _validate_sft(cfg)
    except RecipeError:
        raise
    except Exception as err:
        raise RecipeError(f"verl rejects the config: {err}") from err


def to_yaml(cfg: Any, *, resolve: bool = True) -> str:
    """Render a composed config as YAML (interpolations resolved where possible)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_yaml(cfg, resolve=resolve)
    except Exception:
        return OmegaConf.to_yaml(cfg, resolve=False)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m verl_recipes.compose", description="Compose a verl recipe with Hydra."
    )
    parser.add_argument("recipe", help="recipe name: " + ", ".join(list_recipes()))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides key=value")
    parser.add_argument("--validate", action="store_true", help="run verl's config validation")
    parser.add_argument("--print-overrides", action="store_true", help="print absolute-path overrides")
    parser.add_argument("--kind", action="store_true", help="print the trainer kind and entry module")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the composed config (or path overrides); exit 2 with one line on error."""
    args = _parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_cli(lambda: _compose_and_print(args), (RecipeError,))


def _compose_and_print(args: argparse.Namespace) -> int:
    """Compose the recipe and print what the flags ask for."""
    cfg = compose_recipe(args.recipe, args.overrides, absolute_paths=not args.print_overrides)
    if args.print_overrides:
        print("\n".join(path_overrides(cfg)))
        return 0
    if args.kind:
        kind = trainer_kind(cfg)
        row = TRAINER_KINDS[kind]
        print(kind, row["runner"], row["module"], cfg.trainer.n_gpus_per_node, cfg.trainer.nnodes)
        return 0
    if args.validate:
        validate_recipe(cfg)
    print(to_yaml(cfg))
    return 0

if __name__ == "__main__":
    sys.exit(main())
