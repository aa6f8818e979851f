"""Generalized Advantage Estimation and masked whitening: pure functions of tensors.

GAE (Schulman et al., 2016) over a sequence of steps -- for the dialogue policy, the agent's tokens
across an episode's turns. ``dones[t] = 1`` means the episode *terminated* at step ``t``: nothing
is bootstrapped past it. A truncated episode is not done: its ``last_value`` (or the caller adding
``gamma * V(s_final)`` to the truncated step's reward, when episodes are concatenated) bootstraps it.

>>> advantages, returns = compute_gae(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5]),
...                                   torch.tensor([0.0, 1.0]), torch.tensor(0.0), gamma=1.0, lam=1.0)
>>> advantages.tolist(), returns.tolist()
([0.5, 0.5], [1.0, 1.0])
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor | float,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE along the last dimension.

    ``delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``, where ``V_T = last_value``.

    Args:
        rewards: ``(..., T)`` reward received after step ``t`` (e.g. per-token KL penalty plus
            stage rewards on the tokens they score).
        values: ``(..., T)`` value estimates ``V(s_t)``.
        dones: ``(..., T)`` 1 where the episode terminated at step ``t`` (bool or float).
        last_value: ``(...)`` or a float: ``V`` of the state after the last step.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].

    Returns:
        ``advantages`` and ``returns = advantages + values``, both ``(..., T)`` in float32 or the
        input's floating dtype.

    Raises:
        ValueError: on mismatched shapes or gamma / lam outside [0, 1].
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and dones {tuple(dones.shape)} "
            "must have the same shape (..., T)"
        )
    if rewards.ndim == 0 or rewards.shape[-1] == 0:
        raise ValueError("compute_gae needs at least one step along the last dimension")
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name}={value}: expected a number in [0, 1]")
    dtype = values.dtype if values.is_floating_point() else torch.float32
    rewards, values = rewards.to(dtype), values.to(dtype)
    not_done = 1.0 - dones.to(dtype)  # (..., T)
    next_value = torch.as_tensor(last_value, dtype=dtype, device=values.device).expand(values.shape[:-1])  # (...)
    advantages = torch.zeros_like(values)  # (..., T)
    last_gae = torch.zeros_like(next_value)  # (...)
    for t in reversed(range(values.shape[-1])):
        delta = rewards[..., t] + gamma * next_value * not_done[..., t] - values[..., t]
        last_gae = delta + gamma * lam * not_done[..., t] * last_gae
        advantages[..., t] = last_gae
        next_value = values[..., t]
    return advantages, advantages + values


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (all entries without a mask)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8):
    """Normalise ``x`` to unit variance (and zero mean) over the entries where ``mask`` is 1.

    Masked-out entries are returned as 0, so padding never leaks into a loss. Variance is the
    unbiased estimate over the selected entries (as in TRL's ``masked_whiten``).

    >>> whiten(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).tolist()
    [-0.7071067690849304, 0.7071067690849304, 0.0]
    """
    mask_f = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    count = mask_f.sum()
    if count < 1:
        return torch.zeros_like(x)
    mean = (x * mask_f).sum() / count
    variance = (((x - mean) * mask_f) ** 2).sum() / (count - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        out = out + mean
    return out * mask_f
