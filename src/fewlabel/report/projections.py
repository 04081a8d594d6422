"""Maximum-intensity projections and strided slices of volumes too large to load whole.

MIPs are computed block by block over whole chunks and max-pooled on the fly to at most
``MAX_PX`` pixels per side,

    MIP_z[i, j] = max_{z, y ∈ [i f, (i+1) f), x ∈ [j f, (j+1) f)} I[z, y, x],

with one pooling factor ``f = ⌈max(Y, X) / MAX_PX⌉`` (so pixels stay square); slices are read
with stride ``f``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fewlabel.io.omezarr import zyx_view

MAX_PX = 1024  #: largest side (pixels) of a computed projection or slice
BLOCK_VOXELS = 1 << 25  #: voxels read at once when projecting (≈ 64 MiB of uint16)


def pooling_factors(
    shape2d: Sequence[int], max_px: int = MAX_PX, *, square: bool = True
) -> tuple[int, int]:
    """Integer pooling factors so that ``ceil(side / f) <= max_px`` (equal when ``square``)."""
    fa, fb = (max(1, math.ceil(int(s) / max_px)) for s in shape2d)
    if square:
        fa = fb = max(fa, fb)
    return fa, fb


def _block_shape(shape: Sequence[int], chunks: Sequence[int], budget: int) -> list[int]:
    block = [max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True)]
    grew = True
    while grew:
        grew = False
        for i in range(len(block)):
            if block[i] < shape[i] and math.prod(block) * 2 <= budget:
                block[i] = min(block[i] * 2, int(shape[i]))
                grew = True
    return block


def _pool_into(
    out: np.ndarray, part: np.ndarray, starts: Sequence[int], factors: Sequence[int]
) -> None:
    """Max-pool ``part`` (2D, global offset ``starts``) into ``out`` bins of ``factors``."""
    for axis in (0, 1):
        bins = (np.arange(part.shape[axis]) + starts[axis]) // factors[axis]
        first = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        part = np.maximum.reduceat(part, first, axis=axis)
        if axis == 0:
            rows = bins[first]
        else:
            cols = bins[first]
    region = out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    np.maximum(region, part, out=region)


def _lowest(dtype: np.dtype) -> Any:
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def max_projection(
    array: Any,
    axis: int = 0,
    *,
    max_px: int = MAX_PX,
    factors: Sequence[int] | None = None,
    square: bool | None = None,
    block_voxels: int = BLOCK_VOXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Block-wise maximum projection of a ZYX (or CZYX, channel 0) array along ``axis``.

    ``axis=0`` gives the YX top view, ``axis=1`` the ZX side view. The result is max-pooled by
    ``factors`` (default :func:`pooling_factors`, square for the top view) so each side is at most
    ``max_px``; returns ``(image, factors)``. Reads whole chunks, at most ``block_voxels`` voxels
    at a time, so memory stays bounded for any volume size.
    """
    array = zyx_view(array)
    shape = tuple(int(s) for s in array.shape)
    kept = [a for a in range(3) if a != axis]
    shape2d = (shape[kept[0]], shape[kept[1]])
    if factors is None:
        factors = pooling_factors(shape2d, max_px, square=axis == 0 if square is None else square)
    factors = (int(factors[0]), int(factors[1]))
    dtype = np.dtype(array.dtype)
    out = np.full(
        (math.ceil(shape2d[0] / factors[0]), math.ceil(shape2d[1] / factors[1])),
        _lowest(dtype),
        dtype=dtype,
    )
    chunks = getattr(array, "chunks", None) or shape
    block = _block_shape(shape, chunks, block_voxels)
    from fewlabel.blocks import block_grid

    for sl in block_grid(shape, block):
        part = np.asarray(array[sl]).max(axis=axis)
        _pool_into(out, part, (sl[kept[0]].start, sl[kept[1]].start), factors)
    return out, factors


def strided_slice(array: Any, z: int, factors: Sequence[int]) -> np.ndarray:
    """The YX plane ``z`` of a ZYX (or CZYX, channel 0) array, read with stride ``factors``."""
    array = zyx_view(array)
    return np.asarray(array[int(z), :: int(factors[0]), :: int(factors[1])])
