"""Segmentation losses for few-image instance segmentation (mask + distance) — all take LOGITS.

Conventions
-----------
* The functions take the foreground logit ``z`` and the target ``g`` with identical shapes
  (element-wise); the modules from :func:`build_loss` take channel-first network outputs.
* ``pred`` holds raw network outputs (logits), never probabilities: every probability is formed
  inside the loss with ``sigmoid`` and every log-probability with the stable
  ``binary_cross_entropy_with_logits`` / ``logsigmoid``, so large logits never give NaN/Inf.
* Shapes: ``pred`` is ``(B, 1, ...)`` (one foreground logit ``z``) or ``(B, 2, ...)`` (two-class
  logits; then ``z = pred[:, 1] − pred[:, 0]``, because ``softmax(pred)[:, 1] = σ(z)``).
  ``target`` is the binary (or soft, in [0, 1]) foreground mask ``g`` of shape ``(B, ...)``,
  ``(B, 1, ...)`` or one-hot ``(B, 2, ...)``. ``p = σ(z)``.
* ``valid`` (optional, broadcastable to ``(B, ...)``) is a per-voxel 0/1 (or weight) mask; voxels
  with weight 0 do not contribute (unlabelled regions). Sums and means run over all voxels of the
  whole batch ("global" reduction, stable for small or empty patches).

Formulas (sums over voxels)
---------------------------
* weighted BCE:   ``L = −mean(w_cell·g·log p + (1−g)·log(1−p))``  (``w_cell`` on the foreground).
* soft Dice:      ``L = 1 − (2·Σpg + ε) / (Σp + Σg + ε)``.
* Focal (Lin et al. 2017): ``L = mean(−α_t (1−p_t)^γ log p_t)``, ``p_t = p`` where ``g=1`` and
  ``1−p`` where ``g=0``; ``α_t = α·g + (1−α)(1−g)`` when ``α`` is given, else 1; γ = 2.
* Tversky index (Salehi et al. 2017), with TP = Σpg, FP = Σp(1−g), FN = Σ(1−p)g::

      TI = (TP + ε) / (TP + α·FP + β·FN + ε),   α = 1 − β by default,

  so β > 0.5 penalises false negatives more (recall), β = α = 0.5 gives Dice.
  Focal Tversky (Abraham & Khan 2019): ``FT = (1 − TI)^γ``, defaults β = 0.7 (α = 0.3), γ = 0.75
  (= 1/(4/3), the paper's exponent; γ < 1 strengthens the gradient for well-segmented patches).
* Combined:    ``λ1·BCE + λ2·Dice + λ3·Focal``;
  CombinedFT:  ``λ1·BCE + λ2·FocalTversky + λ3·Focal``.
  Presets (λ1, λ2, λ3): ``balanced`` (0.3, 0.3, 0.4), ``overcrowd`` (0.2, 0.5, 0.3),
  ``cellvit`` (0.5, 0.3, 0.5) — used as given (they need not sum to one); valid for both.
* Mask + distance (ISL seed): ``L = MSE(d̂, d) + α·L_mask(z, g)`` with ``L_mask`` the weighted BCE
  (or any loss above) and ``α = MSE₀ / L_mask,₀`` measured on the first batch
  (:func:`balance_alpha`), so both terms start with equal weight; α is then frozen and stored in
  the module's ``state_dict``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewlabel.errors import ConfigError

log = logging.getLogger(__name__)

PRESETS: dict[str, tuple[float, float, float]] = {
    "balanced": (0.3, 0.3, 0.4),
    "overcrowd": (0.2, 0.5, 0.3),
    "cellvit": (0.5, 0.3, 0.5),
}
LOSS_NAMES = ("bce", "dice", "focal", "focal_tversky", "combined", "combined_ft", "mask_distance")
_FT_CLAMP = 1e-6  # lower bound of (1 − TI) before the power γ < 1 (finite gradient at TI = 1)


# --------------------------------------------------------------------------- shape helpers
def foreground_logit(pred: torch.Tensor) -> torch.Tensor:
    """Foreground logit ``z`` of shape ``(B, ...)`` from ``(B, 1, ...)`` or ``(B, 2, ...)`` logits.

    Two-class logits give ``z = l₁ − l₀`` (``softmax(l)[1] = σ(l₁ − l₀)``).
    """
    if pred.dim() < 2 or pred.shape[1] not in (1, 2):
        raise ValueError(f"pred must be (B, 1, ...) or (B, 2, ...) logits, got {tuple(pred.shape)}")
    pred = pred.float()
    return pred[:, 0] if pred.shape[1] == 1 else pred[:, 1] - pred[:, 0]


def foreground_target(target: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """Target mask ``g`` aligned with ``logit`` (``(B, ...)``); accepts (B,...), (B,1,...),
    (B,2,...)."""
    target = target.detach()
    if target.shape == logit.shape:
        out = target
    elif target.dim() == logit.dim() + 1 and target.shape[1] == 1:
        out = target[:, 0]
    elif target.dim() == logit.dim() + 1 and target.shape[1] == 2:
        out = target[:, 1]
    else:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logit.shape)}"
        )
    if out.shape != logit.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logit.shape)}"
        )
    return out.to(dtype=logit.dtype)


def _valid(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if valid is None:
        return None
    valid = valid.detach().to(dtype=like.dtype)
    if valid.dim() == like.dim() + 1 and valid.shape[1] == 1:
        valid = valid[:, 0]
    return torch.broadcast_to(valid, like.shape)


def _mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return values.mean()
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Element-wise inputs: ``logits`` and ``target`` of identical shape (no channel logic)."""
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ; "
            "use build_loss(...) for channel-first network outputs"
        )
    z = logits.float()
    return z, target.detach().to(z.dtype), _valid(valid, z)


