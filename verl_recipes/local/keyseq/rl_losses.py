r"""The tensor maths of next-key RL: masked means, GAE, the PPO and REINFORCE losses.

Every function takes right-padded ``(batch, T)`` tensors over the generated keys with a ``mask``
(1 for a generated token, 0 for padding) and reduces by the **token mean** over the mask (each
generated key weighs the same, whatever its episode's length). No model code here, so each
formula is checked by hand on tiny tensors (``tests/test_keyseq_rl.py``).

* :func:`gae`: generalised advantage estimation, ``δ_t = r_t + γ·V_{t+1} − V_t`` (``V`` past the
  last token is 0), ``A_t = δ_t + γλ·A_{t+1}``, returns ``R_t = A_t + V_t``;
* :func:`ppo_policy_loss`: the clipped surrogate ``max(−A·ρ, −A·clip(ρ, 1 ± ε))`` with
  ``ρ = exp(log π − log π_old)``, and the share of tokens where the clipped branch is taken;
* :func:`value_loss`: ``½·max((V − R)², (clip(V, V_old ± ε_v) − R)²)``;
* :func:`reinforce_loss`: ``−r_t·log π(y_t)`` (no baseline: LogGPT's policy gradient);
* :func:`kl_penalty`: ``log π_old − log π_ref`` per sampled token (the k1 estimator), which PPO
  subtracts from the reward (``r_t − β·kl_t``);
* :func:`topk_margin_loss`: the teacher-forced objective of ``--algorithm topk_margin``: with
  ``g_t = z_t[y_t] − z_t^{(K)}`` (the true key's logit minus the K-th largest logit of the other
  entries; ``g_t ≥ 0`` exactly when the detector keeps ``y_t`` inside its top-K), the smooth hinge
  ``softplus(m − g_t)``, and the share of positions with ``g_t ≥ 0``;
* :func:`full_kl`: ``KL(π_ref ‖ π)`` over the whole next-key distribution at each gold position.
"""

from __future__ import annotations

from typing import Any


def masked_mean(values: Any, mask: Any) -> Any:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty).

    >>> import torch
    >>> masked_mean(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]])).item()
    2.0
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def whiten(values: Any, mask: Any, eps: float = 1e-8) -> Any:
    """Masked values shifted to mean 0 and scaled to standard deviation 1 (padding stays 0).

    >>> import torch
    >>> whiten(torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[1, 1, 0]])).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * (var + eps).rsqrt() * mask.to(values.dtype)


def gae(rewards: Any, values: Any, mask: Any, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Any, Any]:
    """Generalised advantage estimates and returns of right-padded episodes.

    Args:
        rewards: ``(B, T)`` reward of every generated token (shaping included).
        values: ``(B, T)`` critic value of the state before every generated token.
        mask: ``(B, T)`` 1 for generated tokens; an episode ends at its last 1.
        gamma: Discount ``γ``.
        lam: GAE ``λ``.

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and 0 on padding.

    >>> import torch
    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]),
    ...                torch.tensor([[1, 1]]), gamma=1.0, lam=1.0)
    >>> adv.tolist(), ret.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    import torch

    mask = mask.to(values.dtype)
    steps = rewards.size(1)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(steps)):
        alive_next = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive_next if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * alive_next
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logp: Any, old_logp: Any, advantages: Any, mask: Any,
                    clip: float = 0.2) -> tuple[Any, Any]:
    """PPO's clipped surrogate loss (token mean) and its clip fraction.

    Args:
        logp: ``(B, T)`` log-probabilities of the sampled tokens under the current policy.
        old_logp: The same under the policy that sampled them (no gradient).
        advantages: ``(B, T)`` advantages (no gradient).
        mask: ``(B, T)`` generated-token mask.
        clip: ``ε`` of ``clip(ρ, 1 − ε, 1 + ε)``.

    Returns:
        ``(loss, clip_fraction)``: the clip fraction is the share of tokens whose clipped term
        is the larger (the gradient through them is 0).

    >>> import torch
    >>> loss, frac = ppo_policy_loss(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1),
    ...                              torch.tensor([[2.0]]), torch.ones(1, 1), clip=0.2)
    >>> round(loss.item(), 4), frac.item()
    (-2.4, 1.0)
    """
    ratio = (logp - old_logp).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(unclipped.maximum(clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logp.dtype), mask)
    return loss, clip_fraction.detach()


def value_loss(values: Any, old_values: Any, returns: Any, mask: Any,
               clip: float = 0.2) -> Any:
    """Clipped value loss ``½·max((V − R)², (clip(V, V_old ± ε_v) − R)²)`` (token mean).

    >>> import torch
    >>> value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]),
    ...            torch.ones(1, 1), clip=0.5).item()
    1.125
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(((values - returns) ** 2).maximum((clipped - returns) ** 2), mask)


def reinforce_loss(logp: Any, rewards: Any, mask: Any) -> Any:
    """Baseline-free REINFORCE: ``−r_t·log π(y_t)``, token mean (LogGPT's policy gradient).

    A positive reward raises the log-probability of the sampled token, a negative one lowers it.

    >>> import torch
    >>> reinforce_loss(torch.tensor([[-1.0, -2.0]]), torch.tensor([[1.0, -1.0]]),
    ...                torch.ones(1, 2)).item()
    -0.5
    """
    return masked_mean(-rewards * logp, mask)


def kl_penalty(logp: Any, ref_logp: Any) -> Any:
    """Per-token KL estimate ``log π − log π_ref`` of sampled tokens (k1; its mean is the KL).

    >>> import torch
    >>> kl_penalty(torch.tensor([[-1.0]]), torch.tensor([[-1.5]])).tolist()
    [[0.5]]
    """
    return logp - ref_logp


def topk_margin_loss(logits: Any, targets: Any, mask: Any, k: int, margin: float = 1.0
                     ) -> tuple[Any, Any]:
    """Smooth hinge on the true key's lead over the K-th strongest other entry, token mean.

    ``rank < K`` (at most ``K − 1`` entries score strictly higher) holds exactly when the true
    logit is at least the K-th largest of the others, so ``g ≥ 0`` is the detector's own test.

    Returns:
        ``(loss, share of positions inside the top-K)``.

    >>> import torch
    >>> z = torch.tensor([[[3.0, 2.0, 0.0], [0.0, 1.0, 2.0]]])
    >>> loss, inside = topk_margin_loss(z, torch.tensor([[1, 0]]), torch.ones(1, 2), k=1)
    >>> round(loss.item(), 4), inside.item()  # gaps -1 (rank 1) and -2 (rank 2): both outside
    (2.5878, 0.0)
    >>> topk_margin_loss(z, torch.tensor([[1, 0]]), torch.ones(1, 2), k=2)[1].item()
    0.5
    """
    import torch

    true = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, targets.unsqueeze(-1), float("-inf"))
    kth = others.topk(k, dim=-1).values[..., -1]
    gap = true - kth
    loss = torch.nn.functional.softplus(margin - gap)
    return masked_mean(loss, mask), masked_mean((gap >= 0).to(logits.dtype), mask)


def full_kl(logits: Any, ref_logits: Any, mask: Any) -> Any:
    """``KL(π_ref ‖ π)`` of the full next-key distributions, token mean.

    >>> import torch
    >>> z = torch.tensor([[[1.0, 0.0]]])
    >>> full_kl(z, z, torch.ones(1, 1)).item()
    0.0
    """
    import torch

    logp, ref_logp = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    return masked_mean((ref_logp.exp() * (ref_logp - logp)).sum(-1), mask)
