"""Voronoi centre maps from centroid clicks (BFS-Net, Dehghani et al., §3.1, eq. 1).

For clicked centres ``c_i`` (µm) and voxel ``x``::

    p(x) = 0                      if x lies on a Voronoi border
           exp(−k · D(x) / d_m)   else if D(x) ≤ d_m
           0                      otherwise

with ``D(x) = min_i ‖x − c_i‖`` in µm (anisotropic voxels: coordinates × voxel size). A voxel
is on a Voronoi border when one of its 6 face neighbours has another nearest centre (both
sides of the bisector are zeroed: a hard-negative band between touching cells); the voxel
nearest to a click keeps its value. Computed block by block with a 1-voxel halo and a KD-tree
over all clicks, so the chunked map equals the whole-volume map.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from fewlabel.blocks import Block, block_grid, expand_block
from fewlabel.config import BfsCentresConfig
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr, read_points_csv
from fewlabel.logs import progress

log = logging.getLogger(__name__)

_FAR = -1  # nearest-centre label of voxels farther than the query bound


def check_centres(
    points: np.ndarray,
    shape: Sequence[int],
    voxel_size: Sequence[float],
    d_m: float,
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> np.ndarray:
    """``points`` (N, 3 voxels z, y, x) as float64, checked for eq. 1: at least two clicks,
    all inside the volume, ``d_m`` at least one voxel. Raises with the sample and the fix."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 2:
        raise InputDataError(
            f"BFS-Net centre maps need at least two clicked centres per training volume (a "
            f"Voronoi border separates two cells); this volume has {len(pts)}.",
            sample=sample,
            path=path,
            fix="click the centre of every cell (at least two) in this volume, or give it "
            "the split test/predict.",
        )
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    outside = np.any((pts < -0.5) | (pts > upper), axis=1)
    if outside.any():
        first = pts[np.argmax(outside)]
        raise InputDataError(
            f"{int(outside.sum())} click(s) lie outside the volume of shape "
            f"{tuple(int(s) for s in shape)} (first: z,y,x = {first.round(2).tolist()}).",
            sample=sample,
            path=path,
            fix="give clicks as 0-based z,y,x voxel coordinates of this image (check the axis "
            "order and that they are voxels, not µm).",
        )
    voxel = max(float(v) for v in voxel_size)
    if not float(d_m) >= voxel:
        raise ConfigError(
            f"segmentation.bfs.centres.d_m = {d_m:g} µm is smaller than a voxel ({voxel:g} µm "
            "along the coarsest axis): the centre maps would be single voxels.",
            sample=sample,
            fix="set segmentation.bfs.centres.d_m to about the cell radius in µm (several voxels).",
        )
    return pts


def _nearest(tree: cKDTree, block: Block, voxel: np.ndarray, bound: float) -> tuple[Any, Any]:
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in block], indexing="ij")
    coords = np.stack([g.ravel() for g in grids], axis=1) * voxel
    dist, index = tree.query(coords, k=1, distance_upper_bound=bound)
    shape = tuple(s.stop - s.start for s in block)
    index = np.where(np.isfinite(dist), index, _FAR).reshape(shape)
    return dist.reshape(shape), index


def centre_map_block(
    block: Block,
    points: np.ndarray,
    shape: Sequence[int],
    voxel_size: Sequence[float],
    *,
    k: float,
    d_m: float,
    tree: cKDTree | None = None,
) -> np.ndarray:
    """Eq. 1 on ``block`` of a volume of ``shape`` (``points``: all clicks, voxels z, y, x)."""
    voxel = np.asarray(voxel_size, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    tree = tree if tree is not None else cKDTree(pts * voxel)
    outer, inner = expand_block(block, (1, 1, 1), shape)
    bound = float(d_m) + float(voxel.max()) * 1.01
    dist, label = _nearest(tree, outer, voxel, bound)
    border = np.zeros(label.shape, dtype=bool)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        differs = (label[tuple(a)] != label[tuple(b)]) & (label[tuple(a)] != _FAR)
        differs &= label[tuple(b)] != _FAR
        border[tuple(a)] |= differs
        border[tuple(b)] |= differs
    d = dist[inner]
    out = np.where(d <= d_m, np.exp(-float(k) * np.minimum(d, d_m) / float(d_m)), 0.0)
    out[border[inner]] = 0.0
    # the voxel nearest to each click keeps its value (1 for a click on a voxel centre)
    start = np.array([s.start for s in block])
    stop = np.array([s.stop for s in block])
    nearest = np.clip(np.rint(pts).astype(np.int64), 0, np.asarray(shape) - 1)
    here = np.all((nearest >= start) & (nearest < stop), axis=1)
    for p, c in zip(nearest[here] - start, pts[here], strict=True):
        dd = float(np.linalg.norm((p + start - c) * voxel))
        out[tuple(p)] = np.exp(-float(k) * dd / float(d_m)) if dd <= d_m else 0.0
    return out.astype(np.float32)


def centre_map(
    points: np.ndarray,
    shape: Sequence[int],
    voxel_size: Sequence[float],
    *,
    k: float = 2.0,
    d_m: float = 3.0,
    sample: str | None = None,
) -> np.ndarray:
    """Whole-volume eq. 1 (checked; see :func:`check_centres`)."""
    shape = tuple(int(s) for s in shape)
    pts = check_centres(points, shape, voxel_size, d_m, sample=sample)
    whole = tuple(slice(0, s) for s in shape)
    return centre_map_block(whole, pts, shape, voxel_size, k=k, d_m=d_m)


def make_centre_map(
    image_zarr: str | Path,
    points_csv: str | Path,
    out_path: str | Path,
    *,
    params: BfsCentresConfig | None = None,
    sample: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the centre map of one training volume as chunked OME-Zarr (image's chunks)."""
    params = params if params is not None else BfsCentresConfig()
    image = open_ome_zarr(image_zarr, sample=sample)
    shape = tuple(int(s) for s in image.shape[-3:])
    chunks = tuple(int(c) for c in image.array.chunks[-3:])
    table = read_points_csv(points_csv, shape=shape, sample=sample)
    pts = check_centres(
        table[["z", "y", "x"]].to_numpy(np.float64),
        shape,
        image.voxel_size,
        params.d_m,
        sample=sample,
        path=points_csv,
    )
    tree = cKDTree(pts * np.asarray(image.voxel_size, dtype=np.float64))
    blocks = block_grid(shape, chunks)
    with atomic_path(out_path) as tmp:
        out = create_ome_zarr(
            tmp,
            shape,
            np.float32,
            chunks,
            image.voxel_size,
            name=f"{sample}:bfs_centres",
            extra_attrs={
                "sample": sample,
                "kind": "bfs_centre_map",
                "points": str(points_csv),
                "n_points": len(pts),
                "k": params.k,
                "d_m_um": params.d_m,
            },
        )

        def fill(block: Block) -> None:
            out[block] = centre_map_block(
                block, pts, shape, image.voxel_size, k=params.k, d_m=params.d_m, tree=tree
            )

        desc = "centre map blocks"
        if workers <= 1:
            for block in progress(blocks, desc=desc, logger=log):
                fill(block)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in progress(pool.map(fill, blocks), total=len(blocks), desc=desc, logger=log):
                    pass
    log.info("centre map of %s: %d clicks, d_m %g µm, k %g", sample, len(pts), params.d_m, params.k)
    return {"sample": sample, "n_points": len(pts), "shape": list(shape)}