# --------------------------------------------------------------------------- single losses
def weighted_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    w_cell: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted BCE ``−mean(w_cell·g·log σ(z) + (1−g)·log(1−σ(z)))`` (``w_cell`` on foreground)."""
    z, g, v = _prepare(logits, target, valid)
    pos_weight = torch.tensor(float(w_cell), dtype=z.dtype, device=z.device)
    values = F.binary_cross_entropy_with_logits(z, g, pos_weight=pos_weight, reduction="none")
    return _mean(values, v)


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice loss ``1 − (2·Σpg + ε)/(Σp + Σg + ε)`` with ``p = σ(z)``, ε = ``smooth``."""
    z, g, v = _prepare(logits, target, valid)
    p = torch.sigmoid(z)
    if v is not None:
        p, g = p * v, g * v
    inter = (p * g).sum()
    return 1.0 - (2.0 * inter + smooth) / (p.sum() + g.sum() + smooth)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss ``mean(−α_t (1 − p_t)^γ log p_t)`` (Lin et al. 2017), γ = 2, α optional.

    ``−log p_t`` is the element-wise BCE-with-logits (stable); ``p_t = exp(log p_t)``.
    """
    z, g, v = _prepare(logits, target, valid)
    ce = F.binary_cross_entropy_with_logits(z, g, reduction="none")  # = −log p_t
    p = torch.sigmoid(z)
    p_t = p * g + (1.0 - p) * (1.0 - g)
    values = (1.0 - p_t).clamp_min(0.0).pow(gamma) * ce
    if alpha is not None:
        values = (float(alpha) * g + (1.0 - float(alpha)) * (1.0 - g)) * values
    return _mean(values, v)


def tversky_index(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float | None = None,
    beta: float = 0.7,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Tversky index ``(TP + ε)/(TP + α·FP + β·FN + ε)``; α (FP weight) defaults to 1 − β."""
    z, g, v = _prepare(logits, target, valid)
    a = 1.0 - beta if alpha is None else float(alpha)
    p = torch.sigmoid(z)
    if v is not None:
        p, g = p * v, g * v
    tp = (p * g).sum()
    fp = (p * (1.0 - g)).sum()
    fn = ((1.0 - p) * g).sum()
    return (tp + smooth) / (tp + a * fp + beta * fn + smooth)


