"""U-Net (Ronneberger et al. 2015) in 2D or 3D, and the two-head instance segmenter built on it.

:class:`UNet` — encoder of ``depth`` levels (two Conv–Norm–ReLU per level, max pooling by a
per-level factor), a bottleneck, a decoder (transposed convolution with kernel = stride =
factor, concatenation with the encoder **skip connection**, two Conv–Norm–ReLU) and a 1×1(×1)
output convolution. ``dims=3`` uses Conv3d on ``(B, C, Z, Y, X)``; ``dims=2`` uses Conv2d on
``(B, C, Y, X)`` — in fewlabel a 2D sample with K focal planes is a ZYX array with Z = K that is
fed as K input channels ("planes as channels": a 13-plane phase stack is ``(B, 13, Y, X)``).
Anisotropic 3D data (few thick z planes) pool by (1, 2, 2) with ``pool_z=False``; explicit
per-level factors go in ``pool_kernels``. Inputs of any size are padded (replicate) to a
multiple of the total pooling factor and the output is cropped back (output size == input size).

:class:`Segmenter` — the ISL U-Net body (1 output channel, linear: the predicted
fluorescence ``f̂``) followed by a small head that turns ``f̂`` into the two instance
segmentation maps::

    u = f̂ − c                       (c = ``center`` = 0.5: the activation is centred at 0.5)
    h = ReLU(Conv_k(1 → head_channels)(u))
    (z, d̂) = Conv_1(head_channels → 2)(h)        z: mask logit,  d̂: normalised distance

With :meth:`Segmenter.init_head_from_fluorescence` the head starts as the "adapted output
activation centred at 0.5": hidden units 0/1 compute ReLU(±u), so initially
``z = gain·(f̂ − 0.5)`` (mask probability ``σ(gain·(f̂ − 0.5))``) and ``d̂ = ReLU(f̂ − 0.5)``;
the other hidden units and head weights start at small random / zero values and are learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewlabel.errors import ConfigError
from fewlabel.models.store import register_architecture

ARCH_NAME = "unet"
SEGMENTER_ARCH_NAME = "segmenter"
NORMS = ("batch", "instance", "none")
ACTIVATIONS = (None, "sigmoid", "relu", "softplus")


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(dims: int, norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels) if dims == 3 else nn.BatchNorm2d(channels)
    if norm == "instance":
        return (
            nn.InstanceNorm3d(channels, affine=True)
            if dims == 3
            else nn.InstanceNorm2d(channels, affine=True)
        )
    return nn.Identity()


class DoubleConv(nn.Module):
    """Two (Conv 3^d, padding 1) → Norm → ReLU layers."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        conv = _conv(dims)
        bias = norm == "none"
        self.block = nn.Sequential(
            conv(in_ch, out_ch, 3, padding=1, bias=bias),
            _norm(dims, norm, out_ch),
            nn.ReLU(inplace=True),
            conv(out_ch, out_ch, 3, padding=1, bias=bias),
            _norm(dims, norm, out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def level_factors(
    dims: int, depth: int, pool_z: bool, pool_kernels: Sequence[Sequence[int]] | None
) -> list[tuple[int, ...]]:
    """Per-level pooling factors: explicit ``pool_kernels``, else (2,2[,2]) or (1,2,2)."""
    if pool_kernels is not None:
        factors = [tuple(int(v) for v in k) for k in pool_kernels]
        if len(factors) != depth or any(len(f) != dims or min(f) < 1 for f in factors):
            raise ConfigError(
                f"pool_kernels needs {depth} entries of {dims} positive ints; got "
                f"{pool_kernels!r}.",
                fix="e.g. [[1, 2, 2], [2, 2, 2]] for 3D.",
            )
        return factors
    if dims == 2:
        return [(2, 2)] * depth
    return [(2 if pool_z else 1, 2, 2)] * depth


class UNet(nn.Module):
    """2D/3D U-Net with skip connections; output size equals input size.

    Parameters
    ----------
    dims : 2 (Conv2d, input ``(B, C, Y, X)``; K focal planes = K channels) or 3 (Conv3d, input
        ``(B, C, Z, Y, X)``).
    in_channels, out_channels : input / output channels.
    base_channels : channels at full resolution, doubled per level.
    depth : number of pooling levels.
    norm : 'batch' (default; consistent tiled inference in eval mode), 'instance' or 'none'.
    final_activation : None (linear), 'sigmoid', 'relu' or 'softplus'.
    pool_z : 3D only: pool z too (factor 2) or keep it (factor 1, anisotropic data).
    pool_kernels : explicit per-level factors (overrides ``pool_z``).
    """

    def __init__(
        self,
        dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        norm: str = "batch",
        final_activation: str | None = None,
        pool_z: bool = True,
        pool_kernels: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ConfigError(f"U-Net dims must be 2 or 3; got {dims!r}.")
        if min(in_channels, out_channels, base_channels) < 1 or depth < 0:
            raise ConfigError(
                "U-Net needs in_channels, out_channels, base_channels >= 1 and "
                f"depth >= 0; got {in_channels}, {out_channels}, {base_channels}, "
                f"{depth}."
            )
        if norm not in NORMS:
            raise ConfigError(f"U-Net norm must be one of {list(NORMS)}; got {norm!r}.")
        if final_activation not in ACTIVATIONS:
            raise ConfigError(
                f"U-Net final_activation must be one of {list(ACTIVATIONS)}; got "
                f"{final_activation!r}."
            )
        self.dims = int(dims)
        self.depth = int(depth)
        self.factors = level_factors(self.dims, self.depth, pool_z, pool_kernels)
        self.final_activation = final_activation
        chans = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        ch_in = in_channels
        for level in range(depth):
            self.encoder.append(DoubleConv(self.dims, ch_in, chans[level], norm))
            pool = nn.MaxPool3d if self.dims == 3 else nn.MaxPool2d
            self.pools.append(pool(self.factors[level], stride=self.factors[level]))
            ch_in = chans[level]
        self.bottleneck = DoubleConv(self.dims, ch_in, chans[depth], norm)
        up = nn.ConvTranspose3d if self.dims == 3 else nn.ConvTranspose2d
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(
                up(chans[level + 1], chans[level], self.factors[level], stride=self.factors[level])
            )
            self.decoder.append(DoubleConv(self.dims, 2 * chans[level], chans[level], norm))
        self.out_conv = _conv(self.dims)(chans[0], out_channels, 1)

    @property
    def total_factor(self) -> tuple[int, ...]:
        """Product of the pooling factors (inputs are padded to a multiple of it)."""
        out = [1] * self.dims
        for factor in self.factors:
            out = [a * b for a, b in zip(out, factor, strict=True)]
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dims + 2:
            raise ValueError(
                f"{self.dims}D U-Net expects a {self.dims + 2}D tensor (B, C, "
                f"{'Z, ' if self.dims == 3 else ''}Y, X); got {tuple(x.shape)}"
            )
        size = x.shape[2:]
        pads: list[int] = []
        for n, f in zip(reversed(size), reversed(self.total_factor), strict=True):
            pads += [0, (-int(n)) % f]
        if any(pads):
            x = F.pad(x, pads, mode="replicate")
        skips = []
        for block, pool in zip(self.encoder, self.pools, strict=True):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        x = self.out_conv(x)
        if self.final_activation == "sigmoid":
            x = torch.sigmoid(x)
        elif self.final_activation == "relu":
            x = F.relu(x)
        elif self.final_activation == "softplus":
            x = F.softplus(x)
        crop = (slice(None), slice(None)) + tuple(slice(0, int(n)) for n in size)
        return x[crop]

    def receptive_field(self) -> tuple[int, int, int]:
        """Approximate receptive field (voxels, ZYX) of one output voxel (2D: z = 1).

        Accumulates ``(k − 1)·jump`` over the 3^d convolutions and the poolings on the deepest
        path (transposed convolutions with kernel = stride add no context). Half of it is the
        tile margin for exact tiled inference.
        """
        rf = [1.0] * self.dims
        jump = [1.0] * self.dims

        def conv(kernel: Sequence[int], stride: Sequence[int] | None = None) -> None:
            for a in range(self.dims):
                rf[a] += (kernel[a] - 1) * jump[a]
                jump[a] *= 1 if stride is None else stride[a]

        three = (3,) * self.dims
        for level in range(self.depth):
            conv(three)
            conv(three)
            conv(self.factors[level], self.factors[level])
        conv(three)
        conv(three)
        for level in reversed(range(self.depth)):
            for a in range(self.dims):
                jump[a] /= self.factors[level][a]
            conv(three)
            conv(three)
        out = tuple(int(round(v)) for v in rf)
        return (1, *out) if self.dims == 2 else out  # type: ignore[return-value]


class Segmenter(nn.Module):
    """ISL U-Net body (1 linear output = fluorescence) + head Conv(1→h)→ReLU→Conv(h→2).

    Output channels: 0 = mask logit ``z`` (probability ``σ(z)``), 1 = normalised distance
    ``d̂``. See the module docstring for the head and its ISL-centred initialisation.

    Parameters
    ----------
    dims, in_channels, base_channels, depth, norm, pool_z, pool_kernels : the body U-Net
        (identical to the ISL model's so its weights load into ``body``).
    head_channels : hidden channels of the head (default 8).
    head_kernel : kernel size of the first head convolution (1 or 3).
    center : the constant subtracted from the body output (0.5).
    """

    def __init__(
        self,
        dims: int = 3,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        norm: str = "batch",
        pool_z: bool = True,
        pool_kernels: Sequence[Sequence[int]] | None = None,
        head_channels: int = 8,
        head_kernel: int = 3,
        center: float = 0.5,
    ) -> None:
        super().__init__()
        if head_channels < 2 or head_kernel not in (1, 3):
            raise ConfigError(
                f"segmenter head needs head_channels >= 2 and head_kernel 1 or 3; "
                f"got {head_channels}, {head_kernel}."
            )
        self.body = UNet(
            dims=dims,
            in_channels=in_channels,
            out_channels=1,
            base_channels=base_channels,
            depth=depth,
            norm=norm,
            final_activation=None,
            pool_z=pool_z,
            pool_kernels=pool_kernels,
        )
        conv = _conv(dims)
        self.head = nn.Sequential(
            conv(1, head_channels, head_kernel, padding=head_kernel // 2),
            nn.ReLU(inplace=True),
            conv(head_channels, 2, 1),
        )
        self.register_buffer("center", torch.tensor(float(center)), persistent=False)
        self.center_value = float(center)
        self.dims = int(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) - self.center)

    def fluorescence(self, x: torch.Tensor) -> torch.Tensor:
        """The body's (ISL) output ``f̂``."""
        return self.body(x)

    @torch.no_grad()
    def init_head_from_fluorescence(self, gain: float = 4.0) -> None:
        """Start the head as ``z = gain·(f̂ − 0.5)``, ``d̂ = ReLU(f̂ − 0.5)`` (module docstring).

        Hidden units 0 and 1 get ``+1`` / ``−1`` at the kernel centre (zero bias), so they hold
        ``ReLU(u)`` and ``ReLU(−u)``; the output convolution maps them to ``z = gain·(ReLU(u) −
        ReLU(−u)) = gain·u`` and ``d̂ = ReLU(u)``; weights from the other hidden units start at 0.
        """
        first, last = self.head[0], self.head[2]
        centre = tuple(k // 2 for k in first.weight.shape[2:])
        first.weight[0:2].zero_()
        first.bias[0:2].zero_()
        first.weight[(0, 0, *centre)] = 1.0
        first.weight[(1, 0, *centre)] = -1.0
        last.weight.zero_()
        last.bias.zero_()
        last.weight[(0, 0) + (0,) * self.dims] = gain
        last.weight[(0, 1) + (0,) * self.dims] = -gain
        last.weight[(1, 0) + (0,) * self.dims] = 1.0

    def receptive_field(self) -> tuple[int, int, int]:
        """Receptive field of the body plus the head's first convolution."""
        rf = list(self.body.receptive_field())
        k = self.head[0].weight.shape[-1]
        start = 1 if self.dims == 2 else 0
        for a in range(start, 3):
            rf[a] += k - 1
        return tuple(rf)  # type: ignore[return-value]


def build_unet(**kwargs: Any) -> UNet:
    """Registry builder for ``'unet'``."""
    return UNet(**kwargs)


def build_segmenter(**kwargs: Any) -> Segmenter:
    """Registry builder for ``'segmenter'``."""
    return Segmenter(**kwargs)


register_architecture(ARCH_NAME, build_unet)
register_architecture(SEGMENTER_ARCH_NAME, build_segmenter)
