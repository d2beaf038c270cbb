r"""The ``logneo_sync`` trainer: verl 0.9.1's synchronous PPO trainer with the two LogNEO pieces.

Registered with verl's own trainer registry (``verl.trainer.ppo.v1.register_trainer``) and chosen
by ``trainer.v1.trainer_mode=logneo_sync``; ``main_ppo``'s task runner looks the name up after
importing the modules of ``VERL_USE_EXTERNAL_MODULES`` (:mod:`verl_recipes.logneo_ppo.plugin`).
It subclasses ``PPOTrainerSync`` and changes exactly three methods (plus
``_build_replay_buffer``, which only sets ``self.trainer_mode = "sync"``: verl's base trainer
compares the mode *name* with ``"sync"`` to pick the synchronous replay buffer, refill and
checkpoint behaviour):

``_setup``
    After verl's setup, hands the actor workers the LogNEO loss through verl's public
    ``set_loss_fn`` (the trainer does the same for the critic's value loss):
    :func:`verl_recipes.logneo_ppo.loss.logneo_ppo_loss` with ``μ = logrl.ce_coef``.

``_compute_advantage``
    verl's agent loop keeps one float per rollout (the reward manager's row sum, on the last
    token). Before verl's own ``_compute_advantage`` (in-reward KL, then GAE), the rollout's
    ``rm_scores`` in TransferQueue are replaced by the token-level rewards of
    :func:`verl_recipes.logneo_ppo.reward_manager.token_rewards`; their row sum must equal the
    float the reward manager returned (else the run stops: another reward manager is configured).

``_update_actor``
    With ``μ > 0``, every rollout row of the update batch is followed by its **gold row**
    (``prompt + gold continuation``, teacher forcing; :func:`with_gold_rows`), and the actor
    update runs on that batch: mini-batches hold twice the rows (``mini_batch_size = 2m``) while
    verl's PPO normalisation keeps ``global_batch_size = m`` rollouts. Gold rows carry zero
    ``response_mask``/``loss_mask``, so verl's PPO, entropy and KL terms do not see them. With
    ``μ = 0`` the stock update runs.

Gold continuations are the row's ``reward_model.ground_truth`` keys (no ``<eos>``), truncated to
``data.max_response_length``; keys outside the vocabulary become ``<unk>``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.reward import resolve_reward_manager_cls
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict

from reward.keyseq import KeyseqReward, split_keys
from verl_recipes.logneo_ppo.loss import CE_MASK, logneo_ppo_loss
from verl_recipes.logneo_ppo.reward_manager import (
    KeyseqTokenRewardManager,
    spec_from_kwargs,
    token_rewards,
)

logger = logging.getLogger(__name__)

#: Name of the trainer in verl's registry (``trainer.v1.trainer_mode``).
TRAINER_MODE = "logneo_sync"
#: The mode name verl 0.9.1's trainer code compares with to run synchronously.
SYNC_MODE = "sync"
#: Config key of ``μ`` (LogRL's own section; verl ignores it).
CE_COEF_KEY = "logrl.ce_coef"
#: Actor-update fields of a rollout row that the gold rows copy or fill (others are not fetched).
SEQUENCE_FIELDS: tuple[str, ...] = ("input_ids", "position_ids", "attention_mask")
RESPONSE_FIELDS: tuple[str, ...] = ("response_mask", "loss_mask", "old_log_probs", "advantages",
                                    "ref_log_prob", "rollout_is_weights", "rollout_log_probs")
ACTOR_FIELDS: tuple[str, ...] = ("prompts", "responses", *SEQUENCE_FIELDS, *RESPONSE_FIELDS)
#: Largest relative gap between a row's token rewards and the reward manager's float, both summed
#: in float64: ``|Σ row − Σ score| / max(1, |Σ score|)`` (verl stores scores as float32).
SUM_TOLERANCE = 1e-5


@dataclass(frozen=True)
class LogneoSettings:
    """What the trainer reads from the config, checked before any worker starts.

    Attributes:
        ce_coef: ``μ``, weight of the gold-continuation cross-entropy in the actor loss.
        spec: Reward constants (``reward.reward_kwargs``).
        max_gold_tokens: Gold tokens kept per row (``data.max_response_length``).
    """

    ce_coef: float
    spec: KeyseqReward
    max_gold_tokens: int

    @classmethod
    def from_config(cls, config: Any) -> LogneoSettings:
        """Read and check the settings of a composed ``ppo_trainer`` config.

        Raises:
            ValueError: For a negative ``μ``, a reward manager other than
                :class:`KeyseqTokenRewardManager`, distillation, or shuffled actor mini-batches
                with ``μ > 0`` (gold rows must stay beside their rollouts).
        """
        ce_coef = float(OmegaConf.select(config, CE_COEF_KEY, default=0.0) or 0.0)
        if ce_coef < 0:
            raise ValueError(f"{CE_COEF_KEY} must be >= 0, got {ce_coef}")
        manager = resolve_reward_manager_cls(config)
        if not issubclass(manager, KeyseqTokenRewardManager):
            raise ValueError(f"{TRAINER_MODE} needs reward.reward_manager = KeyseqTokenRewardManager "
                             f"(verl_recipes.logneo_ppo.reward_manager), got {manager.__name__}")
        if OmegaConf.select(config, "distillation.enabled", default=False):
            raise ValueError(f"{TRAINER_MODE} replaces the actor loss; distillation is not supported")
        if ce_coef > 0 and OmegaConf.select(config, "actor_rollout_ref.actor.shuffle", default=False):
            raise ValueError(f"{TRAINER_MODE} with {CE_COEF_KEY} > 0 needs "
                             "actor_rollout_ref.actor.shuffle=false (gold rows follow their rollouts)")
        kwargs = OmegaConf.select(config, "reward.reward_kwargs", default=None)
        kwargs = OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) else kwargs
        return cls(ce_coef=ce_coef, spec=spec_from_kwargs(kwargs),
                   max_gold_tokens=int(config.data.max_response_length))


def token_reward_rows(tokenizer: Any, responses: Sequence[torch.Tensor], truths: Sequence[Any],
                      scores: Sequence[torch.Tensor], padding: Sequence[bool],
                      spec: KeyseqReward) -> tuple[list[torch.Tensor], float]:
    """Token-level ``rm_scores`` rows of a batch, and their largest relative gap to verl's scores.

    Args:
        tokenizer: The key tokenizer.
        responses: Each rollout's response ids (unpadded).
        truths: Each rollout's gold continuation.
        scores: Each rollout's ``rm_scores`` as verl's agent loop wrote them (the reward manager's
            float on the last token).
        padding: Rows verl added to fill a batch (``is_padding`` tag): they stay all zeros.
        spec: Reward constants.

    Returns:
        ``(rows, gap)``: one float tensor per rollout, shaped like its ``rm_scores``, and the
        largest ``|row.sum() − score.sum()| / max(1, |score.sum()|)`` over real rows.

    Raises:
        RuntimeError: When the gap exceeds :data:`SUM_TOLERANCE` (the agent loop scored with
            another reward manager or other ``reward.reward_kwargs``).
    """
    rows, gap = [], 0.0
    for ids, truth, score, pad in zip(responses, truths, scores, padding, strict=True):
        if pad:
            rows.append(torch.zeros_like(score))
            continue
        row = torch.as_tensor(token_rewards(tokenizer, ids.tolist(), truth, spec), dtype=score.dtype)
        total = float(score.double().sum())
        gap = max(gap, abs(float(row.double().sum()) - total) / max(1.0, abs(total)))
        rows.append(row)
    if gap > SUM_TOLERANCE:
        raise RuntimeError(f"token rewards differ from the reward manager's scores (relative gap {gap:.3g}): "
                           "reward.reward_manager must be KeyseqTokenRewardManager with the same "
                           "reward.reward_kwargs")
    return rows, gap


def gold_ids(tokenizer: Any, ground_truth: Any, max_tokens: int) -> list[int]:
    """Token ids of a gold continuation (unknown keys → ``<unk>``), at most ``max_tokens``.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(convert_tokens_to_ids=lambda keys: [int(k[1:]) for k in keys])
    >>> gold_ids(tok, "E4 E5 E6", 2)
    [4, 5]
    """
    keys = split_keys(ground_truth) if ground_truth is not None else []
    return list(tokenizer.convert_tokens_to_ids(keys))[:max_tokens] if keys else []


def ground_truths(reward_model: Any) -> list[Any]:
    """``ground_truth`` of each row's ``reward_model`` dict, as TransferQueue returns the column.

    Depending on the TransferQueue backend the non-tensor column is a tensordict ``LinkedList``,
    a ``NonTensorStack`` or a numpy array; ``list()`` reads all of them (as verl's own trainer does).
    """
    items = reward_model.tolist() if hasattr(reward_model, "tolist") else list(reward_model)
    return [item["ground_truth"] for item in items]


def _rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The per-row tensors of a nested (jagged) or dense batch tensor."""
    return list(tensor.unbind(0))


def gold_row(rollout: dict[str, torch.Tensor], gold: Sequence[int],
             filler_id: int) -> dict[str, torch.Tensor]:
    """The teacher-forcing row of one rollout row: its prompt followed by ``gold``.

    Args:
        rollout: One rollout row: ``prompts``, ``responses`` and whichever of
            :data:`SEQUENCE_FIELDS`/:data:`RESPONSE_FIELDS` the batch has, plus :data:`CE_MASK`.
        gold: Gold token ids; empty gives a one-token row (``filler_id``) with no CE.
        filler_id: Token of an empty gold row (``<eos>``).

    Returns:
        The same fields, response-aligned ones of ``len(gold)``: zeros except ``responses`` and
        :data:`CE_MASK` (ones on gold tokens).
    """
    prompt = rollout["prompts"]
    response = torch.as_tensor(list(gold) or [filler_id], dtype=rollout["responses"].dtype)
    sequence = torch.cat([prompt, response])
    row = {"prompts": prompt, "responses": response,
           CE_MASK: torch.full(response.shape, 1.0 if gold else 0.0)}
    for key in SEQUENCE_FIELDS:
        if key not in rollout:
            continue
        if rollout[key].dim() != 1:
            raise NotImplementedError(f"{key} of shape {tuple(rollout[key].shape)}: text-only rows expected")
        row[key] = (sequence if key == "input_ids" else
                    torch.arange(len(sequence)) if key == "position_ids" else
                    torch.ones(len(sequence))).to(rollout[key].dtype)
    for key in RESPONSE_FIELDS:
        if key in rollout:
            row[key] = torch.zeros(response.shape, dtype=rollout[key].dtype)
    return row


def with_gold_rows(batch: TensorDict, golds: Sequence[Sequence[int] | None], filler_id: int) -> TensorDict:
    """``batch`` (rollout rows) with each row followed by its gold row: ``2 × len(batch)`` rows.

    Rollout rows gain :data:`CE_MASK` (zeros); a ``None`` gold (padding rows) gives a gold row
    without CE. Every per-token field comes back nested (jagged), as verl's engine expects.

    Args:
        batch: Rollout rows with ``prompts``, ``responses`` and actor fields (nested or dense).
        golds: One gold id list (or ``None``) per row.
        filler_id: Token of an empty gold row.

    Raises:
        ValueError: When ``golds`` does not have one entry per row.
    """
    n = batch.batch_size[0]
    if len(golds) != n:
        raise ValueError(f"{len(golds)} gold continuations for {n} rows")
    keys = [k for k in ACTOR_FIELDS if k in batch.keys()]  # noqa: SIM118 (iterating yields rows)
    columns = {k: _rows(batch[k]) for k in keys}
    out: dict[str, list[torch.Tensor]] = {k: [] for k in [*keys, CE_MASK]}
    for i in range(n):
        rollout = {k: columns[k][i] for k in keys}
        rollout[CE_MASK] = torch.zeros(rollout["responses"].shape)
        gold = gold_row(rollout, golds[i] or [], filler_id)
        for key in out:
            out[key] += [rollout[key], gold[key]]
    nested = {k: torch.nested.as_nested_tensor(v, layout=torch.jagged) for k, v in out.items()}
    return TensorDict(nested, batch_size=[2 * n])


@register_trainer(TRAINER_MODE)
class LogneoPPOTrainer(PPOTrainerSync):
    """verl's synchronous PPO trainer with token-level key rewards and the gold-CE actor loss."""

    def _build_replay_buffer(self) -> Any:
        # verl 0.9.1 tells the synchronous trainer apart by the mode *name* ("sync": replay buffer
        # class, dataloader refill, checkpointing); this trainer is that trainer, so it answers to it.
        self.trainer_mode = SYNC_MODE
        return super()._build_replay_buffer()

    def _setup(self) -> None:
        self.logneo = LogneoSettings.from_config(self.config)
        super()._setup()
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(logneo_ppo_loss, config=actor_config,
                                                  ce_coef=self.logneo.ce_coef))
        logger.info("logneo_sync: token-level key rewards, actor loss = PPO + %g x gold CE",
                    self.logneo.ce_coef)

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        self._put_token_rewards(batch, metrics)
        return super()._compute_advantage(batch, metrics)

    def _put_token_rewards(self, batch: Any, metrics: dict) -> None:
        """Replace each rollout's ``rm_scores`` in TransferQueue by its token-level rewards."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["responses", "rm_scores", "reward_model"])
        truths = ground_truths(data["reward_model"])
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
        rows, gap = token_reward_rows(self.tokenizer, _rows(data["responses"]), truths,
                                      _rows(data["rm_scores"]), padding, self.logneo.spec)
        rm_scores = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                        fields=tu.get_tensordict({"rm_scores": rm_scores}))
        metrics["logneo/token_reward_gap"] = gap

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        if self.logneo.ce_coef == 0.0:
            return super()._update_actor(batch, metrics)
        first = tq.kv_batch_get(keys=batch.keys[:1], partition_id=batch.partition_id)
        fields = [k for k in ACTOR_FIELDS if k in first.keys()]  # noqa: SIM118
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=[*fields, "reward_model"])
        truths = ground_truths(data.pop("reward_model"))
        golds = [None if tag.get("is_padding", False) else
                 gold_ids(self.tokenizer, truth, self.logneo.max_gold_tokens)
                 for tag, truth in zip(batch.tags, truths, strict=True)]
        update = with_gold_rows(data, golds, filler_id=self.tokenizer.eos_token_id)
        tu.assign_non_tensor(update, **self._actor_update_info())
        output = self.actor_rollout_wg.update_actor(update)
        output = rename_dict(output["metrics"], "actor/")
        output["perf/mfu/actor"] = output.pop("actor/mfu")
        metrics.update(reduce_metrics(output))
        return batch

    def _actor_update_info(self) -> dict[str, Any]:
        """The settings of verl's ``_update_actor``, mini-batches doubled for the gold rows."""
        actor = self.config.actor_rollout_ref.actor
        rollouts = actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n
        return {
            "calculate_entropy": bool(actor.calculate_entropy or actor.entropy_coeff != 0.0),
            "distillation_use_topk": False,
            "distillation_only": False,
            # PPO terms are normalised over the rollouts of a mini-batch ...
            "global_batch_size": rollouts,
            # ... which the data loader takes together with their gold rows
            "mini_batch_size": 2 * rollouts,
            "epochs": actor.ppo_epochs,
            "seed": actor.data_loader_seed,
            "dataloader_kwargs": {"shuffle": actor.shuffle},
            "temperature": self.config.actor_rollout_ref.rollout.temperature,
        }
