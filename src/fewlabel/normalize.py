"""Intensity normalisation shared by training and tiled inference.

Percentiles are estimated on a bounded random subsample of voxels (reading whole chunks), so
huge volumes are never loaded; the same ``(low, high)`` pair is then applied to every tile:
``x' = (x - low) / (high - low)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fewlabel.blocks import block_grid


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


def apply_range(block: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` to ``[0, 1]`` as float32 (values outside are not clipped)."""
    return ((np.asarray(block, dtype=np.float32) - low) / (high - low)).astype(np.float32)
