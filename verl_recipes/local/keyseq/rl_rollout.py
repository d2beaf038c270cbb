"""Episodes, padded batches, sampling and token rewards of next-key RL (:mod:`.rl`).

* an :class:`Episode` is ``<bos>`` + prompt keys and the gold continuation;
  :func:`load_episodes` reads them from a ``logdata sequences`` folder;
* prompts are **left-padded** (:func:`left_pad`) and continuations right-padded, with positions
  that skip the padding (:func:`position_ids`), so one forward pass scores a whole batch and gives
  each episode the numbers it would get alone (tested);
* :func:`sample_responses` samples continuations with a KV cache from a seeded generator;
  :func:`token_logprobs` teacher-forces any continuation (sampled or gold);
* :func:`token_rewards` turns :mod:`reward.keyseq`'s per-position rewards into one reward per
  generated token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.errors import LogDataError
from logdata.io import read_parquet
from logdata.keyseq.sequences import rl_rows
from logdata.keyseq.vocab import KeyVocab
from logdata.staging import verify_file
from reward.keyseq import KeyseqReward, credits, position_rewards
from validation.keyseq_detect import read_meta
from verl_recipes.local.keyseq.model import keys_to_ids, pad_batch


@dataclass(frozen=True)
class Episode:
    """One RL episode.

    Attributes:
        prompt: ``<bos>`` and the prompt keys' token ids.
        gold: The gold continuation as vocabulary tokens.
        gold_ids: Its token ids.
    """

    prompt: tuple[int, ...]
    gold: tuple[str, ...]
    gold_ids: tuple[int, ...]


def episodes_from_rows(rows: pd.DataFrame, tokenizer: Any) -> list[Episode]:
    """Episodes of VeRL RL rows (``prompt`` = one user message of keys, ``ground_truth``).

    Rows without a continuation are skipped.
    """
    out = []
    for prompt, reward_model in zip(rows["prompt"], rows["reward_model"], strict=True):
        messages = list(prompt)
        keys = " ".join(str(m["content"]) for m in messages).split()
        gold = str(reward_model["ground_truth"]).split()
        if not gold:
            continue
        out.append(Episode(prompt=(tokenizer.bos_token_id, *keys_to_ids(tokenizer, keys)),
                           gold=tuple(gold), gold_ids=tuple(keys_to_ids(tokenizer, gold))))
    return out


def load_episodes(data_dir: Path, tokenizer: Any, prefix_ratio: float) -> tuple[list[Episode], str]:
    """The training episodes of a sequence folder, and the file they came from.

    ``rl_train.parquet`` when present; else ``train.parquet`` cut by
    :func:`logdata.keyseq.sequences.rl_rows` with ``prefix_ratio``. Inputs are checked against
    the folder's ``meta.json``.

    Raises:
        LogDataError: When neither file exists or no episode has a continuation.
    """
    rl_path, train_path = data_dir / "rl_train.parquet", data_dir / "train.parquet"
    if rl_path.is_file():
        verify_file(rl_path)
        rows, origin = read_parquet(rl_path), rl_path.name
    elif train_path.is_file():
        verify_file(train_path)
        meta = read_meta(train_path)
        source = str(meta.get("params", {}).get("data_source") or "unknown")
        vocab = KeyVocab.load(data_dir / "vocab.json")
        rows = rl_rows(read_parquet(train_path), "train", vocab, source, prefix_ratio)
        origin = f"{train_path.name} (prefix ratio {prefix_ratio})"
    else:
        raise LogDataError(f"{data_dir} holds neither rl_train.parquet nor train.parquet; run "
                           "`python -m logdata sequences` first")
    episodes = episodes_from_rows(rows, tokenizer)
    if not episodes:
        raise LogDataError(f"{data_dir}/{origin} holds no episode with a continuation")
    return episodes, origin


# --- batches of token ids ---------------------------------------------------------------------

def left_pad(prompts: list[tuple[int, ...]] | list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Left-pad prompts into ``(ids, mask)`` so that every prompt ends at the last column.

    >>> ids, mask = left_pad([[1, 5, 6], [1, 7]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[1, 5, 6], [0, 1, 7]], [[1, 1, 1], [0, 1, 1]])
    """
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def right_pad(rows: list[tuple[int, ...]] | list[list[int]], pad_id: int,
              width: int | None = None) -> tuple[Any, Any]:
    """Right-pad id lists into ``(ids, mask)`` of at least ``width`` columns."""
    ids, mask = pad_batch([list(r) for r in rows], pad_id)
    if width is not None and ids.size(1) < width:
        import torch

        extra = width - ids.size(1)
        ids = torch.cat([ids, ids.new_full((ids.size(0), extra), pad_id)], 1)
        mask = torch.cat([mask, mask.new_zeros((mask.size(0), extra))], 1)
    return ids, mask


def position_ids(mask: Any) -> Any:
    """Positions that skip left padding: 0 at each row's first real token.

    >>> import torch
    >>> position_ids(torch.tensor([[0, 1, 1, 1]])).tolist()
    [[0, 0, 1, 2]]
    """
    return (mask.cumsum(-1) - 1).clamp_min(0)


def forward(model: Any, ids: Any, mask: Any, hidden: bool = False) -> Any:
    """One forward pass over left/right padded ids with padding-aware positions."""
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                 output_hidden_states=hidden)


