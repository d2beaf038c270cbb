r"""RL fine-tuning of a next-key model in plain PyTorch (LogNEO's PPO, LogGPT's REINFORCE), CPU scale.

An **episode** is a normal sequence cut in two: the prompt is ``<bos>`` and its first keys, the
gold continuation the rest. Episodes come from the sequence folder of ``python -m logdata
sequences``: ``rl_train.parquet`` when it is there, else ``train.parquet`` cut by the same rule
(:func:`logdata.keyseq.sequences.rl_rows`: ``⌈ρ·L⌉`` prompt keys, ``ρ = 0.2``, at least 1, at
least 2 for HDFS blocks). At every step the policy (a pretrained model from
:mod:`verl_recipes.local.keyseq.pretrain`) samples a continuation of ``--batch-size`` prompts,
as long as the gold one or until it emits ``<eos>``, and :mod:`reward.keyseq` scores every
generated key against the gold key at its position (``--reward``: ``logneo``, ``loggpt`` or
``sequence``). Keys the policy did not generate because it stopped early are misses charged to
its ``<eos>``.

Algorithms (``--algorithm``):

* ``ppo`` (LogNEO): a critic (a copy of the pretrained model with a scalar value head, its own
  AdamW) values every state; the reward of each generated key minus ``β·(log π − log π_ref)``
  (KL penalty to the frozen pretrained model, ``--kl-coef``) goes through GAE (``--gamma``,
  ``--lam``) into whitened advantages; the actor minimises the clipped surrogate (``--clip``) for
  ``--ppo-epochs`` passes over minibatches, the critic the clipped value loss. Default reward
  ``logneo`` (position-aware partial credit).
* ``reinforce`` (LogGPT): baseline-free REINFORCE, loss ``−r_t·log π(y_t)`` with each key's own
  reward (``sequence``: the sequence's reward on every key), one update per batch, no critic and
  no KL penalty (the KL is still logged). Default reward ``loggpt`` (``±1`` per key).
* ``topk_margin`` (ours, aligned with what top-K detection judges): nothing is sampled; the gold
  continuation of each prompt (plus ``<eos>`` where the detector judges it) is teacher forced and
  every gold key's lead over the K-th strongest other key is pushed above ``--margin`` by a smooth
  hinge (:func:`~verl_recipes.local.keyseq.rl_losses.topk_margin_loss`: zero loss once a normal
  key sits safely inside the top-K, so only the positions that would raise a false alarm
  move), plus ``β·KL(π_ref ‖ π)`` over the full distribution (``--kl-coef``) and ``μ·CE``. Its
  logged reward is LogGPT's ``±1`` top-K reward of the gold keys.

**CE regulariser.** ``μ`` (``--ce-coef``; 0 disables) times the next-key cross-entropy of the gold
continuation of the same prompts, teacher forced (token mean), is added to the actor loss.
Default ``0.1`` for ``ppo`` (LogNEO), ``0`` for ``reinforce`` (LogGPT).

**Validation and checkpoints.** Before the first step, every ``--eval-every`` steps and after the
last one, the policy ranks the keys of the NORMAL validation sequences (``val.parquet``) with the
detector's own functions (:mod:`validation.keyseq_detect`: same judged positions, same ranks):
``val_recall`` is the share of their true keys inside the top-K (``--k``; default LogGPT's K of
the data source, capped as the detector caps it), ``val_auc`` the mean of the recall at K' = 1 … K
(the tie-break). The best policy so far is saved to ``--out/best`` (a model folder that
``validation/keyseq_detect.py`` loads unchanged; its ``config.json`` keeps the ``keyseq_vocab``
record), and after every evaluation the whole state goes to ``--out/last`` (policy, critic,
AdamW moments as safetensors, ``trainer_state.json``), which ``--resume`` continues from with the
saved settings and the same step numbers. Every random draw comes from a generator seeded by
``(--seed, step)``, so a resumed run draws what an uninterrupted one would.

``--out/metrics.jsonl``: one JSON object per step (and one for step 0, the evaluation of the
pretrained model) with the keys of :data:`METRIC_KEYS`; ``null`` where a value does not apply
(no critic in ``reinforce``, no evaluation at that step). ``--out/rl_summary.json`` at the end.

Usage::

    python -m verl_recipes.local.keyseq.rl --input datasets/hdfs/keyseq --model outputs/loggpt_hdfs \\
        --out outputs/logneo_hdfs --algorithm ppo --reward logneo --ce-coef 0.1 --steps 200 --k 7
    python -m verl_recipes.local.keyseq.rl --input datasets/hdfs/keyseq --model outputs/loggpt_hdfs \\
        --out outputs/logneo_hdfs --steps 400 --resume   # continue to step 400

Modules: :mod:`.rl_rollout` (episodes, padded batches, sampling, token rewards),
:mod:`.rl_losses` (GAE and the losses, checked by hand in ``tests/test_keyseq_rl.py``), this one
(the trainer, checkpoints, validation, the command line). Command lines, metrics and measured
numbers: ``verl_recipes/local/keyseq/README.md``. On clusters, the verl recipe
``verl_recipes/logneo_ppo`` runs the same reward at scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from logdata.cliargs import (
    add_flag,
    add_input_flag,
    add_out_flag,
    add_overwrite_flag,
    add_progress_flag,
    add_seed_flag,
    new_parser,
)
from logdata.errors import LogDataError, run_cli
from logdata.io import atomic_write_text, require_dir
from reward.keyseq import KEYSEQ_PRESETS, reward_spec
from reward.perplexity import resolve_device
from validation.keyseq_detect import (
    DEFAULT_SKIP_FIRST,
    check_vocabulary,
    encode_chunks,
    load_test,
    n_real_keys,
    read_meta,
    resolve_judge_eos,
    resolve_k,
    score_chunks,
    window_kind,
)
from verl_recipes.local.common import METRICS_FILE, plain_file_modes, write_json
from verl_recipes.local.keyseq.model import load_model, save_model
from verl_recipes.local.keyseq.rl_losses import (
    gae,
    kl_penalty,
    masked_mean,
    ppo_policy_loss,
    reinforce_loss,
    value_loss,
    whiten,
)
from verl_recipes.local.keyseq.rl_rollout import (
    Episode,
    forward,
    left_pad,
    load_episodes,
    reward_components,
    right_pad,
    sample_responses,
    token_logprobs,
    token_rewards,
)

logger = logging.getLogger(__name__)

ALGORITHMS: tuple[str, ...] = ("ppo", "reinforce", "topk_margin")
#: Reward preset per algorithm when ``--reward`` is not given (``topk_margin`` samples nothing:
#: its logged reward is LogGPT's ±1 top-K reward of the gold keys, teacher forced).
DEFAULT_REWARD: dict[str, str] = {"ppo": "logneo", "reinforce": "loggpt", "topk_margin": "loggpt"}
#: CE regulariser weight per algorithm when ``--ce-coef`` is not given (LogNEO uses one).
DEFAULT_CE: dict[str, float] = {"ppo": 0.1, "reinforce": 0.0, "topk_margin": 0.0}
STATE_FILE = "trainer_state.json"
SUMMARY_FILE = "rl_summary.json"
BEST_FILE = "rl_best.json"
CRITIC_DIR = "critic"
VALUE_HEAD_FILE = "value_head.safetensors"
#: Keys of every ``metrics.jsonl`` row, in order.
METRIC_KEYS: tuple[str, ...] = (
    "step", "reward_mean", "reward_exact", "reward_partial", "reward_miss", "early_eos",
    "response_len", "kl", "ce", "policy_loss", "actor_loss", "value_loss", "clip_frac", "entropy",
    "tokens", "tokens_total", "seconds", "val_recall", "val_auc", "val_k", "best")


@dataclass(frozen=True)
class RLConfig:
    """Settings of one RL run (saved in ``trainer_state.json``; ``--resume`` reuses them).

    Attributes:
        algorithm: ``ppo`` or ``reinforce``.
        reward: A preset of :data:`reward.keyseq.KEYSEQ_PRESETS` (None: the algorithm's).
        steps: Total RL steps (the target step number, also when resuming).
        batch_size: Episodes sampled per step.
        ppo_epochs: PPO passes over each batch.
        minibatch_size: Episodes per PPO update (0: the whole batch).
        lr: Actor AdamW learning rate.
        critic_lr: Critic AdamW learning rate.
        clip: PPO ratio clip ``ε``.
        value_clip: Value clip ``ε_v``.
        kl_coef: ``β`` of the KL penalty in the PPO reward.
        gamma: Discount of GAE.
        lam: ``λ`` of GAE.
        ce_coef: ``μ`` of the CE regulariser (None: the algorithm's; 0 disables).
        margin: ``m`` of ``topk_margin``: the logit lead a gold key should hold over the K-th.
        temperature: Sampling temperature (log-probabilities use the same).
        whiten: Whiten PPO advantages over the batch.
        max_grad_norm: Gradient clipping norm (0: off).
        eval_every: Evaluate every N steps (0: only before the first and after the last step).
        k: Top-K of the validation recall (None: the data source's default).
        val_max: Validation sequences scored (0: all).
        prefix_ratio: ``ρ`` when episodes are cut from ``train.parquet``.
        seed: Seed of every random draw.
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: Torch CPU threads (None: torch's default).
    """

    algorithm: str = "ppo"
    reward: str | None = None
    steps: int = 100
    batch_size: int = 32
    ppo_epochs: int = 2
    minibatch_size: int = 0
    lr: float = 1e-5
    critic_lr: float = 1e-4
    clip: float = 0.2
    value_clip: float = 0.2
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    ce_coef: float | None = None
    margin: float = 1.0
    temperature: float = 1.0
    whiten: bool = True
    max_grad_norm: float = 1.0
    eval_every: int = 10
    k: int | None = None
    val_max: int = 512
    prefix_ratio: float = 0.2
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def resolved(self) -> RLConfig:
        """This config with the algorithm's reward preset and CE weight in place of None."""
        return replace(
            self, reward=self.reward or DEFAULT_REWARD.get(self.algorithm, "logneo"),
            ce_coef=DEFAULT_CE.get(self.algorithm, 0.0) if self.ce_coef is None else self.ce_coef)

    def check(self) -> None:
        """Raise :class:`LogDataError` on an out-of-range setting."""
        checks = [
            (self.algorithm in ALGORITHMS, f"--algorithm must be one of {ALGORITHMS}"),
            (self.reward is None or self.reward in KEYSEQ_PRESETS,
             f"--reward must be one of {sorted(KEYSEQ_PRESETS)}"),
            (self.steps >= 1 and self.batch_size >= 1 and self.ppo_epochs >= 1,
             "--steps, --batch-size and --ppo-epochs must be >= 1"),
            (self.minibatch_size >= 0 and self.eval_every >= 0 and self.val_max >= 0,
             "--minibatch-size, --eval-every and --val-max must be >= 0"),
            (self.lr > 0 and self.critic_lr > 0 and self.temperature > 0,
             "--lr, --critic-lr and --temperature must be > 0"),
            (self.clip > 0 and self.value_clip > 0, "--clip and --value-clip must be > 0"),
            (self.kl_coef >= 0 and (self.ce_coef or 0) >= 0, "--kl-coef and --ce-coef must be >= 0"),
            (0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "--gamma and --lam must be in [0, 1]"),
            (0 < self.prefix_ratio < 1, "--prefix-ratio must be in (0, 1)"),
            (self.k is None or self.k >= 1, "--k must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise LogDataError(message)


# --- the batch of one step --------------------------------------------------------------------

@dataclass
class RolloutBatch:
    """Everything one update needs, as ``(B, …)`` tensors.

    Attributes:
        prompt_ids: Left-padded prompts.
        prompt_mask: Their mask.
        response: Right-padded sampled continuations.
        response_mask: Their mask.
        gold_ids: Right-padded gold continuations (the CE targets).
        gold_mask: Their mask.
        rewards: Token rewards of the responses (no KL shaping).
        old_logp: Sampled tokens' log-probabilities under the policy before the update.
        ref_logp: The same under the frozen reference model.
        advantages: PPO advantages (REINFORCE: the rewards).
        returns: PPO value targets (REINFORCE: zeros).
        old_values: Critic values before the update (REINFORCE: zeros).
    """

    prompt_ids: Any
    prompt_mask: Any
    response: Any
    response_mask: Any
    gold_ids: Any
    gold_mask: Any
    rewards: Any
    old_logp: Any
    ref_logp: Any
    advantages: Any
    returns: Any
    old_values: Any

    def select(self, index: Any) -> RolloutBatch:
        """The rows ``index`` of every tensor."""
        return RolloutBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def ce_loss(model: Any, batch: RolloutBatch) -> Any:
    """Teacher-forced next-key cross-entropy of the gold continuations (token mean)."""
    logp, _ = token_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.gold_ids,
                             batch.gold_mask)
    return -masked_mean(logp, batch.gold_mask)


def actor_loss(model: Any, batch: RolloutBatch, algorithm: str, clip: float, ce_coef: float,
               temperature: float = 1.0) -> tuple[Any, dict[str, float]]:
    """The actor's loss on a (mini)batch: PPO's clipped surrogate or REINFORCE, plus ``μ·CE``.

    Returns:
        ``(loss, parts)`` with ``policy_loss``, ``ce``, ``clip_frac`` (PPO) and ``entropy``.
    """
    import torch

    logp, entropy = token_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.response,
                                   batch.response_mask, temperature)
    mask = batch.response_mask
    if algorithm == "ppo":
        policy, clip_frac = ppo_policy_loss(logp, batch.old_logp, batch.advantages, mask, clip)
    else:
        policy, clip_frac = reinforce_loss(logp, batch.advantages, mask), None
    if ce_coef > 0:
        ce = ce_loss(model, batch)
        loss = policy + ce_coef * ce
    else:
        with torch.no_grad():
            ce = ce_loss(model, batch)
        loss = policy
    parts = {"policy_loss": float(policy.detach()), "ce": float(ce.detach()), "entropy":
             float(masked_mean(entropy.detach(), mask)),
             "clip_frac": None if clip_frac is None else float(clip_frac)}
    return loss, parts


class Critic:
    """A value model: a causal-LM trunk (a copy of the pretrained model) and a linear value head.

    The value of a state is the head applied to the trunk's last hidden state there.
    """

    def __init__(self, trunk: Any, head: Any | None = None) -> None:
        import torch

        self.trunk = trunk
        self.head = head if head is not None else torch.nn.Linear(trunk.config.hidden_size, 1)
        if head is None:
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)
        self.head.to(next(trunk.parameters()).device)

    def parameters(self) -> list[Any]:
        """Trainable parameters (trunk and head)."""
        return [*self.trunk.parameters(), *self.head.parameters()]

    def values(self, prompt_ids: Any, prompt_mask: Any, response: Any, response_mask: Any) -> Any:
        """``(B, R)`` values of the states before every response token."""
        import torch

        width = prompt_ids.size(1)
        out = forward(self.trunk, torch.cat([prompt_ids, response], 1),
                      torch.cat([prompt_mask, response_mask], 1), hidden=True)
        hidden = out.hidden_states[-1][:, width - 1: width - 1 + response.size(1)]
        return self.head(hidden.float()).squeeze(-1)

    def save(self, folder: Path, tokenizer: Any) -> None:
        """Trunk as a model folder, head as ``value_head.safetensors``."""
        from safetensors.torch import save_file

        save_model(self.trunk, tokenizer, folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / VALUE_HEAD_FILE))

    @classmethod
    def load(cls, folder: Path, device: str) -> Critic:
        """A critic saved by :meth:`save`."""
        import torch
        from safetensors.torch import load_file

        trunk, _ = load_model(folder, device)
        head = torch.nn.Linear(trunk.config.hidden_size, 1)
        head.load_state_dict(load_file(str(folder / VALUE_HEAD_FILE)))
        return cls(trunk, head)


# --- optimizer state without pickle -----------------------------------------------------------

def optimizer_tensors(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer's state as ``({"<param>.<name>": tensor}, JSON-able rest)``."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if hasattr(value, "detach"):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: Any, tensors: dict[str, Any], rest: dict[str, Any]) -> None:
    """Load a state written by :func:`optimizer_tensors` into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_optimizer(optimizer: Any, folder: Path, name: str) -> None:
    """``<name>.safetensors`` (moments) and ``<name>.json`` (hyper-parameters) in ``folder``."""
    from safetensors.torch import save_file

    tensors, rest = optimizer_tensors(optimizer)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    write_json(folder / f"{name}.json", rest)


def load_optimizer(optimizer: Any, folder: Path, name: str) -> None:
    """Restore what :func:`save_optimizer` wrote."""
    from safetensors.torch import load_file

    rest = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    restore_optimizer(optimizer, load_file(str(folder / f"{name}.safetensors")), rest)


# --- validation -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValSet:
    """Encoded normal validation chunks and their judged positions (as the detector judges)."""

    encoded: list[list[int]]
    skip: list[int]
    judge_eos: bool = False


def load_val_set(data_dir: Path, tokenizer: Any, val_max: int) -> ValSet:
    """``val.parquet`` (``train.parquet`` when it is empty) encoded as the detector encodes it."""
    path = data_dir / "val.parquet"
    rows = load_test(path)
    if rows.empty:
        logger.warning("%s is empty: validating on train.parquet", path)
        path = data_dir / "train.parquet"
        rows = load_test(path)
    rows = rows[rows["label"] == "normal"]
    if val_max:
        rows = rows.iloc[:val_max]
    meta = read_meta(path)
    source = str(meta.get("params", {}).get("data_source") or "unknown")
    judge_eos = resolve_judge_eos(None, window_kind(meta, source))
    offsets = rows["offset"].to_numpy() if "offset" in rows.columns else np.zeros(len(rows), int)
    skip = np.clip(DEFAULT_SKIP_FIRST - offsets, 0, None).tolist()
    return ValSet(encoded=encode_chunks(tokenizer, rows, judge_eos), skip=skip, judge_eos=judge_eos)


def normal_key_recall(model: Any, val: ValSet, k: int, pad_id: int, device: str = "cpu",
                      batch_size: int = 64) -> dict[str, float]:
    """Top-K recall of the normal validation keys: ``val_recall`` at K, ``val_auc`` over 1 … K.

    Ranks come from :func:`validation.keyseq_detect.score_chunks` (the detector's own ranking).
    """
    ks = list(range(1, k + 1))
    scores = score_chunks(model, val.encoded, ks, pad_id, batch_size, device, val.skip,
                          progress=False)
    judged = max(1, int(scores.n_keys.sum()))
    recall = 1.0 - scores.misses.sum(0) / judged
    return {"val_recall": float(recall[-1]), "val_auc": float(recall.mean()), "val_k": k}


def better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """Whether an evaluation beats the best one: higher ``val_recall``, then ``val_auc``.

    >>> better({"val_recall": 0.9, "val_auc": 0.5}, {"val_recall": 0.9, "val_auc": 0.4})
    True
    """
    if best is None:
        return True
    return (candidate["val_recall"], candidate["val_auc"]) > (best["val_recall"], best["val_auc"])


# --- the trainer ------------------------------------------------------------------------------

def step_generator(seed: int, step: int) -> Any:
    """The CPU generator of every draw of ``step`` (a function of the seed and the step only)."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class KeyseqRL:
    """PPO or REINFORCE over next-key episodes; :meth:`step` runs one step and returns its metrics.

    Args:
        policy: The model trained (its dropout is kept off: eval mode throughout).
        reference: The frozen pretrained model (KL penalty and logging).
        tokenizer: The key tokenizer.
        episodes: Training episodes.
        config: A resolved :class:`RLConfig`.
        critic: The value model (PPO); built from ``reference``'s weights when None.
        device: Torch device of the models.
        k: The detector's K (``topk_margin``'s target rank).
        judge_eos: Whether the detector judges ``<eos>`` (``topk_margin`` then targets it too).
    """

    def __init__(self, policy: Any, reference: Any, tokenizer: Any, episodes: list[Episode],
                 config: RLConfig, critic: Critic | None = None, device: str = "cpu",
                 k: int | None = None, judge_eos: bool = False) -> None:
        import copy

        import torch

        self.config, self.tokenizer, self.episodes, self.device = config, tokenizer, episodes, device
        self.k, self.judge_eos = k or config.k or 1, judge_eos
        self.spec = reward_spec(config.reward)
        self.policy = policy.eval()
        self.reference = reference.eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr)
        self.critic = None
        self.critic_optimizer = None
        if config.algorithm == "ppo":
            self.critic = critic or Critic(copy.deepcopy(reference).requires_grad_(True))
            self.critic.trunk.eval()
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.critic_lr)

    def draw(self, generator: Any) -> list[Episode]:
        """``batch_size`` episodes (without replacement when there are enough)."""
        import torch

        n, size = len(self.episodes), self.config.batch_size
        index = (torch.randperm(n, generator=generator)[:size] if size <= n
                 else torch.randint(n, (size,), generator=generator))
        return [self.episodes[i] for i in index.tolist()]

    def rollout(self, episodes: list[Episode], generator: Any) -> tuple[RolloutBatch, dict]:
        """Sample continuations, score them and compute advantages (no gradient)."""
        import torch

        cfg, tok, dev = self.config, self.tokenizer, self.device
        prompt_ids, prompt_mask = (t.to(dev) for t in left_pad([e.prompt for e in episodes],
                                                                tok.pad_token_id))
        response, response_mask, _ = sample_responses(
            self.policy, prompt_ids, prompt_mask, [len(e.gold) for e in episodes],
            tok.eos_token_id, tok.pad_token_id, generator, cfg.temperature)
        response, response_mask = response.to(dev), response_mask.to(dev)
        gold_ids, gold_mask = (t.to(dev) for t in right_pad([e.gold_ids for e in episodes],
                                                             tok.pad_token_id))
        rewards, stats = self._score(episodes, response, response_mask)
        with torch.no_grad():
            old_logp, _ = token_logprobs(self.policy, prompt_ids, prompt_mask, response,
                                         response_mask, cfg.temperature)
            ref_logp, _ = token_logprobs(self.reference, prompt_ids, prompt_mask, response,
                                         response_mask, cfg.temperature)
            kl = kl_penalty(old_logp, ref_logp) * response_mask
            zeros = torch.zeros_like(old_logp)
            if self.critic is not None:
                values = self.critic.values(prompt_ids, prompt_mask, response, response_mask)
                values = values * response_mask
                advantages, returns = gae(rewards - cfg.kl_coef * kl, values, response_mask,
                                          cfg.gamma, cfg.lam)
                if cfg.whiten:
                    advantages = whiten(advantages, response_mask)
            else:
                values, advantages, returns = zeros, rewards * response_mask, zeros
        batch = RolloutBatch(prompt_ids, prompt_mask, response, response_mask, gold_ids,
                             gold_mask, rewards, old_logp, ref_logp, advantages, returns, values)
        stats["kl"] = float(masked_mean(kl, response_mask))
        return batch, stats

    def _score(self, episodes: list[Episode], response: Any, response_mask: Any
               ) -> tuple[Any, dict[str, float]]:
        """Token rewards ``(B, R)`` of the responses and the reward metrics."""
        import torch

        eos = self.tokenizer.eos_token_id
        rewards = torch.zeros(response.shape)
        rows, early = [], 0
        for i, episode in enumerate(episodes):
            ids = response[i][response_mask[i].bool()].tolist()
            ended = bool(ids) and ids[-1] == eos
            keys = self.tokenizer.convert_ids_to_tokens(ids[:-1] if ended else ids)
            values = token_rewards(keys, episode.gold, ended, self.spec,
                                   broadcast=self.config.algorithm == "reinforce")
            rewards[i, : len(values)] = torch.as_tensor(values, dtype=torch.float32)
            rows.append(reward_components(keys, episode.gold, self.spec))
            early += int(ended and len(keys) < len(episode.gold))
        stats = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        stats["early_eos"] = early / len(episodes)
        stats["response_len"] = float(response_mask.sum()) / len(episodes)
        return rewards.to(response.device), stats

    def update(self, batch: RolloutBatch, generator: Any) -> dict[str, float | None]:
        """PPO epochs over minibatches (or one REINFORCE update); averaged loss metrics."""
        import torch

        cfg = self.config
        size = len(batch.response)
        epochs = cfg.ppo_epochs if cfg.algorithm == "ppo" else 1
        minibatch = (cfg.minibatch_size or size) if cfg.algorithm == "ppo" else size
        logs: list[dict[str, float | None]] = []
        for _ in range(epochs):
            order = torch.randperm(size, generator=generator)
            for start in range(0, size, minibatch):
                part = batch.select(order[start:start + minibatch].to(batch.response.device))
                loss, parts = actor_loss(self.policy, part, cfg.algorithm, cfg.clip,
                                         cfg.ce_coef, cfg.temperature)
                self._apply(self.optimizer, self.policy.parameters(), loss)
                parts["actor_loss"] = float(loss.detach())
                parts["value_loss"] = self._critic_update(part) if self.critic else None
                logs.append(parts)
        return {key: (None if logs[0][key] is None else float(np.mean([x[key] for x in logs])))
                for key in logs[0]}

    def _critic_update(self, part: RolloutBatch) -> float:
        """One clipped value-loss step of the critic on a minibatch."""
        values = self.critic.values(part.prompt_ids, part.prompt_mask, part.response,
                                    part.response_mask)
        loss = value_loss(values, part.old_values, part.returns, part.response_mask,
                          self.config.value_clip)
        self._apply(self.critic_optimizer, self.critic.parameters(), loss)
        return float(loss.detach())

    def _apply(self, optimizer: Any, params: Any, loss: Any) -> None:
        """Backward, clip, step."""
        import torch

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(params), self.config.max_grad_norm)
        optimizer.step()

    def margin_update(self, episodes: list[Episode]) -> dict[str, Any]:
        """One ``topk_margin`` update on the gold continuations of ``episodes`` (teacher forced)."""
        import torch

        from verl_recipes.local.keyseq.rl_losses import full_kl, topk_margin_loss

        cfg, tok, dev = self.config, self.tokenizer, self.device
        tail = (tok.eos_token_id,) if self.judge_eos else ()
        prompt_ids, prompt_mask = (t.to(dev) for t in left_pad([e.prompt for e in episodes],
                                                                tok.pad_token_id))
        gold_ids, gold_mask = (t.to(dev) for t in right_pad(
            [(*e.gold_ids, *tail) for e in episodes], tok.pad_token_id))
        width = prompt_ids.size(1)
        ids, mask = torch.cat([prompt_ids, gold_ids], 1), torch.cat([prompt_mask, gold_mask], 1)

        def logits_of(model: Any) -> Any:
            return forward(model, ids, mask).logits[:, width - 1: width - 1 + gold_ids.size(1)].float()

        logits = logits_of(self.policy)
        with torch.no_grad():
            ref_logits = logits_of(self.reference)
        hinge, inside = topk_margin_loss(logits, gold_ids, gold_mask, self.k, cfg.margin)
        kl = full_kl(logits, ref_logits, gold_mask)
        logp = torch.log_softmax(logits, -1)
        ce = -masked_mean(logp.gather(-1, gold_ids.unsqueeze(-1)).squeeze(-1), gold_mask)
        loss = hinge + cfg.kl_coef * kl + cfg.ce_coef * ce
        self._apply(self.optimizer, self.policy.parameters(), loss)
        entropy = -(logp.exp() * logp).sum(-1)
        reward = float(2 * inside.detach() - 1)
        return {"reward_mean": reward, "policy_loss": float(hinge.detach()),
                "actor_loss": float(loss.detach()), "kl": float(kl.detach()),
                "ce": float(ce.detach()), "entropy": float(masked_mean(entropy.detach(), gold_mask)),
                "tokens": int(gold_mask.sum())}

    def step(self, step: int) -> dict[str, Any]:
        """Run RL step ``step`` (draw, rollout, update) and return its metrics."""
        started = time.perf_counter()
        generator = step_generator(self.config.seed, step)
        if self.config.algorithm == "topk_margin":
            row = self.margin_update(self.draw(generator))
            return {"step": step, **row, "seconds": time.perf_counter() - started}
        batch, stats = self.rollout(self.draw(generator), generator)
        losses = self.update(batch, generator)
        tokens = int(batch.response_mask.sum())
        return {"step": step, **stats, **losses, "tokens": tokens,
                "seconds": time.perf_counter() - started}

    def save(self, folder: Path, state: dict[str, Any]) -> None:
        """Write the whole training state to ``folder`` (replaced atomically)."""
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(self.policy, self.tokenizer, tmp)
        save_optimizer(self.optimizer, tmp, "optimizer")
        if self.critic is not None:
            self.critic.save(tmp / CRITIC_DIR, self.tokenizer)
            save_optimizer(self.critic_optimizer, tmp / CRITIC_DIR, "optimizer")
        write_json(tmp / STATE_FILE, state)
        plain_file_modes(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def restore(self, folder: Path) -> None:
        """Load the optimizer moments saved by :meth:`save` (models are loaded by the caller)."""
        load_optimizer(self.optimizer, folder, "optimizer")
        if self.critic is not None:
            load_optimizer(self.critic_optimizer, folder / CRITIC_DIR, "optimizer")


# --- the run ----------------------------------------------------------------------------------

def empty_row(step: int) -> dict[str, Any]:
    """A ``metrics.jsonl`` row with every key of :data:`METRIC_KEYS` (null) and the step."""
    return {**dict.fromkeys(METRIC_KEYS), "step": step}


def append_metrics(out_dir: Path, row: dict[str, Any]) -> None:
    """Append one row (only the keys of :data:`METRIC_KEYS`, in order) to ``metrics.jsonl``."""
    record = {key: row.get(key) for key in METRIC_KEYS}
    with (out_dir / METRICS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` holding a run unless ``overwrite`` (then its run files are removed)."""
    taken = [name for name in (METRICS_FILE, "last", "best", SUMMARY_FILE)
             if (out_dir / name).exists()]
    if taken and not overwrite:
        raise LogDataError(f"{out_dir} already holds a run ({', '.join(taken)}); pass --resume to "
                           "continue it or --overwrite to replace it")
    for name in taken:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _load_state(out_dir: Path) -> dict[str, Any]:
    """``last/trainer_state.json`` of a run to resume."""
    path = out_dir / "last" / STATE_FILE
    if not path.is_file():
        raise LogDataError(f"nothing to resume: {path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


def _truncate_metrics(out_dir: Path, step: int) -> None:
    """Drop ``metrics.jsonl`` rows after ``step`` (written after the last save of a stopped run)."""
    path = out_dir / METRICS_FILE
    if path.is_file():
        kept = [row for row in read_run_metrics(out_dir) if row["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))


def _check_context(episodes: list[Episode], model: Any) -> None:
    """Refuse episodes longer than the model's positions."""
    longest = max(len(e.prompt) + len(e.gold) for e in episodes)
    if longest > model.config.max_position_embeddings:
        raise LogDataError(f"episodes of {longest} tokens exceed the model's "
                           f"{model.config.max_position_embeddings} positions")


def train(data_dir: Path, model_dir: Path | None, out_dir: Path, config: RLConfig,
          resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a next-key model with RL; keep ``best/`` and ``last/`` in ``out_dir``.

    Args:
        data_dir: Output folder of ``python -m logdata sequences``.
        model_dir: The pretrained model (policy start and frozen reference); with ``resume`` it
            may be None (the recorded one is used) and must otherwise match the record.
        out_dir: Run folder (``metrics.jsonl``, ``best/``, ``last/``, ``rl_summary.json``).
        config: Settings; with ``resume`` only ``steps`` is read (the new target), the rest is
            the saved run's.
        resume: Continue the run saved in ``out_dir/last``.
        overwrite: Replace a run ``out_dir`` already holds.
        progress: Show a tqdm bar over the steps.

    Returns:
        The summary (also written to ``rl_summary.json``).

    Raises:
        LogDataError: On bad settings or inputs.
    """
    import torch
    from tqdm.auto import tqdm

    state = _load_state(out_dir) if resume else None
    if state is not None:
        recorded = Path(state["model"])
        if model_dir is not None and Path(model_dir).resolve() != recorded.resolve():
            raise LogDataError(f"--model {model_dir} is not the model the run started from "
                               f"({recorded})")
        model_dir, config = recorded, replace(RLConfig(**state["config"]), steps=config.steps)
    if model_dir is None:
        raise LogDataError("--model is required (unless --resume)")
    config = config.resolved()
    config.check()
    require_dir(data_dir, "--input")
    check_vocabulary(Path(model_dir), data_dir / "train.parquet")
    if state is None:
        _prepare_out(out_dir, overwrite)
    else:
        _truncate_metrics(out_dir, int(state["step"]))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    reference, tokenizer = load_model(Path(model_dir), device)
    policy, _ = load_model(out_dir / "last" if state else Path(model_dir), device)
    critic = (Critic.load(out_dir / "last" / CRITIC_DIR, device)
              if state and config.algorithm == "ppo" else None)
    episodes, origin = load_episodes(data_dir, tokenizer, config.prefix_ratio)
    _check_context(episodes, reference)
    _, k = resolve_k(config.k, read_meta(data_dir / "val.parquet").get("params", {}).get(
        "data_source"), n_real_keys(tokenizer))
    val = load_val_set(data_dir, tokenizer, config.val_max)
    trainer = KeyseqRL(policy, reference, tokenizer, episodes, config, critic, device, k=k,
                       judge_eos=val.judge_eos)
    if state:
        trainer.restore(out_dir / "last")
    logger.info("%s with %s rewards on %d episodes from %s; %d validation chunks, K=%d",
                config.algorithm, config.reward, len(episodes), origin, len(val.encoded), k)
    start = int(state["step"]) if state else 0
    best = state.get("best") if state else None
    tokens_total = int(state["tokens_total"]) if state else 0
    run_state = {"model": str(model_dir), "data": str(data_dir), "config": asdict(config),
                 "episodes": origin, "k": k}

    def evaluate(step: int, row: dict[str, Any]) -> None:
        nonlocal best
        scores = normal_key_recall(trainer.policy, val, k, tokenizer.pad_token_id, device)
        row.update(scores)
        row["best"] = better(scores, best)
        if row["best"]:
            best = {"step": step, **scores}
            save_model(trainer.policy, tokenizer, out_dir / "best")
            write_json(out_dir / "best" / BEST_FILE, best)
            plain_file_modes(out_dir / "best")
        trainer.save(out_dir / "last", {**run_state, "step": step, "best": best,
                                        "tokens_total": tokens_total})
        logger.info("step %d: normal-key recall@%d %.4f (auc %.4f), best step %d", step, k,
                    scores["val_recall"], scores["val_auc"], best["step"])

    started = time.perf_counter()
    if start == 0:
        row = empty_row(0)
        evaluate(0, row)
        append_metrics(out_dir, row)
    bar = tqdm(total=config.steps, initial=start, desc=f"keyseq {config.algorithm}", unit="step",
               disable=not progress)
    for step in range(start + 1, config.steps + 1):
        row = {**empty_row(step), **trainer.step(step)}
        tokens_total += row["tokens"]
        row["tokens_total"] = tokens_total
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            evaluate(step, row)
        append_metrics(out_dir, row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3f}")
    bar.close()
    seconds = time.perf_counter() - started
    done = max(0, config.steps - start)
    summary = {**run_state, "steps": config.steps, "steps_run": done, "best": best,
               "tokens_total": tokens_total, "seconds": seconds,
               "steps_per_s": done / seconds if done and seconds else None}
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def read_run_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(out_dir) / METRICS_FILE
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --- command line -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    d = RLConfig()
    parser = new_parser("python -m verl_recipes.local.keyseq.rl", __doc__.splitlines()[0])
    add_input_flag(parser, "`logdata sequences` output folder", aliases=("--data",))
    add_flag(parser, "--model", type=Path, default=None, metavar="PATH",
             help="pretrained next-key model folder (policy start, frozen reference); "
                  "required unless --resume")
    add_out_flag(parser, "run folder (metrics.jsonl, best/, last/)")
    add_flag(parser, "--algorithm", choices=ALGORITHMS, default=d.algorithm,
             help="ppo (LogNEO: critic, GAE, clipped objective, KL penalty), reinforce "
                  "(LogGPT: baseline-free) or topk_margin (teacher-forced top-K margin)")
    add_flag(parser, "--reward", choices=sorted(KEYSEQ_PRESETS), default=None,
             help="reward preset of reward/keyseq.py (default: logneo for ppo, loggpt for "
                  "reinforce)")
    add_flag(parser, "--steps", type=int, default=d.steps, metavar="N",
             help="total RL steps (with --resume: the step to continue to)")
    add_flag(parser, "--batch-size", type=int, default=d.batch_size, metavar="N",
             help="episodes per step")
    add_flag(parser, "--ppo-epochs", type=int, default=d.ppo_epochs, metavar="N",
             help="PPO passes over each batch")
    add_flag(parser, "--minibatch-size", type=int, default=d.minibatch_size, metavar="N",
             help="episodes per PPO update (default 0: the whole batch)")
    add_flag(parser, "--lr", type=float, default=d.lr, help="actor AdamW learning rate")
    add_flag(parser, "--critic-lr", type=float, default=d.critic_lr,
             help="critic AdamW learning rate")
    add_flag(parser, "--clip", type=float, default=d.clip, help="PPO ratio clip epsilon")
    add_flag(parser, "--value-clip", type=float, default=d.value_clip, help="value clip epsilon")
    add_flag(parser, "--kl-coef", type=float, default=d.kl_coef,
             help="beta of the per-token KL penalty to the pretrained model (ppo)")
    add_flag(parser, "--gamma", type=float, default=d.gamma, help="GAE discount")
    add_flag(parser, "--lam", type=float, default=d.lam, help="GAE lambda")
    add_flag(parser, "--ce-coef", type=float, default=None, metavar="MU",
             help="weight of the gold next-key cross-entropy added to the actor loss; 0 disables "
                  "(default: 0.1 for ppo, 0 for reinforce)")
    add_flag(parser, "--margin", type=float, default=d.margin,
             help="topk_margin: logit lead a gold key should hold over the K-th other key")
    add_flag(parser, "--temperature", type=float, default=d.temperature,
             help="sampling temperature")
    add_flag(parser, "--whiten", action=argparse.BooleanOptionalAction, default=d.whiten,
             help="whiten PPO advantages over the batch")
    add_flag(parser, "--max-grad-norm", type=float, default=d.max_grad_norm,
             help="gradient clipping norm (0: off)")
    add_flag(parser, "--eval-every", type=int, default=d.eval_every, metavar="N",
             help="evaluate (and save last/) every N steps; 0: only at the start and the end")
    add_flag(parser, "--k", type=int, default=None,
             help="top-K of the validation recall (default: LogGPT's K of the data source)")
    add_flag(parser, "--val-max", type=int, default=d.val_max, metavar="N",
             help="validation sequences scored (0: all)")
    add_flag(parser, "--prefix-ratio", type=float, default=d.prefix_ratio, metavar="R",
             help="prompt share when episodes are cut from train.parquet (no rl_train.parquet)")
    add_seed_flag(parser, "seed of every random draw")
    add_flag(parser, "--device", default=d.device, help="cpu, cuda or auto")
    add_flag(parser, "--threads", type=int, default=None, metavar="N",
             help="torch CPU threads (default: torch's)")
    add_flag(parser, "--resume", action="store_true",
             help="continue the run in --out/last with its saved settings, up to --steps")
    add_overwrite_flag(parser, "replace a run --out already holds")
    add_progress_flag(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> RLConfig:
    """The :class:`RLConfig` of parsed arguments."""
    names = {f.name for f in fields(RLConfig)}
    return RLConfig(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line error and exit status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _train_and_report(args))


def _train_and_report(args: argparse.Namespace) -> int:
    """Run :func:`train` and print one summary line."""
    summary = train(args.input, args.model, args.out, config_from_args(args), resume=args.resume,
                    overwrite=args.overwrite, progress=not args.no_progress)
    best = summary["best"]
    rate = summary["steps_per_s"]
    print(f"{summary['steps_run']} steps ({summary['seconds']:.1f} s"
          f"{f', {rate:.2f} steps/s' if rate else ''}); best normal-key recall@{best['val_k']} "
          f"{best['val_recall']:.4f} at step {best['step']}; models in {args.out}/best and "
          f"{args.out}/last")
    return 0


if __name__ == "__main__":
    sys.exit(main())
