"""ISL-seed mask + distance loss (paper 002): ``MSE(d̂, d) + α·L_mask(z, g)`` with the
balancing weight ``α = MSE₀ / BCE₀`` fixed on the first batch; ``L_mask`` is any loss of
:mod:`fewlabel.segmentation.losses` (weighted BCE by default).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from fewlabel.errors import ConfigError
from fewlabel.segmentation.losses import LOSS_NAMES, _mean, _valid, build_loss

log = logging.getLogger(__name__)


def balance_alpha(mse0: float | torch.Tensor, bce0: float | torch.Tensor) -> float:
    """ISL seed balancing weight ``α = MSE₀ / BCE₀`` so that ``α·BCE₀ = MSE₀`` on the first batch.

    Falls back to 1.0 (with a warning) when either value is not finite or not positive.
    """
    m = float(mse0.detach() if isinstance(mse0, torch.Tensor) else mse0)
    b = float(bce0.detach() if isinstance(bce0, torch.Tensor) else bce0)
    if not (math.isfinite(m) and math.isfinite(b)) or m <= 0 or b <= 0:
        log.warning(
            "cannot balance mask/distance losses from MSE0=%g, BCE0=%g; using alpha=1", m, b
        )
        return 1.0
    return m / b


class MaskDistanceLoss(nn.Module):
    """ISL-seed mask + distance loss ``MSE(d̂, d) + α·L_mask(z, g)``.

    ``pred`` is ``(B, 2, ...)``: channel 0 the mask logit ``z``, channel 1 the predicted distance
    ``d̂`` (linear output). ``target`` is ``(B, 2, ...)``: channel 0 the mask ``g`` ∈ {0, 1},
    channel 1 the distance map ``d``. ``L_mask`` is weighted BCE by default (``mask_loss`` may
    name another single/combined loss). With ``alpha=None`` the weight is fixed on the first
    call as :func:`balance_alpha` of the detached first-batch values and kept in the buffer
    ``alpha`` (saved in ``state_dict``, so a resumed run keeps it).
    """

    def __init__(
        self,
        *,
        alpha: float | None = None,
        mask_loss: str = "bce",
        mask_params: dict[str, Any] | None = None,
        w_cell: float | None = None,
    ) -> None:
        super().__init__()
        if mask_loss == "mask_distance":
            raise ConfigError(
                "mask_loss cannot be 'mask_distance'.", fix=f"use one of {list(LOSS_NAMES[:-1])}."
            )
        params = dict(mask_params or {})
        if w_cell is not None:
            params.setdefault("w_cell", w_cell)
        self.mask_loss = build_loss(mask_loss, **params)
        value = float("nan") if alpha is None else float(alpha)
        self.register_buffer("alpha", torch.tensor(value, dtype=torch.float32))

    @property
    def alpha_is_set(self) -> bool:
        return bool(torch.isfinite(self.alpha))

    def components(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(MSE(d̂, d), L_mask(z, g))`` before weighting."""
        if pred.dim() < 2 or pred.shape[1] != 2 or target.shape != pred.shape:
            raise ValueError(
                f"mask_distance needs pred and target of shape (B, 2, ...); got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        pred = pred.float()
        target = target.detach().float()
        v = _valid(valid, pred[:, 1])
        mse = _mean((pred[:, 1] - target[:, 1]) ** 2, v)
        mask = self.mask_loss(pred[:, :1], target[:, 0], valid=valid)
        return mse, mask

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        mse, mask = self.components(pred, target, valid)
        if not self.alpha_is_set:
            alpha = balance_alpha(mse, mask)
            self.alpha.fill_(alpha)
            log.info(
                "mask_distance: alpha fixed to %.6g (MSE0=%.6g, mask loss0=%.6g)",
                alpha,
                float(mse.detach()),
                float(mask.detach()),
            )
        return mse + self.alpha.to(mse.dtype) * mask
