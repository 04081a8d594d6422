"""Markers + watershed of one region, computed per group of foreground components.

The seed procedure of :mod:`fewlabel.segmentation.instances` decomposes over the
26-connected components of the foreground ``F``: outside ``F`` the lifted distance is a
constant ``low`` below every marker seed value, so the reconstruction by dilation
``HMAX = R^δ_f(f − h − res)`` carries nothing across the background (every path through it
is capped at ``low``), the h-maxima tops and HMAX plateaus of a component depend only on
the component and its (constant) surrounding, and the 6-connected watershed restricted to
``F`` never crosses from one component to another. scikit-image's priority queue orders
equal keys by insertion age, and the relative age order of one component's entries is
the same alone or among others, so the flooding of each component is the same too.

Hence running the procedure on a box around a group of components, with every voxel of
the box outside the group set to background, gives exactly the whole-region result inside
the group (tested voxel for voxel against the whole-region reference ``_segment_dense`` in
tests/test_instances_sparse.py). Components are grouped by the
cell (:data:`CELL`) that holds the corner of their bounding box, large ones
(:data:`SMALL_BOX`) alone; cost and memory follow the
groups' boxes (mostly foreground) instead of the whole halo-grown block, which in
scikit-image's ``reconstruction`` costs ~200 B and an ``argsort`` per voxel (issue 13,
``benchmarks/performance/roi_scaling.md``). If the boxes would hold more voxels than the
region, the region is processed as one box (never more work than the dense computation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from fewlabel.segmentation.instances import (
    _FULL,
    _TIE_EPS,
    _fill_holes,
    _first_voxels,
    _floor_value,
    _h_maxima_labels,
    _linear_index,
    _tie_break,
)

CELL = (8, 32, 32)
"""Small components whose bounding boxes start in the same cell of this grid form one group."""
SMALL_BOX = 512
"""Components with a bounding box of at least this many voxels form a group of their own."""

Box = tuple[slice, ...]


def component_groups(
    slices: Sequence[Box | None], shape: Sequence[int], cell: Sequence[int] = CELL
) -> list[tuple[Box, np.ndarray | None]]:
    """Boxes (the union of the members' bounding boxes)
    and member ids of the component groups: one group per component with a box of at least
    :data:`SMALL_BOX` voxels, the smaller ones grouped by the ``cell`` of their box's corner;
    ``[(whole region, None)]`` when the boxes would hold more voxels than the region
    (``None`` = every component)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        if math.prod(s.stop - s.start for s in sl) >= SMALL_BOX:
            groups[(-i,)] = [i]
        else:
            key = tuple(s.start // c for s, c in zip(sl, cell, strict=True))
            groups.setdefault(key, []).append(i)
    out: list[tuple[Box, np.ndarray | None]] = []
    total = 0
    for ids in groups.values():
        box = tuple(
            slice(
                min(slices[i - 1][a].start for i in ids),  # type: ignore[index]
                max(slices[i - 1][a].stop for i in ids),  # type: ignore[index]
            )
            for a in range(len(shape))
        )
        total += math.prod(s.stop - s.start for s in box)
        out.append((box, np.asarray(ids, dtype=np.int64)))
    if total > math.prod(shape):
        return [(tuple(slice(0, int(n)) for n in shape), None)]
    return out


def segment_sparse(
    mask_prob: np.ndarray,
    distance: np.ndarray,
    *,
    mask_threshold: float,
    h: float,
    fill_holes: bool,
    origin: Sequence[int],
    global_shape: Sequence[int],
    inner: Box | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Local labels (int32, ids 1..n) and each marker's first global voxel index of one
    region, group of components by group (module docstring); the same partition, markers
    and first voxels as the whole-region watershed (``_segment_dense`` in the tests).

    ``inner``: only the components with a voxel in this box of the region are computed (a
    halo-grown block needs labels in its inner block only; ignored with ``fill_holes``, where
    a component around the box could fill voxels in it); the labels in ``inner`` and the
    markers with their first voxel there are the same as without it."""
    from skimage.segmentation import watershed

    fg = np.asarray(mask_prob) > mask_threshold
    labels = np.zeros(fg.shape, np.int32)
    if not fg.any():
        return labels, np.zeros(0, np.int64)
    distance = np.asarray(distance)
    low = _floor_value(np.asarray(distance[fg], dtype=np.float64), h)
    comp, n_comp = ndi.label(fg, structure=_FULL)
    slices: list[Box | None] = ndi.find_objects(comp)
    keep = None
    if inner is not None and not fill_holes:  # components outside the inner block
        keep = np.zeros(n_comp + 1, dtype=bool)  # do not reach it (hole filling might)
        keep[comp[tuple(inner)]] = True
        keep[0] = False
        slices = [sl if keep[i] else None for i, sl in enumerate(slices, start=1)]
    groups = component_groups(slices, fg.shape)
    member = np.zeros(n_comp + 1, dtype=bool)
    firsts: list[np.ndarray] = []
    n = 0
    for box, ids in groups:
        if ids is None:
            inside = fg[box] if keep is None else keep[comp[box]]
        else:
            member[ids] = True
            inside = member[comp[box]]
            member[ids] = False
        dist = np.asarray(distance[box], dtype=np.float64)
        markers, k = _h_maxima_labels(np.where(inside, dist, low), h)
        markers[~inside] = 0
        if k == 0:
            continue
        corner = [int(o) + s.start for o, s in zip(origin, box, strict=True)]
        firsts.append(_first_voxels(markers, k, corner, global_shape))
        key = -dist + _TIE_EPS * _tie_break(_linear_index(corner, inside.shape, global_shape))
        flooded = watershed(key, markers=markers, mask=inside, connectivity=1)
        target = labels[box]
        target[inside] = np.where(flooded[inside] > 0, flooded[inside] + n, 0)
        n += k
    first = np.concatenate([np.zeros(0, np.int64), *firsts])
    if fill_holes and n:
        _fill_holes(labels, np.argsort(first, kind="stable") + 1)
    return labels, first


__all__ = ["CELL", "component_groups", "segment_sparse"]
