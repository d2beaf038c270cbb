"""Class weights for GRPO-family training: in the reward, and checked to survive the estimator.

Why: every GRPO group is n answers to one log, hence one gold class. The reward can weigh the
classes (a missed anomaly should cost more than a false alarm), but whether that weight reaches
the policy gradient depends on the advantage estimator:

* GRPO **with** std normalisation, ``A = (r − mean) / std`` per group, is invariant to a
  group-constant scale: a class weight cancels exactly.
* GRPO **without** it (``algorithm.norm_adv_by_std_in_grpo=false``, "Dr. GRPO"),
  ``A = r − mean``: a weight ``w`` on every reward of the group gives ``w · (r − mean)``, exactly a
  class-weighted advantage. RLOO, REINFORCE++ (batch-level whitening) and GAE keep it too.

Design: ``reward_kwargs.class_weights = {abnormal: w_a, normal: w_n}`` multiplies the composite
score of each sample by the weight of its gold class, ``score = w(gold) · Σ weight · value``.
Nothing else travels in the reward, so what verl logs (``critic/score/*``,
``critic/rewards/*``), dumps and validates is the reward the policy optimises, inside the bounds
``[min_w · low, max_w · high]`` of the configured components. :func:`check_class_weights` runs the
configured estimator (verl's own ``compute_advantage``) on two synthetic groups and refuses a
configuration in which the weights do not reach the advantages, so a recipe cannot silently
switch class weighting off by changing estimator or normalisation.

>>> parse_class_weights({"abnormal": 2})
{'normal': 1.0, 'abnormal': 2.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from reward.labels import ABNORMAL, LABELS, NORMAL

# Rewards of the synthetic group used to measure what an estimator does to class weights.
_PROBE_REWARDS: tuple[float, ...] = (1.0, -1.0, 0.5, -1.5)
_PROBE_RTOL = 1e-3


def parse_class_weights(raw: Mapping[str, Any] | None) -> dict[str, float]:
    """Validate ``reward_kwargs.class_weights`` and fill missing classes with 1.0.

    Args:
        raw: ``{label: weight}`` with labels ``normal``/``abnormal``, or None.

    Returns:
        ``{"normal": w_n, "abnormal": w_a}``.

    Raises:
        ValueError: An unknown label, or a weight that is not a finite number > 0.

    >>> parse_class_weights(None)
    {'normal': 1.0, 'abnormal': 1.0}
    """
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(LABELS))
    if unknown:
        raise ValueError(f"class_weights: unknown classes {unknown}; use {list(LABELS)}")
    weights: dict[str, float] = {}
    for label in LABELS:
        value = raw.get(label, 1.0)
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"class_weights.{label} must be a number, got {value!r}") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"class_weights.{label} must be finite and > 0, got {value!r}")
        weights[label] = weight
    return weights


def is_weighted(weights: Mapping[str, float]) -> bool:
    """True when the classes are weighted differently.

    >>> is_weighted({"normal": 1.0, "abnormal": 2.0}), is_weighted({"normal": 3.0, "abnormal": 3.0})
    (True, False)
    """
    return len(set(weights.values())) > 1


def measured_weight_ratio(
    adv_estimator: str, algorithm: Any, weights: Mapping[str, float], num_repeat: int = 4
) -> float:
    """Run verl's ``compute_advantage`` on one abnormal and one normal group; return the ratio.

    Both groups hold the same rewards, scaled by their class weight, as the reward does. The
    result is (spread of the abnormal group's advantages) / (spread of the normal group's): it
    equals ``w_a / w_n`` when the estimator keeps class weights and 1.0 when it cancels them.

    Args:
        adv_estimator: ``algorithm.adv_estimator``.
        algorithm: verl's ``algorithm`` config (``gamma``, ``lam``, ``norm_adv_by_std_in_grpo``, …).
        weights: Output of :func:`parse_class_weights`.
        num_repeat: Samples per group.
    """
    import numpy as np
    import torch
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    base = torch.tensor([_PROBE_REWARDS[i % len(_PROBE_REWARDS)] for i in range(num_repeat)])
    scores = torch.cat([base * weights[ABNORMAL], base * weights[NORMAL]])
    n, length = scores.shape[0], 3
    rewards = torch.zeros((n, length))
    rewards[:, -1] = scores
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": rewards,
            "token_level_scores": rewards.clone(),
            "response_mask": torch.ones((n, length)),
            "values": torch.zeros((n, length)),
            "responses": torch.zeros((n, length), dtype=torch.long),
            "attention_mask": torch.ones((n, 2 * length), dtype=torch.long),
        },
        non_tensors={"uid": np.array(["abnormal"] * num_repeat + ["normal"] * num_repeat, dtype=object)},
    )
    if adv_estimator == "remax":  # the only estimator that reads greedy-baseline rewards
        data.batch["reward_baselines"] = torch.zeros(n)
    get = algorithm.get if hasattr(algorithm, "get") else (lambda key, default=None: default)
    data = compute_advantage(
        data,
        adv_estimator=adv_estimator,
        gamma=float(get("gamma", 1.0)),
        lam=float(get("lam", 1.0)),
        num_repeat=num_repeat,
        norm_adv_by_std_in_grpo=bool(get("norm_adv_by_std_in_grpo", True)),
        config=algorithm,
    )
    first = data.batch["advantages"][:, 0]
    abnormal, normal = first[:num_repeat], first[num_repeat:]
    return float((abnormal.max() - abnormal.min()) / (normal.max() - normal.min()))


def check_class_weights(adv_estimator: str, algorithm: Any, reward_kwargs: Mapping[str, Any] | None) -> None:
    """Refuse class weights that the configured advantage estimator would cancel.

    Args:
        adv_estimator: ``algorithm.adv_estimator`` of the composed config.
        algorithm: The ``algorithm`` section.
        reward_kwargs: ``reward.custom_reward_function.reward_kwargs``.

    Raises:
        ValueError: The weights are invalid, or differ while the estimator removes them (for
            example ``grpo`` with ``norm_adv_by_std_in_grpo=true``), or the estimator cannot be
            probed to show that it keeps them.
    """
    weights = parse_class_weights((reward_kwargs or {}).get("class_weights"))
    if not is_weighted(weights):
        return
    expected = weights[ABNORMAL] / weights[NORMAL]
    try:
        ratio = measured_weight_ratio(adv_estimator, algorithm, weights)
    except Exception as err:  # an estimator needing inputs the probe does not have
        raise ValueError(
            f"class_weights {weights} with adv_estimator={adv_estimator!r}: cannot check that the "
            f"estimator keeps them ({type(err).__name__}: {err}); use grpo with "
            "algorithm.norm_adv_by_std_in_grpo=false, rloo or reinforce_plus_plus, or drop class_weights"
        ) from err
    if not math.isclose(ratio, expected, rel_tol=_PROBE_RTOL):
        raise ValueError(
            f"class_weights {weights} do not survive adv_estimator={adv_estimator!r} "
            f"(norm_adv_by_std_in_grpo={algorithm.get('norm_adv_by_std_in_grpo', True)}): the "
            f"abnormal/normal advantage ratio is {ratio:.3f}, not {expected:.3f}. Per-group std "
            "normalisation cancels a per-class scale; set algorithm.norm_adv_by_std_in_grpo=false "
            "(Dr. GRPO) or drop class_weights"
        )
