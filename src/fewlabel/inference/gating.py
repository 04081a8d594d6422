"""ROI gating of tiled prediction: which tiles hold at least one ROI voxel.

A tile ``t`` (window ``W_t``) is *active* iff ``∃ v ∈ W_t: roi(v) ≠ 0``; inactive tiles are not
computed. A voxel every one of whose covering tiles is active gets exactly the ungated blend
``Σ_t w_t f(x[t]) / Σ_t w_t`` (the same tiles, weights and order); every other voxel is set to
background 0. Every ROI voxel lies in active tiles only, so inside the ROI gated == ungated
(see :mod:`fewlabel.inference.tiling`).

:func:`tile_activity` reads the mask once, in z-slabs of bounded size, and reduces it onto the
grid of cells cut by all tile faces (per axis, the sorted tile starts and ends), so each tile is
an exact union of cells; a 3D prefix sum over the cell occupancy then answers every tile with
inclusion–exclusion. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.errors import InputDataError


def _cuts(starts: Sequence[int], tile: int, size: int) -> np.ndarray:
    points = {0, size}
    for s in starts:
        points.add(min(int(s), size))
        points.add(min(int(s) + tile, size))
    return np.array(sorted(points), dtype=np.int64)


def tile_activity(
    roi: Any,
    starts: Sequence[Sequence[int]],
    tile: Sequence[int],
    *,
    max_read_voxels: int = 1 << 26,
) -> np.ndarray:
    """Boolean array (tiles per axis) — True where the tile window holds a nonzero ROI voxel.

    ``roi``: ZYX numpy or zarr array (nonzero = ROI); ``starts``: per-axis tile starts;
    ``tile``: tile shape (windows are clipped to the volume).
    """
    shape = tuple(int(s) for s in roi.shape)
    cuts = [_cuts(st, t, n) for st, t, n in zip(starts, tile, shape, strict=True)]
    occ = np.zeros(tuple(len(c) - 1 for c in cuts), dtype=bool)
    chunks = getattr(roi, "chunks", None)
    step_z = int(chunks[0]) if chunks is not None else 1
    planes = max(1, max_read_voxels // max(1, shape[1] * shape[2]))
    planes = max(step_z, planes // step_z * step_z)
    for z0 in range(0, shape[0], planes):
        z1 = min(shape[0], z0 + planes)
        m = np.asarray(roi[z0:z1]) != 0
        m = np.logical_or.reduceat(m, cuts[1][:-1], axis=1)
        m = np.logical_or.reduceat(m, cuts[2][:-1], axis=2)
        cell = np.searchsorted(cuts[0], np.arange(z0, z1), side="right") - 1
        np.logical_or.at(occ, cell, m)
    prefix = np.zeros(tuple(n + 1 for n in occ.shape), dtype=np.int64)
    prefix[1:, 1:, 1:] = occ.cumsum(0).cumsum(1).cumsum(2)
    lo, hi = [], []
    for st, t, n, c in zip(starts, tile, shape, cuts, strict=True):
        s = np.asarray(st, dtype=np.int64)
        lo.append(np.searchsorted(c, np.minimum(s, n)))
        hi.append(np.searchsorted(c, np.minimum(s + t, n)))
    z0, y0, x0 = np.ix_(*lo)
    z1, y1, x1 = np.ix_(*hi)
    count = (
        prefix[z1, y1, x1]
        - prefix[z0, y1, x1]
        - prefix[z1, y0, x1]
        - prefix[z1, y1, x0]
        + prefix[z0, y0, x1]
        + prefix[z0, y1, x0]
        + prefix[z1, y0, x0]
        - prefix[z0, y0, x0]
    )
    return count > 0


def open_roi(
    roi: str | Path | Any | None, shape: Sequence[int], *, sample: str | None = None
) -> Any:
    """The ROI mask array for a ``shape`` (ZYX) volume: a path (OME-Zarr written by
    ``segment_roi``), an array, or None / ``''`` (no gating → None)."""
    if roi is None or (isinstance(roi, (str, Path)) and str(roi) == ""):
        return None
    path = None
    if isinstance(roi, (str, Path)):
        from fewlabel.io import open_ome_zarr

        path = Path(roi)
        roi = open_ome_zarr(path, sample=sample).array
    got = tuple(int(s) for s in roi.shape)
    if got != tuple(int(s) for s in shape):
        raise InputDataError(
            f"the ROI mask has shape {got} but the image has ZYX shape {tuple(shape)}.",
            sample=sample,
            path=path,
            fix="pass the ROI mask that segment_roi wrote for this image "
            "(results/roi/<sample>/roi.ome.zarr), or no --roi.",
        )
    return roi
