"""A fixed Laplacian-of-Gaussian prior inside DM-DetNet3D (``detection.model.log_prior``).

The network's density logit becomes ``head(features) + g · R(x)``, with ``R`` the scale-normalised,
sign-flipped LoG of the normalised input (the baseline's response,
:func:`fewlabel.detection.log.baseline.log_response`)::

    R(x) = - Σ_i σ_i² ∂²/∂x_i² (G_σ * x),

σ per axis in voxels of the training grid (the density target's σ), ``g`` one learned gain. The
head starts at zero weight, so the untrained network ranks voxels exactly as the LoG does, and
training learns a correction where the clicks disagree with the filter. This is residual learning
on a classical detector: a learned model that starts from the LoG cannot begin below it, which
DM-DetNet3D started from random weights did on real data (benchmarks/real_spots).

The filter is separable: per axis term, a 1D second derivative of the sampled Gaussian along that
axis and the Gaussian along the others (scipy's ``gaussian_filter(order=2)`` kernels and its
radius ``int(4σ + 0.5)``); the input is padded by replication, so tiles with the receptive-field
margin give the whole-volume response. σ is a physical size: a volume of another voxel size
predicted on its own grid (``detection.predict.model_grid: false``) gets the filter with the same
σ in µm (:func:`priors_on_grid`), so the untrained network is that volume's LoG too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRUNCATE = 4.0


def gaussian_kernels(sigma: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Sampled, normalised Gaussian and its exact second derivative on ``[-radius, radius]``."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    return g, g * (t**2 / sigma**4 - 1.0 / sigma**2)


class LogPrior(nn.Module):
    """``R(x)`` of the module docstring for a ``(B, 1, Z, Y, X)`` input (σ in voxels, ZYX)."""

    def __init__(self, sigma: Sequence[float]) -> None:
        super().__init__()
        self.set_sigma(sigma)
        self.gain = nn.Parameter(torch.ones(()))

    def set_sigma(self, sigma: Sequence[float]) -> None:
        """(Re)build the six kernel buffers for ``sigma`` (voxels, ZYX); the gain is kept."""
        sigma = tuple(float(s) for s in sigma)
        if len(sigma) != 3 or min(sigma) < 0 or max(sigma) <= 0:
            raise ValueError(f"LoG prior sigma must be three values >= 0, one > 0; got {sigma!r}")
        self.sigma = sigma
        self.radius = tuple(int(TRUNCATE * s + 0.5) if s > 0 else 0 for s in self.sigma)
        device = self.gain.device if hasattr(self, "gain") else None
        for axis, (s, r) in enumerate(zip(self.sigma, self.radius, strict=True)):
            smooth, second = gaussian_kernels(s, r) if s > 0 else (np.ones(1), np.zeros(1))
            second = second * s**2  # the scale normalisation of this axis' term
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = len(smooth)
            for name, kernel in (("smooth", smooth), ("second", second)):
                # derived from sigma (the architecture's kwargs): not part of the weights
                self.register_buffer(
                    f"{name}{axis}",
                    torch.tensor(kernel, dtype=torch.float32, device=device).reshape(shape),
                    persistent=False,
                )

    def response(self, x: torch.Tensor) -> torch.Tensor:
        """``R(x)`` (no gain), same shape as ``x``."""
        rz, ry, rx = self.radius
        padded = F.pad(x, [rx, rx, ry, ry, rz, rz], mode="replicate")
        out = torch.zeros_like(x)
        for term in range(3):
            if self.sigma[term] <= 0:
                continue  # no derivative along a flat axis
            y = padded
            for axis in range(3):
                kernel = getattr(self, f"{'second' if axis == term else 'smooth'}{axis}")
                y = F.conv3d(y, kernel.to(y.dtype))
            out = out - y
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.response(x)

    def receptive_field(self) -> tuple[int, int, int]:
        return tuple(2 * r + 1 for r in self.radius)  # type: ignore[return-value]


@contextmanager
def priors_on_grid(
    module: nn.Module, trained: Sequence[float] | None, voxel_size: Sequence[float]
) -> Iterator[None]:
    """Within the block, every :class:`LogPrior` of ``module`` filters with its σ in µm on a
    volume of ``voxel_size`` (µm, ZYX): σ × ``trained`` / ``voxel_size``, ``trained`` being the
    training grid its σ is in voxels of. No-op without a prior, a recorded training grid or a
    difference; the training-grid σ is restored on exit."""
    priors = [m for m in module.modules() if isinstance(m, LogPrior)]
    if not priors or trained is None:
        yield
        return
    scale = [float(t) / float(v) for t, v in zip(trained, voxel_size[-3:], strict=True)]
    if np.allclose(scale, 1.0, rtol=1e-6, atol=0.0):
        yield
        return
    before = [p.sigma for p in priors]
    for prior, sigma in zip(priors, before, strict=True):
        prior.set_sigma([s * k for s, k in zip(sigma, scale, strict=True)])
    try:
        yield
    finally:
        for prior, sigma in zip(priors, before, strict=True):
            prior.set_sigma(sigma)


@torch.no_grad()
def init_gain(
    prior: LogPrior, crops: Sequence[tuple[np.ndarray, np.ndarray]], lift: float
) -> float:
    """Set the gain so that the median response at the clicks is ``lift`` logits.

    ``crops``: (normalised ZYX window, click voxels inside it) pairs. Returns the gain (left at 1
    when the clicks' median response is not positive)."""
    values = []
    for window, clicks in crops:
        if not len(clicks):
            continue
        r = prior.response(torch.as_tensor(window, dtype=torch.float32)[None, None])[0, 0].numpy()
        idx = np.clip(np.rint(clicks).astype(int), 0, np.array(r.shape) - 1)
        values.extend(r[tuple(idx.T)].tolist())
    median = float(np.median(values)) if values else 0.0
    gain = lift / median if median > 0 else 1.0
    prior.gain.fill_(gain)
    return gain