def focal_tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float | None = None,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth: float = 1.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal Tversky loss ``(1 − TI)^γ`` (Abraham & Khan 2019), β = 0.7 (FN weight), γ = 0.75.

    ``1 − TI`` is clamped at 1e-6 before the power so the gradient stays finite at TI = 1.
    """
    ti = tversky_index(logits, target, alpha=alpha, beta=beta, smooth=smooth, valid=valid)
    return (1.0 - ti).clamp_min(_FT_CLAMP).pow(gamma)


def _weights(preset: str | None, weights: Sequence[float] | None) -> tuple[float, float, float]:
    if weights is not None:
        values = tuple(float(w) for w in weights)
        if len(values) != 3 or any(not math.isfinite(w) or w < 0 for w in values):
            raise ConfigError(
                f"loss weights must be three finite numbers ≥ 0, got {weights}.",
                fix="e.g. weights: [0.3, 0.3, 0.4] or use a preset.",
            )
        return values  # type: ignore[return-value]
    name = preset or "balanced"
    if name not in PRESETS:
        raise ConfigError(f"unknown loss preset '{name}'.", fix=f"use one of {sorted(PRESETS)}.")
    return PRESETS[name]


def combined(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    preset: str | None = "balanced",
    weights: Sequence[float] | None = None,
    w_cell: float = 1.0,
    smooth: float = 1.0,
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Combined loss ``λ1·BCE + λ2·Dice + λ3·Focal``; (λ1, λ2, λ3) from ``weights``/``preset``."""
    l1, l2, l3 = _weights(preset, weights)
    return (
        l1 * weighted_bce(logits, target, w_cell=w_cell, valid=valid)
        + l2 * soft_dice(logits, target, smooth=smooth, valid=valid)
        + l3 * focal(logits, target, gamma=focal_gamma, alpha=focal_alpha, valid=valid)
    )


def combined_ft(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    preset: str | None = "balanced",
    weights: Sequence[float] | None = None,
    w_cell: float = 1.0,
    smooth: float = 1.0,
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
    tversky_alpha: float | None = None,
    tversky_beta: float = 0.7,
    tversky_gamma: float = 0.75,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Combined loss ``λ1·BCE + λ2·FocalTversky + λ3·Focal`` (Dice replaced by Focal Tversky)."""
    l1, l2, l3 = _weights(preset, weights)
    return (
        l1 * weighted_bce(logits, target, w_cell=w_cell, valid=valid)
        + l2
        * focal_tversky(
            logits,
            target,
            alpha=tversky_alpha,
            beta=tversky_beta,
            gamma=tversky_gamma,
            smooth=smooth,
            valid=valid,
        )
        + l3 * focal(logits, target, gamma=focal_gamma, alpha=focal_alpha, valid=valid)
    )


class SegmentationLoss(nn.Module):
    """``loss(pred_logits, target, valid=None)`` for one of the single/combined losses above."""

    def __init__(self, name: str, func: Callable[..., torch.Tensor], params: dict[str, Any]):
        super().__init__()
        self.name = name
        self.func = func
        self.params = dict(params)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        z = foreground_logit(pred)
        return self.func(z, foreground_target(target, z), valid=valid, **self.params)

    def extra_repr(self) -> str:
        return f"{self.name}, {self.params}"


# --------------------------------------------------------------------------- config switch
_FUNCS: dict[str, Callable[..., torch.Tensor]] = {
    "bce": weighted_bce,
    "dice": soft_dice,
    "focal": focal,
    "focal_tversky": focal_tversky,
    "combined": combined,
    "combined_ft": combined_ft,
}


def _allowed(func: Callable[..., Any]) -> list[str]:
    import inspect

    return [
        n
        for n, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "valid"
    ]


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a loss module ``loss(pred_logits, target, valid=None) -> scalar`` from config.

    Names: ``bce`` (w_cell), ``dice`` (smooth), ``focal`` (gamma, alpha), ``focal_tversky``
    (alpha, beta, gamma, smooth), ``combined`` / ``combined_ft`` (preset | weights, w_cell, smooth,
    focal_gamma, focal_alpha [, tversky_alpha, tversky_beta, tversky_gamma]), ``mask_distance``
    (alpha, mask_loss, mask_params, w_cell). ``pred_logits`` is ``(B, 1|2, ...)``
    (``(B, 2, ...)`` mask logit + distance for ``mask_distance``). Unknown names or keys raise
    :class:`~fewlabel.errors.ConfigError`.
    """
    key = str(name).strip().lower()
    if key == "mask_distance":
        allowed = ["alpha", "mask_loss", "mask_params", "w_cell"]
        _check_keys(key, params, allowed)
        from fewlabel.segmentation.mask_distance import MaskDistanceLoss

        return MaskDistanceLoss(**params)
    if key not in _FUNCS:
        raise ConfigError(
            f"unknown segmentation loss '{name}'.", fix=f"use one of {list(LOSS_NAMES)}."
        )
    func = _FUNCS[key]
    _check_keys(key, params, _allowed(func))
    if key in ("combined", "combined_ft"):
        _weights(params.get("preset", "balanced"), params.get("weights"))  # validate now
    return SegmentationLoss(key, func, params)


def _check_keys(name: str, params: dict[str, Any], allowed: list[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"loss '{name}' got unknown parameter(s) {unknown}.",
            fix=f"allowed parameters: {allowed}.",
        )
