"""DM-DetNet3D (Spilger et al.): a slim 3D hourglass regressing a particle density map.

Contracting path: a stem convolution, residual blocks (Conv3d–InstanceNorm3d(affine)–LeakyReLU)
and strided-convolution downsampling; expanding path: upsampling (trilinear + conv, or a
transposed convolution) and residual blocks; **no long skip connections**; a 1×1×1 convolution
and a sigmoid give a 1-channel density in [0, 1]. Input and output are ``(B, C, Z, Y, X)``.

Anisotropy: each level downsamples by a per-axis factor; with ``pool_z=False`` the factor is
(1, 2, 2) (z is kept, e.g. for few, thick slices), else (2, 2, 2); ``pool_kernels`` gives one
factor per level explicitly. Inputs of any size are padded (replicate) to a multiple of the
total factor and the output is cropped back, so output shape == input shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fewlabel.detection.density.log_prior import LogPrior
from fewlabel.errors import ConfigError
from fewlabel.models.store import register_architecture

ARCH_NAME = "dmdetnet3d"


class ResBlock3d(nn.Module):
    """Two 3×3×3 convolutions with InstanceNorm3d(affine=True) and a residual shortcut."""

    def __init__(self, in_ch: int, out_ch: int, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(out_ch, affine=True)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(out_ch, affine=True)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.shortcut: nn.Module = (
            nn.Identity() if in_ch == out_ch else nn.Conv3d(in_ch, out_ch, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + self.shortcut(x))


class Down3d(nn.Module):
    """Strided convolution (kernel = stride = factor) + InstanceNorm + LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, factor: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, factor, stride=factor, bias=False)
        self.norm = nn.InstanceNorm3d(out_ch, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Up3d(nn.Module):
    """Upsampling by ``factor``: trilinear + 3×3×3 conv, or a transposed convolution."""

    def __init__(self, in_ch: int, out_ch: int, factor: tuple[int, int, int], mode: str) -> None:
        super().__init__()
        self.factor = factor
        self.mode = mode
        # parameter-free, so state dicts are unchanged; a module (not an F.interpolate call) so
        # that fewlabel.inference.fast can swap it for its faster equal form at inference
        self.resample: nn.Module = nn.Identity()
        if mode == "trilinear":
            self.resample = nn.Upsample(scale_factor=factor, mode="trilinear", align_corners=False)
            self.conv: nn.Module = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False)
        else:
            self.conv = nn.ConvTranspose3d(in_ch, out_ch, factor, stride=factor, bias=False)
        self.norm = nn.InstanceNorm3d(out_ch, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.resample(x))))


def _level_factors(
    depth: int, pool_z: bool, pool_kernels: Sequence[Sequence[int]] | None
) -> list[tuple[int, int, int]]:
    if pool_kernels is not None:
        factors = [tuple(int(v) for v in k) for k in pool_kernels]
        if len(factors) != depth or any(len(f) != 3 or min(f) < 1 for f in factors):
            raise ConfigError(
                f"pool_kernels needs {depth} entries of three positive ints (z, y, "
                f"x); got {pool_kernels!r}.",
                fix="e.g. [[1, 2, 2], [2, 2, 2]].",
            )
        return factors  # type: ignore[return-value]
    return [(2 if pool_z else 1, 2, 2)] * depth


