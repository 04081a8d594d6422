"""Gaussian blending of tile predictions: importance map, border masks, accumulation.

``out(v) = Σ_t w_t(v − s_t) · f(x[t])(v − s_t) / Σ_t w_t(v − s_t)`` over the tiles ``t``
(start ``s_t``) containing voxel ``v``; ``w_t`` is the Gaussian importance map, optionally zeroed
in a ``margin`` along tile faces inside the volume (see :mod:`fewlabel.inference.tiling`).
Pure numpy functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewlabel.errors import ConfigError
from fewlabel.inference.geometry import Window


def importance_map(
    tile: Sequence[int], sigma_scale: float | Sequence[float] = 0.125, min_weight: float = 1e-3
) -> np.ndarray:
    """Gaussian importance map ``w(p) = Π_a exp(−(p_a − c_a)² / 2σ_a²)``, with
    ``σ_a = sigma_scale·tile_a``.

    Centred at ``c_a = (tile_a − 1)/2`` (peak ≈ 1), clamped below at ``min_weight > 0`` so every
    voxel of a tile has a positive weight (nnU-Net / MONAI "gaussian" mode; same formula and
    clamp as ``monai.data.utils.compute_importance_map``). Returned as float32.
    """
    if min_weight <= 0:
        raise ConfigError(f"min_weight must be > 0; got {min_weight}.")
    tile_t = tuple(int(t) for t in tile)
    scales = _as_float_tuple(sigma_scale, len(tile_t))
    weight = np.ones((), dtype=np.float64)
    for t, scale in zip(tile_t, scales, strict=True):
        x = np.arange(t, dtype=np.float64) - (t - 1) / 2.0
        sigma = max(t * scale, 1e-6)
        weight = np.multiply.outer(weight, np.exp(-(x**2) / (2.0 * sigma**2)))
    return np.maximum(weight, min_weight).astype(np.float32)


def _as_float_tuple(value: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.floating, np.integer)):
        return (float(value),) * ndim
    return tuple(float(v) for v in value)


def border_mask_1d(start: int, tile: int, size: int, margin: int) -> np.ndarray:
    """1D 0/1 mask zeroing ``margin`` voxels at each tile face that lies inside the volume.

    Faces on the volume border (start 0, or end >= size) are kept: there the whole-volume
    prediction sees the same border as the tile.
    """
    mask = np.ones(tile, dtype=np.float32)
    if margin > 0:
        if start > 0:
            mask[:margin] = 0.0
        if start + tile < size:
            mask[tile - margin :] = 0.0
    return mask


def tile_weight(
    window: Window, shape: Sequence[int], base: np.ndarray, margin: Sequence[int]
) -> np.ndarray:
    """Blending weight of the tile at ``window``: ``base`` times the per-axis border masks."""
    weight = base
    for axis, (sl, size, m) in enumerate(zip(window, shape, margin, strict=True)):
        if m <= 0:
            continue
        mask = border_mask_1d(sl.start, base.shape[axis], size, m)
        if mask.all():
            continue
        view = [None] * base.ndim
        view[axis] = slice(None)
        weight = weight * mask[tuple(view)]
    return weight


def intersect(window: Window, block: Window) -> tuple[Window, Window] | None:
    """``(tile-local, block-local)`` slices of the overlap of a tile window and a block."""
    tile_local: list[slice] = []
    block_local: list[slice] = []
    for w, b in zip(window, block, strict=True):
        lo, hi = max(w.start, b.start), min(w.stop, b.stop)
        if hi <= lo:
            return None
        tile_local.append(slice(lo - w.start, hi - w.start))
        block_local.append(slice(lo - b.start, hi - b.start))
    return tuple(tile_local), tuple(block_local)


def accumulate(
    acc: np.ndarray,
    wsum: np.ndarray,
    pred: np.ndarray,
    weight: np.ndarray,
    window: Window,
    block: Window,
) -> bool:
    """Add ``weight · pred`` (``pred`` is (C, *tile)) into ``acc[:, block]`` and ``weight`` into
    ``wsum[block]`` over their overlap (in place); return False if they do not overlap.

    The engine accumulates in float64 (so an identity model returns its input to float32
    rounding) and always in ascending global tile order (bit-reproducible).
    """
    hit = intersect(window, block)
    if hit is None:
        return False
    tile_local, block_local = hit
    w = weight[tile_local].astype(acc.dtype, copy=False)
    acc[(slice(None),) + block_local] += pred[(slice(None),) + tile_local] * w
    wsum[block_local] += w
    return True


def normalize_blend(
    acc: np.ndarray, wsum: np.ndarray, missing: np.ndarray | None = None
) -> np.ndarray:
    """``acc / wsum`` (broadcast over channels); 0 where ``missing`` (voxels covered by a tile
    that was not computed, ROI gating). Every other voxel must have a positive weight sum."""
    if missing is None:
        if not (wsum > 0).all():
            raise RuntimeError(
                "a voxel is covered by no tile with positive weight (overlap < 2*margin?)"
            )
        return (acc / wsum[None]).astype(np.float32)
    keep = ~missing
    if not (wsum[keep] > 0).all():
        raise RuntimeError(
            "a voxel is covered by no tile with positive weight (overlap < 2*margin?)"
        )
    out = np.zeros(acc.shape, dtype=np.float32)
    np.divide(acc, wsum[None], out=out, where=keep[None], casting="unsafe")
    return out
