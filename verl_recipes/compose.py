r"""Compose a recipe against the installed verl with Hydra and run verl's own config validation.

A recipe is a folder ``verl_recipes/<name>/`` holding ``<name>.yaml``: a Hydra config whose
search path is ``pkg://verl.trainer.config`` and whose defaults start from one of verl's trainer
configs (``ppo_trainer`` or ``sft_trainer_engine``), holding only the deltas. This module composes
such a recipe exactly as ``python -m verl.trainer.main_ppo --config-path … --config-name …`` would,
without starting Ray or touching a GPU, so tests and ``model_train.sh --dry-run`` see the same
configuration the trainer will.

Paths. Ray workers run in other folders (and on other nodes), so every path the trainer reads is
pinned before the run, by explicit rules; nothing is guessed from how a value looks. Each key of
:data:`PATH_RULES` has one of three kinds:

=============  ==================================================================================
kind           rule for the value (absolute values, ``~``-paths and URIs are the same everywhere)
=============  ==================================================================================
``file``       Data files, reward file, reward manager module, dataset class, checkpoint folders.
               Absolute: kept. ``~/…``: expanded. URI (``scheme://…``, e.g. ``pkg://``): kept.
               Relative: joined to the *base folder* (below), whether or not it exists yet.
``model``      Model, tokenizer and adapter paths: a local folder or a Hugging Face hub id.
               Absolute and URI: kept; ``~/…``: expanded. Relative: if ``base/value`` is an
               existing folder it becomes that absolute path; anything else is a hub id
               (``Qwen/Qwen2.5-7B-Instruct``) and is kept exactly as written.
``search``     ``PYTHONPATH`` of the Ray workers: ``:``-separated entries, each a ``file`` path,
               except ``$NAME``/``${NAME}`` entries, which Ray expands on each worker to that
               worker's own variable; they are written ``$NAME`` (see below).
=============  ==================================================================================

The base folder of a relative value is where it was typed: **the caller's working directory** when
the value comes from a command-line override of that key (or of the key its value starts with an
interpolation of, e.g. ``logrl.data_dir=`` for ``${logrl.data_dir}/train.parquet``, or from an
environment variable that is set, ``${oc.env:MODEL_PATH,…}``); **the repository root** when it
comes from the recipe yaml (or from verl's defaults). Environment interpolations are resolved in
the launching shell, so workers on other nodes see the same values.

Ray (``ray._private.utils.update_envs``) passes runtime-env ``env_vars`` through
``os.path.expandvars``, so ``PYTHONPATH: /repo:$PYTHONPATH`` appends the worker's own PYTHONPATH.
The ``$NAME`` form is used rather than ``${NAME}`` because verl's ``main_ppo`` hands Ray the
*unresolved* config (``OmegaConf.to_container(..., resolve=False)``): an unescaped ``${NAME}``
fails OmegaConf's resolution later in the run, and an escaped ``\${NAME}`` reaches the worker with
its backslash. OmegaConf and Hydra leave ``$NAME`` alone.

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
import re
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

# How each path key of a config is pinned before the run (see the module docstring for the rules).
FILE, MODEL, SEARCH = "file", "model", "search"
PATH_RULES: dict[str, str] = {
    # files and folders the trainer reads or writes
    "data.train_files": FILE,
    "data.val_files": FILE,
    "data.custom_cls.path": FILE,
    "reward.custom_reward_function.path": FILE,
    "reward.reward_manager.module.path": FILE,
    "trainer.default_local_dir": FILE,
    "trainer.resume_from_path": FILE,
    "trainer.rollout_data_dir": FILE,
    "trainer.validation_data_dir": FILE,
    # local model folders or hub ids
    "actor_rollout_ref.model.path": MODEL,
    "actor_rollout_ref.model.tokenizer_path": MODEL,
    "actor_rollout_ref.model.hf_config_path": MODEL,
    "actor_rollout_ref.model.lora_adapter_path": MODEL,
    "critic.model.path": MODEL,
    "critic.model.tokenizer_path": MODEL,
    "critic.model.hf_config_path": MODEL,
    "reward.reward_model.model_path": MODEL,
    "model.path": MODEL,
    "model.tokenizer_path": MODEL,
    "model.hf_config_path": MODEL,
    "model.lora_adapter_path": MODEL,
    # module search path of the Ray workers
    "ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH": SEARCH,
}
PATH_KEYS: tuple[str, ...] = tuple(PATH_RULES)

# Where a relative value was typed: the caller's working directory or the recipe (repository root).
CALLER, RECIPE = "caller", "recipe"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ENV_REF = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")
_LEADING_NODE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}")
_LEADING_ENV = re.compile(r"^\$\{oc\.env:([A-Za-z_]\w*)")

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


def override_keys(overrides: Sequence[str]) -> set[str]:
    """Return the config keys that Hydra overrides set (``key=v``, ``+key=v``, ``++key=v``, ``~key``).

    Args:
        overrides: Hydra overrides as typed on the command line.

    Returns:
        Dotted keys, without the ``+``/``++``/``~`` prefix and without ``@package`` suffixes.
    """
    keys = set()
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~").split("@", 1)[0].strip()
        if key:
            keys.add(key)
    return keys


def value_origin(cfg: Any, key: str, cli_keys: set[str], *, _seen: frozenset[str] = frozenset()) -> str:
    """Return where the value at ``key`` was typed: :data:`CALLER` or :data:`RECIPE`.

    A key set on the command line (or under a parent key set there) is the caller's. A value that
    starts with an interpolation takes the origin of what it starts with: another key
    (``${logrl.data_dir}/train.parquet``) or an environment variable (``${oc.env:MODEL_PATH,…}``:
    the caller's when the variable is set, else the recipe's fallback). Anything else is the recipe's.

    Args:
        cfg: A composed config (``DictConfig``).
        key: Dotted key.
        cli_keys: Keys set by command-line overrides (see :func:`override_keys`).

    Returns:
        :data:`CALLER` or :data:`RECIPE`.
    """
    if any(key == k or key.startswith(k + ".") for k in cli_keys):
        return CALLER
    raw = _raw(cfg, key)
    if not isinstance(raw, str) or key in _seen:
        return RECIPE
    env = _LEADING_ENV.match(raw)
    if env:
        return CALLER if env.group(1) in os.environ else RECIPE
    node = _LEADING_NODE.match(raw)
    if node:
        return value_origin(cfg, node.group(1), cli_keys, _seen=_seen | {key})
    return RECIPE


def base_folder(origin: str) -> Path:
    """Return the folder a relative value of ``origin`` is relative to (cwd or repository root)."""
    return Path.cwd() if origin == CALLER else REPO_ROOT


def resolve_path(value: Any, kind: str, base: Path) -> Any:
    """Pin one config value by the rule of its ``kind`` (see the module docstring).

    Args:
        value: A string, a list of strings (``data.train_files``), or anything else (kept).
        kind: :data:`FILE`, :data:`MODEL` or :data:`SEARCH`.
        base: Folder that relative values are relative to (see :func:`base_folder`).

    Returns:
        The pinned value; non-strings and empty strings unchanged.

    Raises:
        ValueError: For an unknown kind.

    >>> resolve_path("Qwen/Qwen2.5-7B-Instruct", MODEL, Path("/nowhere"))
    'Qwen/Qwen2.5-7B-Instruct'
    >>> resolve_path("data/train.parquet", FILE, Path("/work"))
    '/work/data/train.parquet'
    >>> resolve_path("lib:$PYTHONPATH", SEARCH, Path("/repo"))
    '/repo/lib:$PYTHONPATH'
    """
    if kind not in (FILE, MODEL, SEARCH):
        raise ValueError(f"unknown path kind {kind!r}")
    if isinstance(value, list | tuple):
        return [resolve_path(v, kind, base) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if kind == SEARCH:
        return ":".join(_search_entry(entry, base) for entry in value.split(":"))
    if _URI.match(value):
        return value
    if value.startswith("~"):
        return os.path.expanduser(value)
    if Path(value).is_absolute():
        return value
    candidate = os.path.normpath(base / value)
    if kind == MODEL and not Path(candidate).is_dir():
        return value  # a hub id, kept exactly as written
    return candidate


def _search_entry(entry: str, base: Path) -> str:
    """One ``PYTHONPATH`` entry: ``$NAME``/``${NAME}`` become ``$NAME``; others are file paths."""
    ref = _ENV_REF.match(entry)
    if ref:
        return "$" + (ref.group(1) or ref.group(2))
    return resolve_path(entry, FILE, base) if entry else entry


def _raw(cfg: Any, key: str) -> Any:
    """Return the unresolved value at dotted ``key`` (interpolations kept as text)."""
    node: Any = cfg
    for part in key.split("."):
        node = node._get_node(part) if node is not None else None
    return node._value() if node is not None else None


def _render(value: Any) -> str:
    """Render a pinned value as a quoted Hydra override value."""
    if isinstance(value, list):
        return "[" + ",".join(f"'{v}'" for v in value) + "]"
    return f"'{value}'"


def path_overrides(cfg: Any, overrides: Sequence[str] = ()) -> list[str]:
    """Return Hydra overrides pinning every key of :data:`PATH_RULES` by its rule.

    Environment interpolations (``${oc.env:MODEL_PATH,…}``) are resolved here, in the launching
    shell, so Ray workers on other nodes see the same values.

    Args:
        cfg: A config composed *without* path fixing.
        overrides: The command-line overrides it was composed with; a relative value typed there
            is relative to the working directory, one from the recipe to the repository root.

    Returns:
        Overrides such as ``reward.custom_reward_function.path='/abs/reward/verl_reward.py'``.
    """
    from omegaconf import OmegaConf

    cli_keys = override_keys(overrides)
    out = []
    for key, kind in PATH_RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        fixed = resolve_path(value, kind, base_folder(value_origin(cfg, key, cli_keys)))
        if fixed == value and "${" not in str(_raw(cfg, key)):
            continue
        logger.debug("%s: %r -> %r", key, value, fixed)
        out.append(f"{key}={_render(fixed)}")
    return out


def compose_recipe(name: str, overrides: Sequence[str] = (), *, absolute_paths: bool = True) -> Any:
    """Compose recipe ``name`` with Hydra against the installed verl.

    Args:
        name: Recipe name (see :func:`list_recipes`).
        overrides: Hydra overrides (``key=value``, ``+key=value``, ``~key``).
        absolute_paths: Pin the keys of :data:`PATH_RULES` (relative values typed in ``overrides``
            are relative to the working directory, those of the recipe to the repository root).

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
                fixes = path_overrides(cfg, overrides)
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
    _check_trainer_mode(cfg)
    _check_class_weights(cfg)


