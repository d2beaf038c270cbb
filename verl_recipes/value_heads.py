"""Critic models that load without flash-attn (every critic recipe: ``ppo_gae``, ``logneo_ppo``).

verl 0.9.1 builds the critic with ``verl.utils.model.load_valuehead_model``, which asks Hugging
Face for ``attn_implementation="flash_attention_2"`` whatever ``critic.model.override_config``
says (verl issue #5210). Without the ``flash_attn`` package (never on CPU; not in LogRL's
``requirements.txt`` either) every critic fails to load.

Imported in every process of a run through ``VERL_USE_EXTERNAL_MODULES`` (``ppo_gae`` names this
module, ``logneo_ppo`` its :mod:`verl_recipes.logneo_ppo.plugin`; verl's
``critic.model.external_lib`` would not do: verl 0.9.1's v1 trainer imports it where it builds the
critic's config, not in the critic worker). This module registers, with transformers' own
``AutoModelForTokenClassification.register``, a subclass of the token-classification (value head)
class of each architecture of :data:`ARCHITECTURES` that answers a flash-attention
request with ``sdpa`` when ``flash_attn`` is not installed, and changes nothing when it is. The
class keeps its name, so checkpoints and exports see the stock class.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import (
    AutoModelForTokenClassification,
    GPT2Config,
    GPTNeoConfig,
    LlamaConfig,
    Qwen2Config,
)
from transformers.utils import is_flash_attn_2_available

logger = logging.getLogger(__name__)

#: Config classes whose critics load here: the key models of ``verl_recipes.local.keyseq.model``
#: (GPT-2, GPT-Neo) and the Llama/Qwen2 shapes verl's vLLM rollout can serve.
ARCHITECTURES: tuple[type, ...] = (GPT2Config, GPTNeoConfig, LlamaConfig, Qwen2Config)
#: Attention used instead of a flash-attention request when ``flash_attn`` is missing.
FALLBACK = "sdpa"


def attention_for(requested: str | None, flash_available: bool) -> str | None:
    """The attention to load: ``requested``, or :data:`FALLBACK` for flash attention without flash_attn.

    >>> attention_for("flash_attention_2", False), attention_for("flash_attention_2", True)
    ('sdpa', 'flash_attention_2')
    >>> attention_for("eager", False)
    'eager'
    """
    if requested and requested.startswith("flash_attention") and not flash_available:
        return FALLBACK
    return requested


def with_attention_fallback(model_class: type) -> type:
    """A subclass of ``model_class`` whose flash-attention requests fall back (see the module doc)."""

    class Fallback(model_class):  # type: ignore[misc, valid-type]
        def get_correct_attn_implementation(self, requested_attention: str | None,
                                            is_init_check: bool = False) -> str:
            chosen = attention_for(requested_attention, is_flash_attn_2_available())
            if chosen != requested_attention:
                logger.warning("flash_attn is not installed: loading the critic %s with %s attention",
                               model_class.__name__, chosen)
            return super().get_correct_attn_implementation(chosen, is_init_check)

    Fallback.__name__ = Fallback.__qualname__ = model_class.__name__
    Fallback.__module__ = model_class.__module__
    return Fallback


def register(configs: tuple[type, ...] = ARCHITECTURES) -> dict[Any, type]:
    """Register the fallback value-head classes for ``configs``; return config → class."""
    registered = {}
    for config in configs:
        base = AutoModelForTokenClassification._model_mapping[config]
        if getattr(base, "_logrl_attention_fallback", False):
            registered[config] = base
            continue
        cls = with_attention_fallback(base)
        cls._logrl_attention_fallback = True
        AutoModelForTokenClassification.register(config, cls, exist_ok=True)
        registered[config] = cls
    return registered


register()
