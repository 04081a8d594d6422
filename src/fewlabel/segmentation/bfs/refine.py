"""Image-guided refinement loss of BFS-Net S2 (Dehghani et al. §3.3.1, eq. 4 and eq. 5).

    L_BF = mean_v  ‖∇G(S, σ1)‖(v) · exp(−‖ΔG(I, σ2)‖ₚᵖ(v))       (eq. 4, bright-field: LoG)
    L_FL = mean_v  ‖∇G(S, σ1)‖(v) · exp(−‖∇G(I, σ2)‖ₚᵖ(v))       (eq. 5, fluorescence)

``S`` is S2's foreground probability, ``I`` the normalised input. Segmentation edges cost
little where the image has a Laplacian (membrane) or gradient (step) response and much in flat
image regions, which pulls the mask's edges onto the image's. The guide is divided by its
standard deviation over each crop (detached) so that ``exp(−x^p)`` sees O(1) values whatever
the image contrast. Filters are separable Gaussian (derivative) convolutions in torch with
replicate padding, differentiable in ``S``; σ is given in y/x voxels and scaled along z by
the voxel size (isotropic in µm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Guide = Literal["log", "gradient"]


def gaussian_kernels(sigma: float, *, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """1D Gaussian, first and second derivative kernels (radius ceil(3σ), σ ≥ 0.3)."""
    s = max(float(sigma), 0.3)
    r = max(1, math.ceil(3 * s))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / s) ** 2)
    g = g / g.sum()
    d1 = -x / s**2 * g
    d2 = (x**2 / s**4 - 1 / s**2) * g
    d2 = d2 - d2.mean()  # zero response to a constant
    return [k.to(dtype) for k in (g, d1, d2)]


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """Convolve a (B, 1, Z, Y, X) tensor along spatial ``axis`` (0 = z) with replicate padding."""
    r = (kernel.numel() - 1) // 2
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = kernel.numel()
    weight = kernel.to(x.device, x.dtype).view(shape)
    return F.conv3d(F.pad(x, pad, mode="replicate"), weight)


def _separable(x: torch.Tensor, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
    for axis, k in enumerate(kernels):
        x = _conv_axis(x, k, axis)
    return x


def axis_sigmas(sigma: float, voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """σ (y/x voxels) per axis z, y, x, isotropic in µm (z: σ · voxel_y / voxel_z)."""
    vz, vy, vx = (float(v) for v in voxel_size)
    return sigma * vy / vz, sigma, sigma * vy / vx


def smoothed_gradient_norm(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """‖∇G(x, σ)‖ of a (B, 1, Z, Y, X) tensor (derivatives of Gaussian, per voxel)."""
    ks = [gaussian_kernels(s) for s in sigmas]
    parts = []
    for axis in range(3):
        kernels = [ks[a][1] if a == axis else ks[a][0] for a in range(3)]
        parts.append(_separable(x, kernels))
    return torch.sqrt(sum(p * p for p in parts) + 1e-12)


def laplacian_of_gaussian(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """ΔG(x, σ) of a (B, 1, Z, Y, X) tensor (sum of separable second derivatives)."""
    ks = [gaussian_kernels(s) for s in sigmas]
    out = 0
    for axis in range(3):
        kernels = [ks[a][2] if a == axis else ks[a][0] for a in range(3)]
        out = out + _separable(x, kernels)
    return out  # type: ignore[return-value]


def guide_weight(
    image: torch.Tensor,
    *,
    sigma2: float = 3.0,
    p: float = 2.0,
    guide: Guide = "log",
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """``exp(−|g/std(g)|^p)`` of the image response g (LoG or gradient norm), detached."""
    with torch.no_grad():
        sig = axis_sigmas(sigma2, voxel_size)
        x = image.float()
        g = laplacian_of_gaussian(x, sig) if guide == "log" else smoothed_gradient_norm(x, sig)
        scale = g.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1, 1)
        return torch.exp(-((g / scale).abs() ** float(p)))


def bf_loss(
    seg_prob: torch.Tensor,
    image: torch.Tensor,
    *,
    sigma1: float = 3.0,
    sigma2: float = 3.0,
    p: float = 2.0,
    guide: Guide = "log",
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Eq. 4 (``guide='log'``) or eq. 5 (``'gradient'``) for (B, 1, Z, Y, X) tensors."""
    weight = guide_weight(image, sigma2=sigma2, p=p, guide=guide, voxel_size=voxel_size)
    edges = smoothed_gradient_norm(seg_prob.float(), axis_sigmas(sigma1, voxel_size))
    return (edges * weight).mean()
