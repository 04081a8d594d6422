"""Per-component instance splitting (instances_sparse) equals the whole-region computation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from fewlabel.segmentation.instances import (
    _TIE_EPS,
    _fill_holes,
    _linear_index,
    _markers,
    _tie_break,
    split_instances,
)
from fewlabel.segmentation.instances_chunked import split_instances_chunked
from fewlabel.segmentation.instances_sparse import SMALL_BOX, component_groups, segment_sparse


def _segment_dense(
    mask_prob: np.ndarray,
    distance: np.ndarray,
    *,
    mask_threshold: float,
    h: float,
    fill_holes: bool,
    origin: Sequence[int],
    global_shape: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~fewlabel.segmentation.instances_sparse.segment_sparse` on the whole region at
    once, from the same marker, tie-break and hole-filling steps: the reference it must equal
    (memory ~200 B per voxel of the region in scikit-image's ``reconstruction``)."""
    from skimage.segmentation import watershed

    fg, dist, markers, first = _markers(
        mask_prob,
        distance,
        mask_threshold=mask_threshold,
        h=h,
        origin=origin,
        global_shape=global_shape,
    )
    if len(first) == 0:
        return np.zeros(fg.shape, np.int32), first
    key = -dist + _TIE_EPS * _tie_break(_linear_index(origin, fg.shape, global_shape))
    labels = watershed(key, markers=markers, mask=fg, connectivity=1).astype(np.int32, copy=False)
    if fill_holes:
        _fill_holes(labels, np.argsort(first, kind="stable") + 1)
    return labels, first


def blobs(shape, n, sigma, seed, quantise=None):
    """Mask probability and distance from a sum of Gaussian blobs (touching, merging,
    small and large components); ``quantise`` rounds the distance to create exact ties."""
    rng = np.random.default_rng(seed)
    grid = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    np.add.at(grid, idx, rng.uniform(0.5, 2.0, n).astype(np.float32))
    g = ndi.gaussian_filter(grid, sigma) * float(np.prod(sigma)) * 15.7
    dist = g.astype(np.float32)
    if quantise:
        dist = np.round(dist * quantise) / quantise
    mask = np.clip(2.0 * g, 0.0, 1.0).astype(np.float32)
    return mask, dist


def relabel(labels: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Local ids -> ids in the raster order of the markers' first voxels."""
    lookup = np.zeros(len(first) + 1, dtype=np.uint32)
    lookup[np.argsort(first, kind="stable") + 1] = np.arange(1, len(first) + 1)
    return lookup[labels]


CASES = [
    # shape, blobs, sigma, seed, quantise, h, fill_holes (sparse path unless noted)
    ((24, 96, 128), 25, (2.0, 3.0, 3.0), 0, None, 0.1, False),
    ((24, 96, 128), 40, (2.0, 3.0, 3.0), 1, None, 0.05, False),  # touching blobs
    ((20, 96, 96), 50, (1.0, 1.5, 1.5), 2, 8, 0.2, True),  # small, exact ties, holes
    ((1, 96, 80), 40, (0.1, 3.0, 3.0), 3, 4, 0.1, False),  # one plane
    ((24, 80, 96), 300, (2.0, 3.0, 3.0), 4, None, 0.1, True),  # dense: one box
]


@pytest.mark.parametrize("shape, n, sigma, seed, quantise, h, holes", CASES)
def test_sparse_equals_dense(shape, n, sigma, seed, quantise, h, holes):
    mask, dist = blobs(shape, n, sigma, seed, quantise)
    kwargs = dict(mask_threshold=0.5, h=h, fill_holes=holes, origin=(3, 5, 7))
    kwargs["global_shape"] = tuple(s + 20 for s in shape)
    dense, first_dense = _segment_dense(mask, dist, **kwargs)
    sparse, first_sparse = segment_sparse(mask, dist, **kwargs)
    assert len(first_dense) > 0
    assert np.array_equal(np.sort(first_dense), np.sort(first_sparse))
    assert np.array_equal(relabel(dense, first_dense), relabel(sparse, first_sparse))


@pytest.mark.parametrize("holes", [False, True])
def test_inner_box_gives_the_same_labels_and_owned_markers_there(holes):
    mask, dist = blobs((40, 96, 128), 60, (2.0, 3.0, 3.0), 6)
    kwargs = dict(mask_threshold=0.5, h=0.1, fill_holes=holes, origin=(8, 0, 16))
    kwargs["global_shape"] = (64, 96, 160)
    inner = (slice(8, 32), slice(20, 70), slice(30, 100))
    full, first_full = _segment_dense(mask, dist, **kwargs)
    part, first_part = segment_sparse(mask, dist, inner=inner, **kwargs)
    if not holes:
        assert len(first_part) < len(first_full)  # components outside were skipped
    to_full = dict(zip(first_full.tolist(), range(1, len(first_full) + 1), strict=True))
    lookup = np.zeros(len(first_part) + 1, np.int64)
    lookup[1:] = [to_full[f] for f in first_part.tolist()]  # every marker found is a marker
    assert np.array_equal(lookup[part[inner]], full[inner])


def test_whole_volume_and_chunked_equal_dense_reference(tmp_path):
    mask, dist = blobs((40, 96, 96), 150, (2.0, 3.0, 3.0), 5)
    dense, first = _segment_dense(
        mask, dist, mask_threshold=0.5, h=0.1, fill_holes=False, origin=(0, 0, 0),
        global_shape=mask.shape,
    )  # fmt: skip
    reference = relabel(dense, first)
    assert np.array_equal(split_instances(mask, dist, h=0.1), reference)
    out = zarr.create_array(
        tmp_path / "l.zarr", shape=mask.shape, chunks=(16, 32, 32), dtype="uint32"
    )
    n = split_instances_chunked(mask, dist, out, halo=(12, 24, 24), h=0.1)
    assert n == reference.max()
    assert np.array_equal(out[...], reference)


def test_component_groups_cover_every_component_once():
    rng = np.random.default_rng(0)
    fg = np.zeros((40, 128, 128), bool)
    fg[tuple(rng.integers(0, s, 40) for s in fg.shape)] = True  # small components
    fg[2:20, 10:30, 40:70] = True  # two large ones: a group each
    fg[25:38, 90:120, 5:20] = True
    labels, n = ndi.label(fg, np.ones((3, 3, 3)))
    slices = ndi.find_objects(labels)
    groups = component_groups(slices, labels.shape, cell=(8, 32, 32))
    assert n > 30 and 2 < len(groups) < n
    ids = np.sort(np.concatenate([g for _, g in groups]))
    assert np.array_equal(ids, np.arange(1, n + 1))
    for box, members in groups:  # every member lies inside its group's box
        for i in members:
            for s, b in zip(slices[i - 1], box, strict=True):
                assert b.start <= s.start and s.stop <= b.stop
    big = [
        g
        for _, g in groups
        if any(np.prod([s.stop - s.start for s in slices[i - 1]]) >= SMALL_BOX for i in g)
    ]
    assert all(len(g) == 1 for g in big) and len(big) == 2
    noise = ndi.label(rng.random((20, 40, 40)) > 0.8, np.ones((3, 3, 3)))[0]
    whole = component_groups(ndi.find_objects(noise), noise.shape)
    assert len(whole) == 1 and whole[0][1] is None  # boxes larger than the region
