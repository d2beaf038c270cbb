r"""Rewards for next-key models: per-position credit for a generated key continuation.

An episode's prompt is the first keys of a normal sequence; the policy generates the rest, and the
gold continuation ``g_0 … g_{T-1}`` comes with the row. Each generated position ``t`` (``y_t``)
earns a credit ``c_t ∈ [0, 1]``:

* ``1`` when ``y_t = g_t``;
* else ``exp(-|o| / τ)`` for the nearest offset ``o`` (``0 < |o| ≤ δ``) with ``g_{t+o} = y_t``:
  the right key a little early or late (LogNEO's partial credit);
* else ``0``, and always ``0`` for a token that is no key (``<unk>`` or another special token).

Positions run over ``T = max(len(y), len(g))``: a generation that ends early misses the positions
it did not fill, one that runs long misses the positions past the gold end. With ``w_t =
exp(-λ·t/T)`` (1 at the first position, ``e^{-λ}`` near the last), the ``logneo`` reward is

    r_t = a·c_t·w_t − b·(1 − c_t)·(1 − w_t)

so an early position (little context) earns most when right and costs least when wrong, and a late
position (rich context) earns less when right and costs more when wrong. Our reading of LogNEO
(the exact formula is not public); every constant is configurable. Range: ``r_t ∈ [−b·(1 −
e^{−λ}), a]``.

Presets (:data:`KEYSEQ_PRESETS`):

* ``logneo``: the above, ``a = b = 1``, ``λ = 1``, ``δ = 2``, ``τ = 1``;
* ``loggpt``: ``+1`` for an exact match, ``−1`` otherwise, at every position (LogGPT's ±1);
* ``sequence``: the ``logneo`` rewards averaged into one scalar per sequence (for GRPO and other
  outcome-reward estimators), range ``[−b·(1 − e^{−λ}), a]``.

Malformed generations never raise: they are sequences of misses.

>>> r = position_rewards(["E1", "E3", "E2"], ["E1", "E2", "E3"], "logneo")
>>> r.round(4).tolist()
[1.0, 0.0844, -0.1187]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


def is_key(token: str) -> bool:
    """Whether a generated token can be a key: not empty, not a special token (``<unk>``, ``<eos>``).

    >>> is_key("E12"), is_key("<unk>"), is_key("")
    (True, False, False)
    """
    return bool(token) and not (token.startswith("<") and token.endswith(">"))


@dataclass(frozen=True)
class KeyseqReward:
    """Constants of a per-position reward.

    Attributes:
        kind: ``position`` (``logneo`` formula), ``exact`` (``±1``) or ``sequence`` (mean of the
            ``logneo`` rewards, one scalar).
        a: Reward scale of a hit.
        b: Penalty scale of a miss.
        decay: ``λ``, how fast the hit weight decays (and the miss weight grows) with ``t / T``.
        window: ``δ``, largest offset that earns partial credit (0: exact matches only).
        tau: ``τ``, decay of the partial credit with the offset.
    """

    kind: str = "position"
    a: float = 1.0
    b: float = 1.0
    decay: float = 1.0
    window: int = 2
    tau: float = 1.0

    def bounds(self) -> tuple[float, float]:
        """``(lowest, highest)`` reward of one position (or one sequence).

        >>> KEYSEQ_PRESETS["loggpt"].bounds(), KEYSEQ_PRESETS["logneo"].bounds()[0]
        ((-1.0, 1.0), -0.6321205588285577)
        """
        if self.kind == "exact":
            return -1.0, 1.0
        return -self.b * (1.0 - math.exp(-self.decay)), self.a


#: name → reward constants (one table; override fields with :func:`reward_spec`).
KEYSEQ_PRESETS: dict[str, KeyseqReward] = {
    "logneo": KeyseqReward(),
    "loggpt": KeyseqReward(kind="exact", window=0),
    "sequence": KeyseqReward(kind="sequence"),
}


def reward_spec(preset: str = "logneo", **overrides: float) -> KeyseqReward:
    """The constants of ``preset`` with ``overrides`` (``a``, ``b``, ``decay``, ``window``, ``tau``).

    Raises:
        ValueError: For an unknown preset or field, or a constant out of range.
    """
    if preset not in KEYSEQ_PRESETS:
        raise ValueError(f"unknown keyseq reward preset {preset!r}; choose {sorted(KEYSEQ_PRESETS)}")
    spec = replace(KEYSEQ_PRESETS[preset], **overrides)
    if spec.a < 0 or spec.b < 0 or spec.decay < 0 or spec.window < 0 or spec.tau <= 0:
        raise ValueError(f"keyseq reward constants must be a, b, decay, window >= 0 and tau > 0: "
                         f"{spec}")
    return spec


def split_keys(text: str | Sequence[str]) -> list[str]:
    """A generation or gold continuation as a list of tokens (white-space separated text).

    >>> split_keys(" E1  E2   E3 "), split_keys(["E1"])
    (['E1', 'E2', 'E3'], ['E1'])
    """
    return text.split() if isinstance(text, str) else [str(t) for t in text]


def credits(generated: Sequence[str], gold: Sequence[str], window: int = 2,
            tau: float = 1.0) -> np.ndarray:
    """Credit ``c_t`` of every position ``t < max(len(generated), len(gold))``.

    >>> credits(["E2", "E1", "<unk>"], ["E1", "E2", "E3"]).round(4).tolist()
    [0.3679, 0.3679, 0.0]
    >>> credits(["E1"], ["E1", "E2"]).tolist()  # ended early: the unfilled position misses
    [1.0, 0.0]
    """
    n = max(len(generated), len(gold))
    out = np.zeros(n)
    for t, key in enumerate(generated[: len(gold)]):  # past the gold end: misses
        if not is_key(key):
            continue
        if t < len(gold) and gold[t] == key:
            out[t] = 1.0
            continue
        for offset in range(1, window + 1):
            if any(0 <= t + o < len(gold) and gold[t + o] == key for o in (-offset, offset)):
                out[t] = math.exp(-offset / tau)
                break
    return out


def position_weights(n: int, decay: float) -> np.ndarray:
    """``w_t = exp(-λ·t/T)`` for ``t = 0 … T-1``.

    >>> position_weights(2, math.log(2)).tolist()
    [1.0, 0.7071067811865476]
    """
    if n == 0:
        return np.zeros(0)
    return np.exp(-decay * np.arange(n) / n)


def position_rewards(generated: str | Sequence[str], gold: str | Sequence[str],
                     spec: KeyseqReward | str = "logneo") -> np.ndarray:
    """Reward of every position (``sequence``: the per-position ``logneo`` rewards).

    Args:
        generated: The policy's continuation (tokens or white-space separated text).
        gold: The true continuation.
        spec: A preset name or :class:`KeyseqReward`.

    Returns:
        float64 array of length ``max(len(generated), len(gold))``.
    """
    spec = KEYSEQ_PRESETS[spec] if isinstance(spec, str) else spec
    gen, ref = split_keys(generated), split_keys(gold)
    if spec.kind == "exact":
        hits = credits(gen, ref, window=0)
        return np.where(hits == 1.0, 1.0, -1.0)
    c = credits(gen, ref, spec.window, spec.tau)
    w = position_weights(len(c), spec.decay)
    return spec.a * c * w - spec.b * (1.0 - c) * (1.0 - w)


def sequence_reward(generated: str | Sequence[str], gold: str | Sequence[str],
                    spec: KeyseqReward | str = "sequence") -> float:
    """One scalar per sequence: the mean of its position rewards (0 for an empty pair).

    >>> sequence_reward("E1 E2", "E1 E2")
    0.8032653298563167
    """
    rewards = position_rewards(generated, gold, spec)
    return float(rewards.mean()) if len(rewards) else 0.0