class DMDetNet3D(nn.Module):
    """Slim hourglass density regressor (no long skips), 1-channel sigmoid output.

    Parameters
    ----------
    in_channels : input channels.
    base_channels : channels at full resolution; doubled per level.
    depth : number of down/up-sampling levels.
    blocks_per_level : residual blocks per level (contracting and expanding paths).
    pool_z : downsample z too (factor 2) instead of keeping it (factor 1).
    pool_kernels : explicit per-level (z, y, x) factors; overrides ``pool_z``.
    upsample : 'trilinear' (interpolation + conv) or 'transposed'.
    head_bias_init : initial bias of the output convolution (initialisation only).
    log_prior_sigma : when set (ZYX voxels), add a fixed LoG of the input times a learned gain
        to the logit and start the head at zero weight
        (:mod:`fewlabel.detection.density.log_prior`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 2,
        blocks_per_level: int = 1,
        pool_z: bool = False,
        pool_kernels: Sequence[Sequence[int]] | None = None,
        upsample: str = "trilinear",
        head_bias_init: float = -2.0,
        log_prior_sigma: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or depth < 0 or blocks_per_level < 1:
            raise ConfigError(
                "DMDetNet3D needs in_channels, base_channels, blocks_per_level >= 1 "
                f"and depth >= 0; got {in_channels}, {base_channels}, "
                f"{blocks_per_level}, {depth}."
            )
        if upsample not in ("trilinear", "transposed"):
            raise ConfigError(f"upsample must be 'trilinear' or 'transposed'; got {upsample!r}.")
        self.factors = _level_factors(depth, pool_z, pool_kernels)
        self.out_channels = 1  # declared: the inference engine need not probe it
        self.depth = depth
        self.blocks_per_level = blocks_per_level
        chans = [base_channels * 2**level for level in range(depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, chans[0], 3, padding=1, bias=False),
            nn.InstanceNorm3d(chans[0], affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )
        self.encoder = nn.ModuleList()
        for level in range(depth):
            blocks = [ResBlock3d(chans[level], chans[level]) for _ in range(blocks_per_level)]
            blocks.append(Down3d(chans[level], chans[level + 1], self.factors[level]))
            self.encoder.append(nn.Sequential(*blocks))
        self.bottleneck = nn.Sequential(
            *[ResBlock3d(chans[depth], chans[depth]) for _ in range(blocks_per_level)]
        )
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            blocks = [Up3d(chans[level + 1], chans[level], self.factors[level], upsample)]
            blocks += [ResBlock3d(chans[level], chans[level]) for _ in range(blocks_per_level)]
            self.decoder.append(nn.Sequential(*blocks))
        self.head = nn.Conv3d(chans[0], 1, 1)
        # start near the background level (sigmoid(-2) ≈ 0.12): the first steps need not
        # push the whole map down, which makes few-shot training converge much faster
        nn.init.constant_(self.head.bias, head_bias_init)
        self.upsample = upsample
        self.log_prior: LogPrior | None = None
        if log_prior_sigma is not None:
            self.log_prior = LogPrior(log_prior_sigma)
            nn.init.zeros_(self.head.weight)  # the untrained network is the LoG

    @property
    def total_factor(self) -> tuple[int, int, int]:
        """Product of the per-level downsampling factors (input sizes are padded to it)."""
        out = [1, 1, 1]
        for factor in self.factors:
            out = [a * b for a, b in zip(out, factor, strict=True)]
        return out[0], out[1], out[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-3:]
        pads: list[int] = []
        for n, f in zip(reversed(size), reversed(self.total_factor), strict=True):
            pads += [0, (-int(n)) % f]
        if any(pads):
            x = F.pad(x, pads, mode="replicate")
        y = self.stem(x)
        for stage in self.encoder:
            y = stage(y)
        y = self.bottleneck(y)
        for stage in self.decoder:
            y = stage(y)
        logit = self.head(y)
        if self.log_prior is not None:
            logit = logit + self.log_prior(x[:, :1])
        y = torch.sigmoid(logit)
        return y[..., : size[0], : size[1], : size[2]]

    def receptive_field(self) -> tuple[int, int, int]:
        """Approximate receptive field (voxels, ZYX) of one output voxel.

        Accumulates ``(k − 1) · jump`` over the convolutions on the path (3×3×3 convs, strided
        downsampling, upsampling convs). Use half of it as the minimal tile overlap.
        """
        rf = [1.0, 1.0, 1.0]
        jump = [1.0, 1.0, 1.0]

        def conv(kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1)) -> None:
            for a in range(3):
                rf[a] += (kernel[a] - 1) * jump[a]
                jump[a] *= stride[a]

        conv((3, 3, 3))  # stem
        for level in range(self.depth):
            for _ in range(self.blocks_per_level):
                conv((3, 3, 3))
                conv((3, 3, 3))
            conv(self.factors[level], self.factors[level])
        for _ in range(self.blocks_per_level):
            conv((3, 3, 3))
            conv((3, 3, 3))
        for level in reversed(range(self.depth)):
            factor = self.factors[level]
            for a in range(3):
                if self.upsample == "trilinear" and factor[a] > 1:
                    rf[a] += jump[a]  # linear interpolation mixes two coarse voxels
                jump[a] /= factor[a]  # kernel == stride transposed conv adds no context
            if self.upsample == "trilinear":
                conv((3, 3, 3))
            for _ in range(self.blocks_per_level):
                conv((3, 3, 3))
                conv((3, 3, 3))
        if self.log_prior is not None:  # a parallel path: the wider of the two
            rf = [max(a, b) for a, b in zip(rf, self.log_prior.receptive_field(), strict=True)]
        return tuple(int(round(v)) for v in rf)  # type: ignore[return-value]


def build_dmdetnet3d(**kwargs: object) -> DMDetNet3D:
    """Registry builder for ``'dmdetnet3d'``."""
    return DMDetNet3D(**kwargs)  # type: ignore[arg-type]


register_architecture(ARCH_NAME, build_dmdetnet3d)
