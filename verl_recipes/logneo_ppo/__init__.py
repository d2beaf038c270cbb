"""The ``logneo_ppo`` recipe: LogNEO's RL stage (PPO + critic, token-level key rewards, gold CE).

Modules (each one verl extension point, see ``README.md``):

* ``reward_manager``: verl reward manager ``KeyseqTokenRewardManager`` (``reward.reward_manager``).
* ``loss``: the actor loss ``logneo_ppo_loss`` (PPO + ``μ`` × gold-continuation cross-entropy).
* ``trainer``: the registered trainer ``logneo_sync`` (``trainer.v1.trainer_mode``), loaded through
  ``VERL_USE_EXTERNAL_MODULES``.

This file imports nothing, so loading the reward manager does not start the trainer's imports.
"""
