r"""Token-level next-key rewards for verl 0.9.1: a reward manager and the token placement it uses.

A rollout answers a key prefix with generated keys, one token per key (the key tokenizer of
``verl_recipes.local.keyseq.model``). :func:`reward.keyseq.position_rewards` scores every
position ``t < T = max(len(generated), len(gold))``; this module puts ``r_t`` on the response
token that generated key ``t``:

* the generated keys are the response tokens before the first ``<eos>`` (any token that is not a
  key, ``<unk>``/``<pad>``/an id outside the tokenizer, is a generated position that misses);
* ``r_t`` for ``t < len(generated)`` goes on response token ``t``;
* positions the generation did not fill (it ended before the gold did) have no token: their miss
  penalties are **added to the last response token** (the ``<eos>``, or the last key when the
  response hit ``data.max_response_length``);
* the ``sequence`` preset (one scalar per sequence) puts its mean on the last response token;
* an empty response has no token to carry anything and gets no reward.

So the row sum of the token rewards is always ``Σ_t r_t`` (``sequence``: the mean).

verl 0.9.1's agent loop stores one float per trajectory (``AgentLoopOutput.reward_score``) and
places it on the last token; :class:`KeyseqTokenRewardManager` returns that float as the row sum
(what verl logs as ``critic/score`` and validates on), and the registered trainer
``logneo_sync`` (:mod:`verl_recipes.logneo_ppo.trainer`) spreads it back onto the tokens with
:func:`token_level_scores` before verl computes advantages. Malformed generations never raise.

>>> from types import SimpleNamespace
>>> tok = SimpleNamespace(eos_token_id=2, convert_ids_to_tokens=lambda ids: [
...     {2: "<eos>", 4: "E1", 5: "E2", 6: "E3"}.get(i) for i in ids])
>>> token_rewards(tok, [4, 6, 2], ["E1", "E2", "E3"], "logneo").round(4).tolist()
[1.0, 0.0844, -0.4866]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from reward.keyseq import KeyseqReward, position_rewards, reward_spec, sequence_reward, split_keys

logger = logging.getLogger(__name__)

#: Token string used for ids the tokenizer does not know (a miss, never an exception).
UNKNOWN_TOKEN = "<unk>"
#: ``reward_extra_info`` keys, the same on every call (verl logs them per data source).
EXTRA_KEYS: tuple[str, ...] = ("score", "acc", "length_gap")


def spec_from_kwargs(kwargs: Mapping[str, Any] | None) -> KeyseqReward:
    """The reward constants of ``reward.reward_kwargs`` (``preset`` plus field overrides).

    >>> spec_from_kwargs({"preset": "loggpt"}).kind
    'exact'
    >>> spec_from_kwargs(None) == spec_from_kwargs({"preset": "logneo"})
    True
    """
    kwargs = dict(kwargs or {})
    preset = str(kwargs.pop("preset", "logneo"))
    return reward_spec(preset, **kwargs)


def generated_keys(tokenizer: Any, response_ids: Sequence[int]) -> list[str]:
    """The response's tokens before its first ``<eos>``; ids the tokenizer lacks become ``<unk>``.

    Args:
        tokenizer: The key tokenizer (``eos_token_id``, ``convert_ids_to_tokens``).
        response_ids: The valid (unpadded) response token ids.

    Returns:
        One string per generated position.
    """
    ids = [int(i) for i in response_ids]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    known = [i for i in ids if i >= 0]  # the tokenizer cannot even look a negative id up
    names = iter(tokenizer.convert_ids_to_tokens(known) if known else [])
    tokens = [next(names) if i >= 0 else None for i in ids]
    return [tok if isinstance(tok, str) else UNKNOWN_TOKEN for tok in tokens]


def place_rewards(rewards: np.ndarray, n_generated: int, n_tokens: int) -> np.ndarray:
    """Put position rewards on response tokens (see the module docstring).

    Args:
        rewards: ``r_t`` for ``t < max(n_generated, len(gold))``.
        n_generated: Generated positions (tokens before ``<eos>``).
        n_tokens: Valid response tokens (``<eos>`` included).

    Returns:
        float64 array of length ``n_tokens``.

    >>> place_rewards(np.array([1.0, 2.0, 4.0]), 1, 2).tolist()  # two unfilled positions
    [1.0, 6.0]
    >>> place_rewards(np.array([1.0, 2.0]), 0, 0).tolist()
    []
    """
    out = np.zeros(n_tokens)
    if n_tokens == 0:
        return out
    k = min(n_generated, n_tokens, len(rewards))
    out[:k] = rewards[:k]
    out[n_tokens - 1] += float(np.sum(rewards[k:]))
    return out


def token_rewards(tokenizer: Any, response_ids: Sequence[int], gold: str | Sequence[str],
                  spec: KeyseqReward | str = "logneo") -> np.ndarray:
    """Reward of every valid response token of one rollout.

    Args:
        tokenizer: The key tokenizer.
        response_ids: The valid response token ids (``<eos>`` included when generated).
        gold: The gold continuation (space-separated keys or a list).
        spec: Reward constants or a preset name of :data:`reward.keyseq.KEYSEQ_PRESETS`.

    Returns:
        float64 array, one reward per response token; its sum is the rollout's reward.
    """
    spec = reward_spec(spec) if isinstance(spec, str) else spec
    generated = generated_keys(tokenizer, response_ids)
    n_tokens = len(response_ids)
    if spec.kind == "sequence":
        return place_rewards(np.array([sequence_reward(generated, gold, spec)]), 0, n_tokens)
    return place_rewards(position_rewards(generated, gold, spec), len(generated), n_tokens)


def extra_info(tokenizer: Any, response_ids: Sequence[int], gold: str | Sequence[str],
               score: float) -> dict[str, float]:
    """Per-rollout metrics: the score, the exact-match rate over ``T`` positions, length gap.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(eos_token_id=2, convert_ids_to_tokens=lambda ids: ["E1"] * len(ids))
    >>> extra_info(tok, [4, 2], "E1 E2", 0.5)
    {'score': 0.5, 'acc': 0.5, 'length_gap': -1.0}
    """
    generated, ref = generated_keys(tokenizer, response_ids), split_keys(gold)
    positions = max(len(generated), len(ref))
    hits = sum(1 for g, r in zip(generated, ref, strict=False) if g == r)
    return {"score": float(score), "acc": hits / positions if positions else 0.0,
            "length_gap": float(len(generated) - len(ref))}


def valid_responses(data: Any) -> list[list[int]]:
    """Valid response ids of every row of a verl ``DataProto`` (``responses`` + ``attention_mask``).

    The response occupies the last ``responses.shape[-1]`` columns of ``attention_mask``; its valid
    tokens are the first ``mask.sum()`` ones (right padding), as in verl's own reward managers.
    """
    responses = data.batch["responses"]
    width = responses.shape[-1]
    lengths = data.batch["attention_mask"][:, -width:].sum(dim=-1).tolist()
    return [responses[i, : int(n)].tolist() for i, n in enumerate(lengths)]


def token_level_scores(data: Any, tokenizer: Any, spec: KeyseqReward | str) -> torch.Tensor:
    """The ``rm_scores`` tensor with each reward on its token: ``(batch, response_width)`` float32.

    Args:
        data: A ``DataProto`` with ``responses``, ``attention_mask`` and, per row, the
            ``reward_model`` dict holding ``ground_truth``.
        tokenizer: The key tokenizer.
        spec: Reward constants.

    Returns:
        Right-padded token rewards (zeros past each valid response).
    """
    width = data.batch["responses"].shape[-1]
    out = torch.zeros((len(data), width), dtype=torch.float32)
    for i, ids in enumerate(valid_responses(data)):
        gold = data.non_tensor_batch["reward_model"][i]["ground_truth"]
        out[i, : len(ids)] = torch.as_tensor(token_rewards(tokenizer, ids, gold, spec))
    return out


@register("keyseq_token")
class KeyseqTokenRewardManager(RewardManagerBase):
    """verl reward manager for next-key rollouts (``reward.reward_manager``).

    Loaded by verl with ``source: importlib`` and ``module.path:
    pkg://verl_recipes.logneo_ppo.reward_manager`` (also registered as ``keyseq_token`` for
    ``source: register`` in processes that import this module). Reads ``reward.reward_kwargs``
    (``preset`` and overrides of :class:`reward.keyseq.KeyseqReward`); ignores
    ``compute_score``.

    Args:
        config: verl's full trainer config.
        tokenizer: The key tokenizer.
        compute_score: Unused (verl passes its default scorer).
        reward_router_address: Unused (no reward model).
        reward_model_tokenizer: Unused.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None,
                 reward_router_address: str | None = None, reward_model_tokenizer: Any = None):
        super().__init__(config, tokenizer, compute_score)
        self.spec = spec_from_kwargs(_reward_kwargs(config))

    def score_row(self, response_ids: Sequence[int], gold: str | Sequence[str]) -> dict[str, Any]:
        """``{"reward_score", "reward_extra_info"}`` of one rollout (the return of run_single)."""
        score = float(np.sum(token_rewards(self.tokenizer, response_ids, gold, self.spec)))
        return {"reward_score": score,
                "reward_extra_info": extra_info(self.tokenizer, response_ids, gold, score)}

    async def run_single(self, data: Any) -> dict[str, Any]:
        """Score the last rollout of ``data`` (verl calls this with one row)."""
        data = data[-1:]
        ids = valid_responses(data)[0]
        gold = data.non_tensor_batch["reward_model"][0]["ground_truth"]
        return await self.loop.run_in_executor(None, lambda: self.score_row(ids, gold))


def _reward_kwargs(config: Any) -> Mapping[str, Any]:
    """``reward.reward_kwargs`` of a verl config (dict or DictConfig), empty when absent."""
    reward = config.get("reward", {}) if hasattr(config, "get") else {}
    kwargs = reward.get("reward_kwargs", None) if hasattr(reward, "get") else None
    if kwargs is None:
        return {}
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(kwargs):
            return OmegaConf.to_container(kwargs, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        pass
    return dict(kwargs)
