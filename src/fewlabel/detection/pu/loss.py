"""Losses of positive-unlabelled picking (Vedrenne et al. eq. 1; Bepler et al. 2019, Topaz).

* :func:`ge_binomial_loss`: binary cross-entropy on the labelled positives plus the slack λ
  times the cross-entropy between ``q(k)``, the Gaussian approximation of the classifier's
  distribution of the positive count among the ``N`` unlabelled windows of the batch, and
  ``Binomial(k; N, π)``::

      p̂_i = σ(s_i),  μ = Σ p̂_i,  σ² = Σ p̂_i (1 − p̂_i),
      q(k) ∝ exp(−(μ − k)² / 2σ²)  (k = 0..N, normalised by a softmax),
      L = mean_P BCE(s, 1) − λ Σ_k q(k) log Binom(k; N, π)

  ``log Binom`` is computed with ``torch.lgamma`` (stable for any N).
* :func:`pn_loss`: plain BCE, unlabelled windows as negatives (the supervised baseline).
* :class:`MultiTaskLoss`: ``Σ_i exp(−s_i) L_i + s_i`` with trainable ``s_i`` (Kendall et al.
  2018), for classification + reconstruction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def log_binomial(n: int, pi: float, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """``log Binom(k; n, π)`` for ``k = 0..n`` (float64 → float32), via ``lgamma``."""
    if not 0.0 < pi < 1.0:
        raise ValueError(f"pi must lie in (0, 1), got {pi}")
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    nn_ = torch.tensor(float(n), dtype=torch.float64, device=device)
    log_choose = torch.lgamma(nn_ + 1) - torch.lgamma(k + 1) - torch.lgamma(nn_ - k + 1)
    return (log_choose + k * math.log(pi) + (nn_ - k) * math.log1p(-pi)).float()


def ge_penalty(logits_unlabelled: torch.Tensor, pi: float, eps: float = 1e-7) -> torch.Tensor:
    """``−Σ_k q(k) log Binom(k; N, π)`` over the unlabelled windows' logits (eq. 1, 2nd term)."""
    scores = logits_unlabelled.reshape(-1).float()
    n = int(scores.numel())
    if n == 0:
        return scores.sum() * 0.0
    p = torch.sigmoid(scores)
    mu = p.sum()
    var = (p * (1.0 - p)).sum()
    k = torch.arange(n + 1, dtype=torch.float32, device=scores.device)
    q = torch.softmax(-0.5 * (mu - k) ** 2 / (var + eps), dim=0)
    return -(q * log_binomial(n, pi, device=scores.device)).sum()


def ge_binomial_loss(
    logits_positive: torch.Tensor,
    logits_unlabelled: torch.Tensor,
    *,
    pi: float,
    slack: float = 1.0,
) -> torch.Tensor:
    """GE-binomial PU loss (paper eq. 1): mean BCE on positives + ``slack`` · GE penalty."""
    pos = logits_positive.reshape(-1).float()
    bce = (
        F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        if pos.numel()
        else pos.sum() * 0.0
    )
    return bce + float(slack) * ge_penalty(logits_unlabelled, pi)


def pn_loss(logits_positive: torch.Tensor, logits_unlabelled: torch.Tensor) -> torch.Tensor:
    """Positive-negative baseline: mean BCE with the unlabelled windows as negatives."""
    logits = torch.cat([logits_positive.reshape(-1), logits_unlabelled.reshape(-1)]).float()
    target = torch.cat(
        [torch.ones(logits_positive.numel()), torch.zeros(logits_unlabelled.numel())]
    ).to(logits.device)
    return F.binary_cross_entropy_with_logits(logits, target)


class MultiTaskLoss(nn.Module):
    """Learned task weighting ``Σ_i exp(−s_i) L_i + s_i`` (Kendall, Gal & Cipolla 2018); the
    log-variances ``s_i`` are parameters the optimiser trains with the network."""

    def __init__(self, n_tasks: int = 2) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(int(n_tasks)))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        if len(losses) != self.log_vars.numel():
            raise ValueError(f"expected {self.log_vars.numel()} losses, got {len(losses)}")
        total = losses[0].new_zeros(())
        for s, loss in zip(self.log_vars, losses, strict=True):
            total = total + torch.exp(-s) * loss + s
        return total

    def weights(self) -> list[float]:
        """The current task weights ``exp(−s_i)``."""
        return [float(w) for w in torch.exp(-self.log_vars.detach())]


__all__ = ["MultiTaskLoss", "ge_binomial_loss", "ge_penalty", "log_binomial", "pn_loss"]
