"""``grpo_class_weighted``: GRPO advantages scaled per gold class *after* group normalisation.

Why: GRPO normalises each group's rewards by the group's mean and std, and every group is n
answers to one log, hence one gold class. A class-dependent reward *scale* (such as making a
missed anomaly cost more than a false alarm) therefore cancels. Scaling the advantages after
normalisation does not: a group's policy-gradient contribution is multiplied by its weight.

Definition: every sample of a group whose gold label is ``abnormal`` gets weight
``missed_anomaly`` (every error in such a group is a missed anomaly), every sample of a
``normal`` group gets ``false_alarm`` (every error there is a false alarm)::

    A_i = w(gold_i) · GRPO(r)_i,   w(abnormal) = missed_anomaly,  w(normal) = false_alarm

Where the gold class comes from: in verl 0.9.1 a registered estimator receives only
``token_level_rewards``, ``response_mask``, ``index`` (uid) and ``config`` (``algorithm``) — no
ground truth. The reward therefore carries it: with ``reward_kwargs.abnormal_offset = K``
(K ≫ the reward's range) every abnormal-gold sample's score is shifted by ``+K``. A
group-constant shift cancels exactly in GRPO (mean and std are shift-invariant), and this
estimator reads ``score > K/2`` as abnormal and removes the shift before normalising.

The shift is removed **in place** from ``token_level_rewards`` (at each response's last token,
where verl's reward managers put the score). In verl 0.9.1 that tensor is the batch's
``token_level_scores`` itself when the KL is not in the reward (the GRPO recipes), so the
metrics verl computes after the advantage (``critic/score/*``, ``critic/rewards/*``) and the
rollout dumps show the true reward, not the carrier. Validation scores (no advantage step) still
include it; validation accuracy (``acc``) never does.

Config (``algorithm.class_weighting``; missing keys take these defaults)::

    algorithm:
      adv_estimator: grpo_class_weighted
      class_weighting: {missed_anomaly: 2.0, false_alarm: 1.0, abnormal_offset: 100.0}

``algorithm.norm_adv_by_std_in_grpo`` is honoured. The alternative without this estimator:
``algorithm.adv_estimator=grpo algorithm.norm_adv_by_std_in_grpo=false`` (Dr. GRPO): advantages
are then ``r − mean(group)`` and keep the reward's scale, so the asymmetric correctness values of
the ``rationanomaly`` preset act directly (a missed anomaly group's spread is 2.5 vs 2.0 for a
false alarm group), at the cost of unnormalised advantage magnitudes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, register_adv_est

logger = logging.getLogger(__name__)

ESTIMATOR_NAME = "grpo_class_weighted"
DEFAULT_CLASS_WEIGHTING: Mapping[str, float] = {
    "missed_anomaly": 2.0,
    "false_alarm": 1.0,
    "abnormal_offset": 100.0,
}


def _config_get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    if isinstance(config, Mapping) or hasattr(config, "get"):
        try:
            value = config.get(key, default)
        except (AttributeError, KeyError, TypeError):
            value = getattr(config, key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def class_weighting_settings(config: Any) -> dict[str, float]:
    """Read ``class_weighting`` from verl's algorithm config, filling defaults.

    >>> class_weighting_settings({"class_weighting": {"missed_anomaly": 3}})["missed_anomaly"]
    3.0
    """
    raw = _config_get(config, "class_weighting", {}) or {}
    settings = {key: float(raw.get(key, value)) for key, value in DEFAULT_CLASS_WEIGHTING.items()}
    unknown = set(raw.keys()) - set(DEFAULT_CLASS_WEIGHTING)
    if unknown:
        raise ValueError(f"unknown algorithm.class_weighting keys {sorted(unknown)}")
    if settings["abnormal_offset"] <= 0:
        raise ValueError("algorithm.class_weighting.abnormal_offset must be > 0")
    return settings


def remove_abnormal_offset_(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, offset: float
) -> torch.Tensor:
    """Find the samples carrying the abnormal offset and subtract it in place.

    The offset comes off at each response's last token (where the score sits), so the token
    layout stays the one verl's reward managers wrote.

    Args:
        token_level_rewards: ``(bs, response_length)`` rewards, modified in place.
        response_mask: ``(bs, response_length)`` mask of response tokens.
        offset: ``algorithm.class_weighting.abnormal_offset`` (> the reward's range).

    Returns:
        ``(bs,)`` boolean tensor, True for abnormal-gold samples.

    >>> r = torch.tensor([[0.0, 101.0], [0.0, -1.0]])
    >>> remove_abnormal_offset_(r, torch.ones(2, 2), 100.0).tolist(), r[:, -1].tolist()
    ([True, False], [1.0, -1.0])
    """
    is_abnormal = token_level_rewards.sum(dim=-1) > offset / 2.0
    last = (response_mask.sum(dim=-1).long() - 1).clamp(min=0)
    rows = torch.arange(token_level_rewards.shape[0], device=token_level_rewards.device)
    token_level_rewards[rows, last] -= offset * is_abnormal.to(token_level_rewards.dtype)
    return is_abnormal


@register_adv_est(ESTIMATOR_NAME)
def compute_grpo_class_weighted_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verl's GRPO outcome advantage, then multiplied by the sample's class weight.

    Args:
        token_level_rewards: ``(bs, response_length)`` rewards (score at the last token).
        response_mask: ``(bs, response_length)`` mask of response tokens.
        index: Group id (verl's ``uid``) per sample.
        epsilon: Added to the group std.
        config: verl's ``algorithm`` config (``class_weighting``, ``norm_adv_by_std_in_grpo``).

    Returns:
        ``(advantages, returns)``, both ``(bs, response_length)``.
    """
    settings = class_weighting_settings(config)
    is_abnormal = remove_abnormal_offset_(token_level_rewards, response_mask, settings["abnormal_offset"])
    if not bool(is_abnormal.any()):
        logger.debug("grpo_class_weighted: no abnormal-gold sample in this batch")
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=bool(_config_get(config, "norm_adv_by_std_in_grpo", True)),
    )
    weights = torch.where(
        is_abnormal,
        torch.tensor(settings["missed_anomaly"], dtype=advantages.dtype),
        torch.tensor(settings["false_alarm"], dtype=advantages.dtype),
    ).to(advantages.device)
    advantages = advantages * weights.unsqueeze(-1)
    return advantages, advantages
