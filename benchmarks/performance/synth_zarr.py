"""Synthetic OME-Zarr volumes for the scaling benchmarks, written slab by slab (never whole).

Three kinds, all ZYX (or CZYX) on the chunk grid ``chunks``; each z-slab of ``chunks[0]``
planes is rendered from the spots whose reach touches it, so memory is one slab plus its
halo whatever the volume size, and the content is deterministic given ``seed`` and does not
depend on the slab order:

* ``image``: uint16 Poisson spots (σ = 1 × 1.5 × 1.5 voxels, SNR ≈ 4) on an uneven background
  (the ``benchmarks/ingest_roi`` synthetic, rendered with a Gaussian filter of a delta
  grid instead of one spot at a time): input of ``segment_roi``.
* ``density``: float32 sum of unit-peak Gaussians (σ = 1 × 1.5 × 1.5 voxels): input of
  ``extract_points``.
* ``segmentation``: float32 CZYX with 2 channels, mask probability ``clip(2G, 0, 1)`` and
  distance ``G``, where ``G`` is a sum of unit-peak Gaussian blobs (σ = 2 × 3 × 3 voxels):
  input of ``split_instances``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from fewlabel.io import create_ome_zarr

KINDS = {
    # kind: (dtype, channels, spots per 10^6 voxels, sigma zyx)
    "image": (np.uint16, 0, 275.0, (1.0, 1.5, 1.5)),
    "density": (np.float32, 0, 100.0, (1.0, 1.5, 1.5)),
    "segmentation": (np.float32, 2, 60.0, (2.0, 3.0, 3.0)),
}


def bytes_per_voxel(kind: str) -> int:
    dtype, channels, _, _ = KINDS[kind]
    return np.dtype(dtype).itemsize * max(channels, 1)


def _slab_spots(
    seed: int, slab: int, depth: int, plane: tuple[int, int], density: float
) -> np.ndarray:
    """Spot centres (float z, y, x) of slab ``slab`` (its own RNG stream: order-free)."""
    rng = np.random.default_rng([seed, slab])
    n = rng.poisson(density * depth * plane[0] * plane[1] / 1e6)
    lo = np.array([slab * depth, 0, 0], float)
    hi = np.array([depth, plane[0], plane[1]], float)
    return lo + rng.uniform(0, 1, size=(n, 3)) * (hi - 1e-6)


def _render(
    kind: str, z0: int, z1: int, shape: tuple[int, int, int], depth: int, seed: int
) -> np.ndarray:
    """Planes ``z0:z1`` of the volume (float32, before noise / channels)."""
    _, _, density, sigma = KINDS[kind]
    reach = int(np.ceil(4 * sigma[0]))
    lo, hi = max(z0 - reach, 0), min(z1 + reach, shape[0])
    grid = np.zeros((hi - lo, shape[1], shape[2]), np.float32)
    first, last = max(lo // depth, 0), (hi - 1) // depth
    norm = float((2 * np.pi) ** 1.5 * np.prod(sigma))  # delta * norm -> unit-peak Gaussian
    for slab in range(first, last + 1):
        centres = _slab_spots(seed, slab, depth, shape[1:], density)
        idx = np.floor(centres).astype(np.int64)
        keep = (idx[:, 0] >= lo) & (idx[:, 0] < hi)
        idx = idx[keep]
        amp = np.ones(len(idx), np.float32)
        if kind == "image":
            amp = np.random.default_rng([seed, slab, 1]).uniform(0.5, 1.5, len(keep))[keep]
        np.add.at(grid, (idx[:, 0] - lo, idx[:, 1], idx[:, 2]), amp.astype(np.float32) * norm)
    grid = ndimage.gaussian_filter(grid, sigma, mode="constant", truncate=4.0)
    return grid[z0 - lo : z1 - lo]


def write_volume(
    path: str | Path,
    kind: str,
    shape: Sequence[int],
    *,
    chunks: Sequence[int] = (32, 256, 256),
    voxel_size: Sequence[float] = (0.3, 0.1, 0.1),
    seed: int = 0,
    background: float = 100.0,
    workers: int = 1,
) -> dict:
    """Write one synthetic volume (see the module docstring) to ``path``; return facts.

    ``workers`` threads render slabs in parallel (memory: one slab per worker)."""
    dtype, channels, _, _ = KINDS[kind]
    shape3 = tuple(int(s) for s in shape)
    depth = int(chunks[0])
    full = ((channels,) if channels else ()) + shape3
    chunk_full = ((1,) if channels else ()) + tuple(int(c) for c in chunks)
    out = create_ome_zarr(
        path, full, dtype, chunk_full, voxel_size, name=f"synthetic {kind}", pyramid=None
    )
    yy, xx = np.meshgrid(
        np.arange(shape3[1], dtype=np.float32),
        np.arange(shape3[2], dtype=np.float32),
        indexing="ij",
    )

    def write_slab(z0: int) -> None:
        z1 = min(z0 + depth, shape3[0])
        g = _render(kind, z0, z1, shape3, depth, seed)
        if kind == "image":
            zz = np.arange(z0, z1, dtype=np.float32)[:, None, None]
            bg = background * (
                1.0
                + 0.3
                * np.sin(2 * np.pi * xx / shape3[2])[None]
                * np.cos(2 * np.pi * yy / shape3[1] + zz / shape3[0])
            )
            # SNR 4 at a unit-amplitude spot: (I_obj - I_bg) / sqrt(I_obj) = 4 at bg 100
            lam = bg + np.float32(46.5) * g
            rng = np.random.default_rng([seed, z0 // depth, 2])
            out[z0:z1] = np.minimum(rng.poisson(lam), 65535).astype(np.uint16)
        elif kind == "density":
            out[z0:z1] = g
        else:
            out[0, z0:z1] = np.clip(2.0 * g, 0.0, 1.0)
            out[1, z0:z1] = g

    starts = range(0, shape3[0], depth)
    if workers <= 1:
        for z0 in starts:
            write_slab(z0)
    else:  # slabs are independent (own RNG streams, whole chunks): same result in any order
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(write_slab, starts))
    return {
        "kind": kind,
        "shape": list(full),
        "bytes": int(np.prod(shape3)) * bytes_per_voxel(kind),
    }


__all__ = ["KINDS", "bytes_per_voxel", "write_volume"]
