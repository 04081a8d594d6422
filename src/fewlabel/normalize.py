"""Intensity normalisation shared by training and tiled inference.

Three modes (``detection.train.normalisation.mode``; the model folder's normalization.json
records the recipe so prediction repeats it):

- ``percentile``: ``x' = (x - p_low) / (p_high - p_low)`` with the volume's percentiles.
- ``robust``: a robust z-score ``x' = (x - median) / (1.4826 MAD)`` (Hampel 1974; the MAD of
  Gaussian noise times 1.4826 is its s.d.), so intensities are in units of the noise rather
  than of the brightest structures.
- ``background``: local background subtraction by a white top-hat, then the robust z-score of
  the residual: ``r = x - γ_B(G_1 * x)`` with ``γ_B`` the grey opening (erosion then dilation,
  Serra 1982) by a box of half-size ``background_um`` per axis (converted to voxels with the
  volume's voxel size) of the image lightly smoothed by a 1-voxel Gaussian (so the opening
  follows the background, not the noise minima); ``x' = (r - median r) / (1.4826 MAD r)``.
  Tissue background, ramps and out-of-focus light, and bright structures wider than the box
  are removed before scaling; particles smaller than the box are kept.

Statistics (percentiles, median, MAD) are estimated on a bounded random subsample of voxels
(reading whole chunks), so huge volumes are never loaded; the same ``(low, high)`` pair is then
applied to every tile: ``x' = (x - low) / (high - low)``. The background filter is applied
lazily per read by :class:`BackgroundSubtracted`: each slice is read with a halo of
``2 half-size + ceil(3 σ)`` voxels (clipped to the volume), so any tile, crop or block equals
the same region of the whole-volume result and memory stays bounded by the read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fewlabel.blocks import block_grid, expand_block

MAD_TO_SD = 1.4826
"""MAD of a Gaussian times this is its standard deviation."""
SMOOTH_SIGMA = 1.0
"""σ (voxels) of the Gaussian smoothing before the opening of mode ``background``."""
TRUNCATE = 3.0
"""That Gaussian is truncated at this many σ."""


def sample_voxels(array: Any, *, max_voxels: int = 2_000_000, seed: int = 0) -> np.ndarray:
    """Return up to ``max_voxels`` voxel values drawn from randomly chosen chunks of ``array``.

    Small arrays are returned whole (flattened). Deterministic given ``seed``.
    """
    shape = tuple(array.shape[-3:])
    total = int(np.prod(shape))
    if total <= max_voxels:
        return np.asarray(array[...], dtype=np.float32).ravel()
    chunks = tuple(getattr(array, "chunks", None) or (min(32, shape[0]), 128, 128))[-3:]
    blocks = block_grid(shape, chunks)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    values: list[np.ndarray] = []
    count = 0
    per_block = max(1, max_voxels // max(1, min(len(blocks), 64)))
    for index in order:
        block = np.asarray(array[blocks[index]], dtype=np.float32).ravel()
        take = min(per_block, block.size)
        values.append(rng.choice(block, size=take, replace=False) if take < block.size else block)
        count += take
        if count >= max_voxels:
            break
    return np.concatenate(values)


def percentile_range(
    array: Any,
    percentiles: Sequence[float] = (1.0, 99.8),
    *,
    max_voxels: int = 2_000_000,
    seed: int = 0,
) -> tuple[float, float]:
    """``(low, high)`` intensity percentiles of a (possibly huge) array, from a subsample."""
    values = sample_voxels(array, max_voxels=max_voxels, seed=seed)
    low, high = np.percentile(values, list(percentiles))
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def robust_range(array: Any, *, max_voxels: int = 2_000_000, seed: int = 0) -> tuple[float, float]:
    """``(median, median + 1.4826 MAD)`` of a subsample: with :func:`apply_range` a robust
    z-score. A zero MAD (mostly constant volume) falls back to the s.d., then to 1."""
    values = sample_voxels(array, max_voxels=max_voxels, seed=seed).astype(np.float64)
    median = float(np.median(values))
    scale = MAD_TO_SD * float(np.median(np.abs(values - median)))
    if not scale > 0:
        scale = float(np.std(values)) or 1.0
    return median, median + scale


def apply_range(block: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` to ``[0, 1]`` as float32 (values outside are not clipped)."""
    return ((np.asarray(block, dtype=np.float32) - low) / (high - low)).astype(np.float32)


