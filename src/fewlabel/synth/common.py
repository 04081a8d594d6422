"""Shared pieces of the generators: result containers, seeds, shapes, Gaussians, sampling."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from fewlabel.config import ZYXInt, zyx

POINT_COLUMNS = ["z", "y", "x"]


@dataclass
class SynthSpots:
    """A synthetic volume with point ground truth.

    ``image`` float32 ZYX (Poisson counts), ``points`` z,y,x voxels, ``meta`` JSON-able facts
    (parameters, per-spot amplitudes, clutter blobs), ``clean`` the noise-free expected image.
    """

    image: np.ndarray
    points: pd.DataFrame
    meta: dict[str, Any]
    clean: np.ndarray | None = None


def derive_seed(seed: int, *names: str) -> int:
    """A stable 32-bit seed for one named file/part, derived from the run seed."""
    key = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(n.encode()) for n in names]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _shape3(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """A generator's shape as :data:`~fewlabel.config.ZYXInt`; a (y, x) shape is one plane."""
    if isinstance(shape, (list, tuple)) and len(shape) == 2:
        shape = (1, *shape)
    return zyx(shape, f"{what} shape", ZYXInt, broadcast=False)


def _add_gaussian(
    image: np.ndarray,
    centre: Sequence[float],
    sigma: Sequence[float],
    amplitude: float,
    *,
    radius: float = 4.0,
) -> None:
    """Add ``amplitude * exp(-sum((v - c)^2 / (2 sigma^2)))`` in place (patch of ``radius``
    sigmas)."""
    lo = [max(int(np.floor(c - radius * s)), 0) for c, s in zip(centre, sigma, strict=True)]
    hi = [
        min(int(np.ceil(c + radius * s)) + 1, n)
        for c, s, n in zip(centre, sigma, image.shape, strict=True)
    ]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return
    profiles = [
        np.exp(-((np.arange(lo_, h) - c) ** 2) / (2.0 * s * s))
        for lo_, h, c, s in zip(lo, hi, centre, sigma, strict=True)
    ]
    patch = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    image[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += (amplitude * patch).astype(image.dtype)


def _smooth_field(
    shape: tuple[int, int, int], rng: np.random.Generator, cells: Sequence[int] = (2, 4, 4)
) -> np.ndarray:
    """A smooth random field in [-1, 1]: a coarse uniform grid, cubic-spline upsampled."""
    grid = rng.uniform(-1.0, 1.0, size=tuple(int(c) + 1 for c in cells))
    zoom = [max(n, 2) / g for n, g in zip(shape, grid.shape, strict=True)]
    up = ndi.zoom(grid, zoom, order=3, mode="nearest", grid_mode=True)
    up = up[: shape[0], : shape[1], : shape[2]]
    if up.shape != shape:  # degenerate (size-1) axes
        up = np.resize(up, shape)
    peak = np.abs(up).max()
    return (up / peak if peak > 0 else up).astype(np.float32)


def _sample_separated(
    rng: np.random.Generator,
    n: int,
    low: np.ndarray,
    high: np.ndarray,
    scale: np.ndarray,
    min_dist: float,
    avoid: Sequence[tuple[np.ndarray, float]] = (),
    max_tries: int = 200,
) -> np.ndarray:
    """Up to ``n`` uniform points in the box [low, high] with pairwise scaled distance
    ``||(p - q)/scale|| >= min_dist`` (and away from ``avoid`` = (centre, scaled radius))."""
    points: list[np.ndarray] = []
    for _ in range(n):
        for _try in range(max_tries):
            p = rng.uniform(low, high)
            if points and min_dist > 0:
                d = np.sqrt((((np.asarray(points) - p) / scale) ** 2).sum(axis=1)).min()
                if d < min_dist:
                    continue
            if any(np.sqrt((((c - p) / scale) ** 2).sum()) < r for c, r in avoid):
                continue
            points.append(p)
            break
    return np.asarray(points, dtype=float).reshape(-1, 3)


def _points_frame(coords: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(coords, float).reshape(-1, 3), columns=POINT_COLUMNS)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (normalised Gaussian quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


__all__ = ["POINT_COLUMNS", "SynthSpots", "derive_seed"]
