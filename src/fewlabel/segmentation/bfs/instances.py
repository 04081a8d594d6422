"""Instance assignment of BFS-Net (Dehghani et al. §3.4): merged S1 peaks → watershed in S2's mask.

1. S1 peaks closer than ``merge_distance_um`` (µm, anisotropic voxels) are merged: peaks are
   linked when closer than the distance, each linked group (single linkage) becomes one centre
   at the score-weighted mean position, with the group's highest score.
2. Watershed inside S2's foreground ``{p > mask_threshold}`` from those centres, on the
   landscape ``R − D(x)`` where ``D`` is the µm distance to the nearest merged centre (so the
   fronts meet half-way between centres, in µm). This runs through the project's chunk-safe
   instance machinery (:func:`fewlabel.segmentation.instances_chunked.split_instances_chunked`):
   the landscape is a lazy array computed per block from a KD-tree of all centres, and its
   h-maxima (h = merge_distance / 4, below the half-distance between any two merged centres)
   are exactly the centres' voxels. A foreground component without a centre still becomes one
   object (the machinery gives every component a marker).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

REACH_UM = 1.0e3
"""``R`` of the landscape ``R − D``: larger than any object, so the cones never clip."""


def merge_peaks(
    table: pd.DataFrame, distance_um: float, voxel_size: Sequence[float]
) -> pd.DataFrame:
    """Merge peaks (columns z, y, x voxels and score) closer than ``distance_um``.

    Returns columns ``z, y, x, z_um, y_um, x_um, score, n_merged`` (score-weighted mean
    positions; score = the group's maximum), ordered by score descending.
    """
    voxel = np.asarray(voxel_size, dtype=np.float64)
    cols = ["z", "y", "x", "z_um", "y_um", "x_um", "score", "n_merged"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    pts = table[["z", "y", "x"]].to_numpy(np.float64)
    score = np.maximum(table["score"].to_numpy(np.float64), 1e-12)
    pairs = cKDTree(pts * voxel).query_pairs(float(distance_um), output_type="ndarray")
    n = len(pts)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)
    rows = []
    for g in range(n_groups):
        members = group == g
        w = score[members]
        centre = (pts[members] * w[:, None]).sum(axis=0) / w.sum()
        rows.append([*centre, *(centre * voxel), float(w.max()), int(members.sum())])
    out = pd.DataFrame(rows, columns=cols)
    out = out.sort_values(["score", "z", "y", "x"], ascending=[False, True, True, True])
    return out.reset_index(drop=True)


class ConeLandscape:
    """Lazy ZYX array ``R − D(x)`` (µm) for the watershed; sliced with tuples of slices."""

    def __init__(
        self, centres_vox: np.ndarray, shape: Sequence[int], voxel_size: Sequence[float]
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.ndim = 3
        self.dtype = np.dtype(np.float32)
        self.voxel = np.asarray(voxel_size, dtype=np.float64)
        pts = np.asarray(centres_vox, dtype=np.float64).reshape(-1, 3)
        self.tree = cKDTree(pts * self.voxel) if len(pts) else None

    def __getitem__(self, key: Any) -> np.ndarray:
        block = tuple(slice(*k.indices(n)[:2]) for k, n in zip(key, self.shape, strict=True))
        size = tuple(s.stop - s.start for s in block)
        if self.tree is None:
            return np.zeros(size, dtype=np.float32)
        grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in block], indexing="ij")
        coords = np.stack([g.ravel() for g in grids], axis=1) * self.voxel
        dist, _ = self.tree.query(coords, k=1)
        return (REACH_UM - dist).reshape(size).astype(np.float32)


def assign_instances(
    mask_prob: Any,
    centres_vox: np.ndarray,
    labels_out: Any,
    *,
    voxel_size: Sequence[float],
    mask_threshold: float,
    merge_distance_um: float,
    halo: Sequence[int],
    min_size: int = 0,
    workers: int = 1,
) -> int:
    """Watershed of S2's foreground from the merged centres into ``labels_out`` (chunk-safe);
    returns the number of objects."""
    from fewlabel.segmentation.instances_chunked import split_instances_chunked

    landscape = ConeLandscape(centres_vox, labels_out.shape, voxel_size)
    return split_instances_chunked(
        mask_prob,
        landscape,
        labels_out,
        halo=tuple(int(h) for h in halo),
        mask_threshold=float(mask_threshold),
        h=float(merge_distance_um) / 4.0,
        min_size=int(min_size),
        workers=workers,
    )