def _check_class_weights(cfg: Any) -> None:
    """Class weights in the reward must reach the advantages (see ``reward/class_weights.py``)."""
    from omegaconf import OmegaConf

    from reward.class_weights import check_class_weights

    kwargs = OmegaConf.select(cfg, "reward.custom_reward_function.reward_kwargs", default=None)
    kwargs = OmegaConf.to_container(kwargs, resolve=True) if kwargs is not None else {}
    try:
        check_class_weights(str(cfg.algorithm.adv_estimator), cfg.algorithm, kwargs)
    except ValueError as err:
        raise RecipeError(str(err)) from err


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


def _check_trainer_mode(cfg: Any) -> None:
    """``trainer.v1.trainer_mode`` names a registered trainer (after the external modules load)."""
    from omegaconf import OmegaConf

    if not OmegaConf.select(cfg, "trainer.use_v1", default=False):
        return
    from verl.trainer.ppo.v1 import get_trainer_cls

    get_trainer_cls(str(cfg.trainer.v1.trainer_mode))


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
    """Compose the recipe and print what the flags ask for (stdout holds only that answer)."""
    # Imports made while composing (verl, and the modules of VERL_USE_EXTERNAL_MODULES such as vLLM)
    # may log to stdout; they go to stderr so the launcher can read the answer.
    with contextlib.redirect_stdout(sys.stderr):
        text = _answer(args)
    print(text)
    return 0


def _answer(args: argparse.Namespace) -> str:
    """Return the text the CLI flags ask for: path overrides, trainer kind, or the config."""
    cfg = compose_recipe(args.recipe, args.overrides, absolute_paths=not args.print_overrides)
    if args.print_overrides:
        return "\n".join(path_overrides(cfg, args.overrides))
    if args.kind:
        kind = trainer_kind(cfg)
        row = TRAINER_KINDS[kind]
        return " ".join(map(str, (kind, row["runner"], row["module"], cfg.trainer.n_gpus_per_node,
                                  cfg.trainer.nnodes)))
    if args.validate:
        validate_recipe(cfg)
    return to_yaml(cfg)


if __name__ == "__main__":
    sys.exit(main())
