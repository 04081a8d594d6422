"""Inference-time composition of trained networks: test-time mirroring and seed ensembles.

- :class:`Mirrored`: the mean of a network's output over every flip combination of the axes
  it was trained with random flips (nnU-Net's test-time mirroring, Isensee et al., Nat.
  Methods 18:203, 2021; Cellpose's ``augment``). Each output is flipped back before the mean,
  so a dense output (density map, distance map) stays aligned with the input. One forward
  pass per combination: 4 for y/x, 8 for z/y/x.
- :class:`Averaged`: the mean output of networks of one architecture trained with different
  seeds (nnU-Net ensembles its cross-validation folds).

A model folder records its composition in ``model.json`` (``inference``), and
:func:`fewlabel.models.store.load_model` rebuilds it, so the threshold tuned at training time
and every prediction use the same composed network.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch
from torch import nn

AXES = ("z", "y", "x")
_DIM = {"z": -3, "y": -2, "x": -1}  # spatial axes of an N, C, Z, Y, X tensor
FORWARDED = ("receptive_field", "out_channels", "in_channels")
"""Attributes the engines read from a network; a wrapper answers with its (first) member's."""


def mirror_axes(flip_z: bool, mirror: bool = True) -> list[str]:
    """The axes a network trained with random flips is mirrored along at test time: y and x
    (every trainer here flips them), and z only when training flipped z; none without
    ``mirror`` (``detection.train.mirror``)."""
    if not mirror:
        return []
    return ["z", "y", "x"] if flip_z else ["y", "x"]


class _Wrapper(nn.Module):
    """A module around trained networks that answers :data:`FORWARDED` with ``_inner()``'s."""

    def _inner(self) -> nn.Module:  # each subclass names the network it forwards to
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name in FORWARDED:
            return getattr(self._inner(), name)
        return super().__getattr__(name)


class Mirrored(_Wrapper):
    """``module`` averaged over every flip combination of ``axes`` (names among z, y, x)."""

    def __init__(self, module: nn.Module, axes: Sequence[str] = ("y", "x")) -> None:
        super().__init__()
        unknown = sorted(set(axes) - set(AXES))
        if unknown:
            raise ValueError(f"mirror axes must be among z, y, x; got {unknown}")
        self.module = module
        self.axes = [a for a in AXES if a in set(axes)]
        dims = [_DIM[a] for a in self.axes]
        self.flips = [c for k in range(len(dims) + 1) for c in combinations(dims, k)]

    def _inner(self) -> nn.Module:
        return self.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in self.flips:  # a fixed order: the same sum, bit for bit, every run
            out = self.module(torch.flip(x, dims) if dims else x)
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        assert total is not None
        return total / len(self.flips)


class Averaged(_Wrapper):
    """The mean output of ``members`` (same architecture, e.g. trained with other seeds)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def _inner(self) -> nn.Module:
        return self.members[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)


def compose(members: Sequence[nn.Module], axes: Sequence[str] = ()) -> nn.Module:
    """The inference network of ``members`` (one: itself) mirrored along ``axes`` (none: not)."""
    net = members[0] if len(members) == 1 else Averaged(members)
    return Mirrored(net, axes) if axes else net
