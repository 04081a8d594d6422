"""Test-time mirroring: the mean of a network's output over flips of its input.

nnU-Net predicts every volume on all mirror images along the axes it trained with mirroring
and averages the outputs (Isensee et al., Nat. Methods 18:203, 2021, "test-time
augmentation"); Cellpose's ``augment`` does the same over tile flips. A DM-DetNet3D density
map, a distance map or any dense per-voxel output is flipped back before the mean, so a
point stays where it is. The cost is one forward pass per combination of axes (4 for y/x,
8 for z/y/x).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from torch import nn

# spatial axes of an N, C, Z, Y, X tensor by name
_AXIS = {"z": -3, "y": -2, "x": -1}


def mirror_axes(flip_z: bool) -> tuple[str, ...]:
    """The axes a model trained with random flips may be mirrored along at test time:
    y and x always (every trainer here flips them), z only when training flipped z."""
    return ("z", "y", "x") if flip_z else ("y", "x")


class Mirrored(nn.Module):
    """``module`` averaged over every flip combination of ``axes`` (names among z, y, x).

    Each output is flipped back before the mean, so ``Mirrored(m)(x)`` is equivariant to the
    same flips; with no axes it is ``module`` itself. Attributes the engines read from a
    network (``receptive_field``, ``out_channels``) are forwarded.
    """

    def __init__(self, module: nn.Module, axes: Sequence[str] = ("y", "x")) -> None:
        super().__init__()
        unknown = sorted(set(axes) - set(_AXIS))
        if unknown:
            raise ValueError(f"mirror axes must be among z, y, x, got {unknown}")
        self.module = module
        dims = [_AXIS[a] for a in sorted(set(axes), key="zyx".index)]
        self.flips: list[tuple[int, ...]] = [
            combo for k in range(len(dims) + 1) for combo in combinations(dims, k)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in self.flips:
            out = self.module(torch.flip(x, dims) if dims else x)
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(self.flips)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)
