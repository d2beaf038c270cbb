"""What verl imports in every process of a ``logneo_ppo`` run (``VERL_USE_EXTERNAL_MODULES``).

Importing it registers the ``logneo_sync`` trainer (:mod:`verl_recipes.logneo_ppo.trainer`, looked
up by ``main_ppo``'s task runner) and the critic value heads that load without flash-attn
(:mod:`verl_recipes.value_heads`, used by the critic workers).
"""

from verl_recipes import value_heads
from verl_recipes.logneo_ppo import trainer

__all__ = ["trainer", "value_heads"]
