"""Fully convolutional 3D EfficientNet-b0-style window classifier (Vedrenne et al. §2.3).

EfficientNet-b0 (Tan & Le 2019) shrinks its input with stride-2 convolutions; on a window of
about one particle (24³ in the paper) that makes the map vanish, so the paper sets the strides
of the first block to 1. Here every convolution has stride 1 and no padding (*valid*): the
network maps a window of ``window`` voxels to one logit, its receptive field is exactly the
window, and the same weights applied to a larger input give the dense score map of every
window position at once (:meth:`PUClassifier.forward`; the shared tiled engine runs it). The
building blocks follow b0: a 3³ stem, MBConv blocks (1x1 expansion, 3³ depthwise, 1x1
projection, BatchNorm + SiLU, residual with drop-connect), a 1x1 head and average pooling
(here a stride-1 ``AvgPool3d`` over the rest of the window instead of a global pool).
Squeeze-and-excitation is left out: its global pool is not a local operation, so it would
break dense = window-by-window equality. Axes shorter than 3 voxels get kernels of 1.

An auxiliary decoder reconstructs the (normalised, clipped to [0, 1]) window from the pooled
features through a sigmoid (the reconstruction task of Bepler et al. and the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewlabel.models.store import register_architecture

ARCH_NAME = "pu_effnet3d"


def _kernel(remaining: list[int]) -> tuple[int, int, int]:
    return tuple(3 if r >= 3 else 1 for r in remaining)  # type: ignore[return-value]


class MBConv3d(nn.Module):
    """Valid (unpadded) MBConv block; the residual is centre-cropped to the output."""

    def __init__(
        self, cin: int, cout: int, expand: int, kernel: Sequence[int], drop_connect: float
    ) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv3d(cin, hidden, 1, bias=False), nn.BatchNorm3d(hidden), nn.SiLU()]
        layers += [
            nn.Conv3d(hidden, hidden, tuple(kernel), groups=hidden, bias=False),
            nn.BatchNorm3d(hidden),
            nn.SiLU(),
            nn.Conv3d(hidden, cout, 1, bias=False),
            nn.BatchNorm3d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.crop = tuple((int(k) - 1) // 2 for k in kernel)
        self.residual = cin == cout
        self.drop_connect = float(drop_connect)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if not self.residual:
            return y
        cz, cy, cx = self.crop
        skip = x[
            :,
            :,
            cz : x.shape[2] - cz,
            cy : x.shape[3] - cy,
            cx : x.shape[4] - cx,
        ]
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, 1, device=y.device) < keep
            y = y * mask.to(y.dtype) / keep
        return y + skip


class PUClassifier(nn.Module):
    """Window classifier; ``forward`` = dense probability map (same spatial size as the input),
    ``classify`` = one logit per window of exactly ``window`` voxels."""

    def __init__(
        self,
        window: Sequence[int] = (12, 24, 24),
        *,
        in_channels: int = 1,
        width: int = 16,
        channels: Sequence[int] = (16, 24, 40, 80),
        expand: int = 4,
        head_channels: int = 64,
        drop_connect: float = 0.2,
        reconstruction: bool = True,
    ) -> None:
        super().__init__()
        self.window = tuple(int(w) for w in window)
        if len(self.window) != 3 or min(self.window) < 1:
            raise ValueError(f"window must be 3 positive sizes, got {window}")
        self.out_channels = 1
        remaining = list(self.window)
        k = _kernel(remaining)
        remaining = [r - (kk - 1) for r, kk in zip(remaining, k, strict=True)]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, width, k, bias=False), nn.BatchNorm3d(width), nn.SiLU()
        )
        blocks: list[nn.Module] = []
        cin = width
        n = len(channels)
        for i, cout in enumerate(channels):
            k = _kernel(remaining)
            remaining = [r - (kk - 1) for r, kk in zip(remaining, k, strict=True)]
            rate = drop_connect * (i + 1) / max(n, 1)  # linearly increasing (EfficientNet)
            blocks.append(MBConv3d(cin, int(cout), 1 if i == 0 else int(expand), k, rate))
            cin = int(cout)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv3d(cin, head_channels, 1, bias=False),
            nn.BatchNorm3d(head_channels),
            nn.SiLU(),
            nn.AvgPool3d(tuple(remaining), stride=1),
        )
        self.logit = nn.Conv3d(head_channels, 1, 1)
        self.decoder: nn.Module | None = None
        if reconstruction:
            voxels = self.window[0] * self.window[1] * self.window[2]
            self.decoder = nn.Sequential(
                nn.Linear(head_channels, 64), nn.SiLU(), nn.Linear(64, voxels)
            )

    def receptive_field(self) -> tuple[int, int, int]:
        return self.window  # type: ignore[return-value]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def classify(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B,)`` of windows ``(B, C, *window)`` and the reconstruction (or None)."""
        if tuple(windows.shape[2:]) != self.window:
            raise ValueError(f"windows of {tuple(windows.shape[2:])}, expected {self.window}")
        feats = self.features(windows)
        logits = self.logit(feats).reshape(-1)
        recon = None
        if self.decoder is not None:
            recon = torch.sigmoid(self.decoder(feats.flatten(1))).reshape(
                windows.shape[0], 1, *self.window
            )
        return logits, recon

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the window ``[i − w//2, i − w//2 + w)`` at every voxel ``i`` of ``x``
        (mirror padding at the input border)."""
        pads: list[int] = []
        for w in reversed(self.window):
            pads += [w // 2, w - 1 - w // 2]
        small = any(p >= s for p, s in zip(pads[::2], reversed(x.shape[2:]), strict=True))
        x = F.pad(x, pads, mode="replicate" if small else "reflect")
        return self.logit(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense probability map ``σ(logit)`` of shape ``x.shape`` (one channel)."""
        return torch.sigmoid(self.dense_logits(x))


def build(**kwargs: Any) -> PUClassifier:
    return PUClassifier(**kwargs)


def parameter_count(module: nn.Module, *, include_decoder: bool = True) -> int:
    """Trainable parameters (optionally without the reconstruction decoder)."""
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if p.requires_grad and (include_decoder or not name.startswith("decoder."))
    )


register_architecture(ARCH_NAME, build)

__all__ = ["ARCH_NAME", "MBConv3d", "PUClassifier", "build", "parameter_count"]