# --------------------------------------------------------------------------- background
def _as_slices(key: Any, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """Normalise an index (Ellipsis, ints, unit-step slices) to full slices + axes to drop."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    slices, drop = [], []
    for axis, (k, size) in enumerate(zip(key, shape, strict=True)):
        if isinstance(k, (int, np.integer)):
            k = int(k) + size if int(k) < 0 else int(k)
            slices.append(slice(k, k + 1))
            drop.append(axis)
            continue
        start, stop, step = k.indices(size)
        if step != 1:
            raise IndexError(f"only unit-step slices are supported; got {k}.")
        slices.append(slice(start, max(start, stop)))
    return tuple(slices), tuple(drop)


def top_hat(data: np.ndarray, radius: Sequence[int], lead: int = 0) -> np.ndarray:
    """``x - opening(G_1 * x)`` with a box of half-size ``radius`` (voxels) over the last three
    axes (``lead`` leading axes untouched); scipy's 'reflect' borders. float32."""
    from scipy import ndimage

    data = np.asarray(data, dtype=np.float32)
    smooth = ndimage.gaussian_filter(
        data, (0.0,) * lead + (SMOOTH_SIGMA,) * 3, truncate=TRUNCATE, mode="reflect"
    )
    size = (1,) * lead + tuple(2 * int(r) + 1 for r in radius)
    return data - ndimage.grey_opening(smooth, size=size, mode="reflect")


class BackgroundSubtracted:
    """Lazy white top-hat :func:`top_hat` of a ZYX (or CZYX: per channel) array, read region by
    region.

    Each read fetches the region grown by ``2 radius + ceil(3 σ)`` voxels per axis (clipped to
    the volume; scipy's 'reflect' border is then the volume's own), the reach of the smoothing,
    erosion and dilation, so every region equals the same region of the whole-volume result.
    float32 out; ``shape`` and ``chunks`` as the source's.
    """

    def __init__(self, source: Any, radius_voxels: Sequence[float]) -> None:
        self.source = source
        self.radius = tuple(max(1, int(round(float(r)))) for r in radius_voxels)
        self.shape = tuple(int(s) for s in source.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self.chunks = getattr(source, "chunks", None)
        reach = int(math.ceil(TRUNCATE * SMOOTH_SIGMA))
        self.halo = tuple(2 * r + reach for r in self.radius)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, drop = _as_slices(key, self.shape)
        lead = len(self.shape) - 3
        outer, inner = expand_block(slices[lead:], self.halo, self.shape[lead:])
        data = np.asarray(self.source[slices[:lead] + outer], dtype=np.float32)
        out = top_hat(data, self.radius, lead)[(slice(None),) * lead + inner]
        return out.squeeze(axis=drop) if drop else out


# --------------------------------------------------------------------------- recipes
def recipe(mode: str, percentiles: Sequence[float], background_um: Sequence[float]) -> dict:
    """The normalization.json recipe of a model trained with ``mode``."""
    if mode == "percentile":
        return {"method": "percentile", "percentiles": [float(p) for p in percentiles]}
    if mode == "robust":
        return {"method": "robust"}
    if mode == "background":
        return {"method": "background", "background_um": [float(b) for b in background_um]}
    raise ValueError(f"unknown normalisation mode {mode!r}")


def background_radius(
    normalization: Mapping[str, Any] | None, voxel_size: Sequence[float]
) -> tuple[float, float, float] | None:
    """Top-hat half-size in voxels of a ``background`` recipe (None for other recipes)."""
    norm = dict(normalization or {})
    if norm.get("method") != "background":
        return None
    um = [float(b) for b in norm["background_um"]]
    return tuple(b / float(v) for b, v in zip(um, voxel_size[-3:], strict=True))  # type: ignore[return-value]


def prepare(
    array: Any, normalization: Mapping[str, Any] | None, voxel_size: Sequence[float]
) -> tuple[Any, float, float]:
    """``(view, low, high)``: the array to read (background-subtracted for ``background``)
    and the range for :func:`apply_range`, from a recipe (:func:`recipe`; a recipe without
    ``method`` but with ``percentiles`` is the percentile mode)."""
    norm = dict(normalization or {})
    method = norm.get("method", "percentile" if "percentiles" in norm else None)
    radius = background_radius(norm, voxel_size)
    if radius is not None:
        view = BackgroundSubtracted(array, radius)
        return (view, *robust_range(view))
    if method == "robust":
        return (array, *robust_range(array))
    if method == "percentile":
        return (array, *percentile_range(array, tuple(norm.get("percentiles", (1.0, 99.8)))))
    raise ValueError(f"unsupported normalisation recipe {norm!r}")
