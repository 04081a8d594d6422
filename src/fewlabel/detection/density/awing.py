"""Density-regression losses: weighted adaptive wing loss (seed eqs. 1 and 3) and weighted MSE.

Adaptive wing loss (Wang et al., ICCV 2019; seed eq. 1), with ``d = |y − ŷ|`` and ``a = α − y``::

    AWing(y, ŷ) = ω · ln(1 + (d/ε)^a)            if d < θ
                = A · d − C                      otherwise
    A = ω · (1 / (1 + (θ/ε)^a)) · a · (θ/ε)^(a−1) · (1/ε)
    C = θ·A − ω · ln(1 + (θ/ε)^a)

``A`` and ``C`` make the two branches meet with equal value and slope at ``d = θ``.
The training loss (seed eq. 3) is the mean over voxels of ``W ⊙ AWing`` with the weight map
``W`` of :func:`fewlabel.detection.density.targets.weight_map`. The target is treated as a
constant (no gradient).

Partial annotation (:mod:`fewlabel.detection.density.partial`): weight-map voxels ``W < 0`` are
*unlabelled* (weight ``u = |W|``), never certain background. They enter the non-negative PU
risk (Kiryo et al., NeurIPS 2017, eq. 5; as in the PU particle picking of Bepler et al. 2019)::

    R_U = u · |U|/N · max(0, mean_U ℓ(0, ŷ) − π · mean_P ℓ(0, ŷ))

with ``ℓ`` the element-wise loss, ``P`` the known positive voxels (target ≥ T, ``W > 0``) and
``π`` the class prior ``detection.targets.unlabelled_prior``: the unlabelled voxels are
pushed towards 0 only by what exceeds the share π expected to be particles. Known voxels
(``W > 0``) give seed eq. 3 as before; ``W = 0`` is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from fewlabel.config import AWingConfig
from fewlabel.errors import ConfigError

_TINY = 1e-12


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Element-wise adaptive wing loss (seed eq. 1), computed in float32.

    The base ``d/ε`` is clamped at 1e-12 before the power so that the gradient stays finite
    even when ``α − y − 1 < 0`` (targets above ``α − 1``) and ``d → 0``.
    """
    pred = pred.float()
    target = target.detach().float()
    diff = (target - pred).abs()
    power = alpha - target
    ratio = theta / epsilon
    a_coef = (
        omega
        * (1.0 / (1.0 + torch.pow(ratio, power)))
        * power
        * torch.pow(ratio, power - 1.0)
        * (1.0 / epsilon)
    )
    c_coef = theta * a_coef - omega * torch.log1p(torch.pow(ratio, power))
    small = omega * torch.log1p(torch.pow((diff / epsilon).clamp_min(_TINY), power))
    large = a_coef * diff - c_coef
    return torch.where(diff < theta, small, large)


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Seed eq. 3: ``mean(W ⊙ loss)`` (plain mean when ``weight`` is None)."""
    if weight is None:
        return loss.mean()
    return (weight.detach().float() * loss).mean()


def weighted_adaptive_wing_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Weighted adaptive wing loss: ``mean(W ⊙ AWing(y, ŷ))`` (seed eqs. 1 and 3)."""
    return weighted_mean(
        adaptive_wing(pred, target, alpha=alpha, omega=omega, epsilon=epsilon, theta=theta), weight
    )


def weighted_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean squared error ``mean(W ⊙ (y − ŷ)²)`` (alternative to AWing)."""
    return weighted_mean((target.detach().float() - pred.float()) ** 2, weight)


class DensityLoss(nn.Module):
    """``loss(pred, target, weight)`` for density regression: 'awing' (eqs. 1, 3) or 'mse',
    plus the non-negative PU risk on unlabelled voxels (``weight < 0``; module docstring)."""

    def __init__(
        self,
        kind: str = "awing",
        awing: AWingConfig | None = None,
        *,
        prior: float = 0.0,
        positive_threshold: float = 0.2,
    ) -> None:
        super().__init__()
        if kind not in ("awing", "mse"):
            raise ConfigError(f"loss must be 'awing' or 'mse'; got {kind!r}.")
        self.kind = kind
        self.awing = awing or AWingConfig()
        self.prior = float(prior)
        self.positive_threshold = float(positive_threshold)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return (target.detach().float() - pred.float()) ** 2
        p = self.awing
        return adaptive_wing(
            pred, target, alpha=p.alpha, omega=p.omega, epsilon=p.epsilon, theta=p.theta
        )

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if weight is None:
            return self.elementwise(pred, target).mean()
        weight = weight.detach().float()
        known = weighted_mean(self.elementwise(pred, target), weight.clamp_min(0))
        unlabelled = weight < 0
        n_u = int(unlabelled.sum())
        if n_u == 0:
            return known
        as_negative = self.elementwise(pred, torch.zeros_like(target))
        risk_u = as_negative[unlabelled].mean()
        positive = (weight > 0) & (target.detach() >= self.positive_threshold)
        if self.prior > 0 and bool(positive.any()):
            risk_u = risk_u - self.prior * as_negative[positive].mean()
        u = (-weight[unlabelled]).mean()
        share = n_u / float(weight.numel())
        return known + u * share * torch.clamp(risk_u, min=0.0)
