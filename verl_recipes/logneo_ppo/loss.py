r"""The LogNEO actor loss: verl's PPO loss plus ``μ ×`` next-key cross-entropy on gold continuations.

verl 0.9.1's engine workers call ``loss_fn(config=…, model_output=…, data=…, dp_group=…)`` on
every micro-batch (``verl.workers.engine_workers`` ``set_loss_fn``; the stock actor loss is
``verl.workers.utils.losses.ppo_loss``). :func:`logneo_ppo_loss` returns

    L = ppo_loss(config, model_output, data) + μ · CE

where the micro-batch holds two kinds of rows (built by :mod:`verl_recipes.logneo_ppo.trainer`):

* **rollout rows**: the rollouts as verl made them; ``response_mask``/``loss_mask`` mark their
  generated tokens, ``ce_mask`` is all zeros;
* **gold rows**: ``prompt + gold continuation`` (teacher forcing), ``response_mask`` and
  ``loss_mask`` all zeros (so verl's PPO term, its token count ``batch_num_tokens`` and its
  entropy/KL terms ignore them exactly), ``ce_mask`` ones on the gold tokens.

``CE`` is the mean over the mini-batch's gold rows of each row's mean next-key negative
log-likelihood (verl's ``agg_loss`` in ``seq-mean-token-mean`` mode, normalised by
``global_batch_size`` = the number of gold rows in the global mini-batch and scaled by
``dp_size`` as verl does for FSDP gradient averaging). With ``μ = 0`` or no ``ce_mask`` in the
batch the loss is verl's ``ppo_loss`` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

#: Per-token field of the actor batch: 1 on the gold tokens of a gold row, 0 elsewhere.
CE_MASK = "ce_mask"
#: verl's aggregation of the CE term (one gold sequence weighs as much as another).
CE_AGG_MODE = "seq-mean-token-mean"


def ce_term(model_output: dict[str, Any], data: TensorDict) -> torch.Tensor:
    """Mean next-key NLL of the gold rows of a micro-batch, normalised over the global mini-batch.

    Args:
        model_output: verl's engine output; ``log_probs`` is nested ``(bsz, j)`` over
            ``prompt + response`` (each token's log-probability given the tokens before it).
        data: The micro-batch (``prompts``, ``responses``, :data:`CE_MASK`, ``dp_size`` and
            ``global_batch_size`` when the engine set them).

    Returns:
        Scalar tensor (differentiable through ``log_probs``).
    """
    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    mask = data.select(CE_MASK).to_padded_tensor()[CE_MASK].to(log_prob.dtype)
    if mask.shape[-1] < log_prob.shape[-1]:
        mask = F.pad(mask, (0, log_prob.shape[-1] - mask.shape[-1]))
    return agg_loss(loss_mat=-log_prob, loss_mask=mask, loss_agg_mode=CE_AGG_MODE,
                    dp_size=_get(data, "dp_size", 1), global_batch_size=_get(data, "global_batch_size"))


def logneo_ppo_loss(config: Any, model_output: dict[str, Any], data: TensorDict, dp_group: Any = None,
                    *, ce_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, Any]]:
    """The stock ``ppo_loss`` plus ``ce_coef ×`` :func:`ce_term` (see the module docstring).

    Args:
        config: The actor's ``ActorConfig`` (as for ``ppo_loss``).
        model_output: verl's engine output for the micro-batch.
        data: The micro-batch.
        dp_group: Data-parallel group (passed on to ``ppo_loss``).
        ce_coef: ``μ``, weight of the cross-entropy regulariser (``>= 0``).

    Returns:
        ``(loss, metrics)``; metrics gain ``actor/ce_loss`` when the CE term is on.
    """
    loss, metrics = ppo_loss(config, model_output, data, dp_group)
    if ce_coef == 0.0 or CE_MASK not in data.keys():  # noqa: SIM118 (iterating a TensorDict yields rows)
        return loss, metrics
    ce = ce_term(model_output, data)
    aggregation = AggregationType.SUM if _global_normalised(config, data) else AggregationType.MEAN
    metrics["actor/ce_loss"] = Metric(value=ce, aggregation=aggregation)
    return loss + ce_coef * ce, metrics


def _get(data: TensorDict, key: str, default: Any = None) -> Any:
    """A non-tensor entry of ``data`` (``dp_size``, ``global_batch_size``), ``default`` if absent."""
    return tu.get(data, key, default)


def _global_normalised(config: Any, data: TensorDict) -> bool:
    """The rule of verl's ``ppo_loss``: loss parts are global-batch sums, so metrics aggregate by SUM."""
    return bool(_get(data, "dp_size", 1) > 1 or _get(data, "batch_num_tokens") is not None
                or _get(data, "global_batch_size") is not None
                or getattr(config, "loss_scale_factor", None) is not None)