def token_logprobs(model: Any, prompt_ids: Any, prompt_mask: Any, targets: Any, target_mask: Any,
                   temperature: float = 1.0) -> tuple[Any, Any]:
    """Log-probabilities (and entropies) of ``targets`` following left-padded prompts.

    Args:
        model: Causal LM.
        prompt_ids: ``(B, P)`` left-padded prompts.
        prompt_mask: Their mask.
        targets: ``(B, T)`` right-padded continuation ids (generated or gold).
        target_mask: Their mask.
        temperature: Logits are divided by it.

    Returns:
        ``(logp, entropy)``, both ``(B, T)`` (values on padding are meaningless; mask them).
    """
    import torch

    width = prompt_ids.size(1)
    ids = torch.cat([prompt_ids, targets], 1)
    mask = torch.cat([prompt_mask, target_mask], 1)
    logits = forward(model, ids, mask).logits[:, width - 1: width - 1 + targets.size(1)].float()
    logp_all = torch.log_softmax(logits / temperature, -1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def sample_responses(model: Any, prompt_ids: Any, prompt_mask: Any, limits: list[int],
                     eos_id: int, pad_id: int, generator: Any,
                     temperature: float = 1.0) -> tuple[Any, Any, Any]:
    """Sample continuations with a KV cache: row ``i`` stops after ``limits[i]`` keys or ``<eos>``.

    Args:
        model: Causal LM (eval mode).
        prompt_ids: ``(B, P)`` left-padded prompts.
        prompt_mask: Their mask.
        limits: Largest continuation length per row (the gold length).
        eos_id: Token that ends a continuation (it is part of the response).
        pad_id: Filler after a row's end.
        generator: CPU ``torch.Generator`` of the draws.
        temperature: Sampling temperature.

    Returns:
        ``(response, response_mask, logp)``: ``(B, R)`` ids, mask and the sampling
        log-probabilities (``R = max(limits)``).
    """
    import torch

    batch, steps = prompt_ids.size(0), max(limits)
    response = torch.full((batch, steps), pad_id, dtype=torch.long)
    response_mask = torch.zeros((batch, steps), dtype=torch.long)
    sampled_logp = torch.zeros((batch, steps))
    limit = torch.tensor(limits)
    alive = torch.ones(batch, dtype=torch.bool)
    mask = prompt_mask
    pos = position_ids(prompt_mask)
    device = prompt_ids.device
    with torch.no_grad():
        out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=pos, use_cache=True)
        next_pos = pos[:, -1:] + 1
        for t in range(steps):
            alive &= t < limit
            if not alive.any():
                break
            logp_all = torch.log_softmax(out.logits[:, -1].float().cpu() / temperature, -1)
            token = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)
            token = torch.where(alive, token, torch.full_like(token, pad_id))
            response[:, t], response_mask[:, t] = token, alive.long()
            sampled_logp[:, t] = logp_all.gather(-1, token.unsqueeze(-1)).squeeze(-1) * alive
            alive &= token != eos_id
            if t + 1 == steps or not alive.any():
                break
            mask = torch.cat([mask, mask.new_ones((batch, 1))], 1)
            out = model(input_ids=token.unsqueeze(1).to(device), attention_mask=mask,
                        position_ids=next_pos, past_key_values=out.past_key_values, use_cache=True)
            next_pos = next_pos + 1
    return response, response_mask, sampled_logp


# --- rewards ----------------------------------------------------------------------------------

def token_rewards(generated: list[str], gold: tuple[str, ...] | list[str], ended_by_eos: bool,
                  spec: KeyseqReward, broadcast: bool = False) -> np.ndarray:
    """The reward of every generated token (the keys, then ``<eos>`` when it ended the response).

    Per-position presets: key ``t`` earns the position reward ``r_t``; an ``<eos>`` earns the sum
    of the rewards of the positions it left unfilled. ``sequence``: the sequence reward on the last
    token (or on every token with ``broadcast``, as REINFORCE needs it).

    >>> from reward.keyseq import KEYSEQ_PRESETS
    >>> token_rewards(["E1", "E3"], ["E1", "E2", "E3"], True, KEYSEQ_PRESETS["loggpt"]).tolist()
    [1.0, -1.0, -1.0]
    """
    n_tokens = len(generated) + int(ended_by_eos)
    rewards = position_rewards(generated, list(gold), spec)
    if spec.kind == "sequence":
        value = float(rewards.mean()) if len(rewards) else 0.0
        if broadcast:
            return np.full(n_tokens, value)
        out = np.zeros(n_tokens)
        out[-1] = value
        return out
    out = np.asarray(rewards[: len(generated)], dtype=np.float64)
    if ended_by_eos:
        out = np.append(out, rewards[len(generated):].sum())
    return out


def reward_components(generated: list[str], gold: tuple[str, ...], spec: KeyseqReward) -> dict:
    """Shares of exact, partial-credit and missed positions, and the mean position reward."""
    c = credits(generated, list(gold), spec.window, spec.tau)
    rewards = position_rewards(generated, list(gold), spec)
    n = max(1, len(c))
    return {"reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
            "reward_exact": float((c == 1.0).sum() / n),
            "reward_partial": float(((c > 0) & (c < 1)).sum() / n),
            "reward_miss": float((c == 0).sum() / n)}
