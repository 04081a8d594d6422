"""The fast ROI operators (issue 13) equal their references: CLAHE core vs scikit-image's,
ball decomposition vs distance transform, cached chunk reads vs plain reads, and the staged
block-wise stage vs whole-volume processing on a volume with several chunks per axis."""

from __future__ import annotations

import numpy as np
import pytest

from fewlabel import roi
from fewlabel.config import RoiConfig
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.io.chunk_cache import CachedChunks, default_cache_bytes
from fewlabel.roi.clahe import clahe_levels, clip_histograms
from fewlabel.roi.morphology import (
    MAX_DECOMPOSED_PASSES,
    _decomposed_passes,
    ball_rows,
    within_distance,
    within_distance_edt,
)
from fewlabel.synth import spot_volume

skimage_core = pytest.importorskip("skimage.exposure._adapthist")._clahe


@pytest.mark.parametrize(
    ("shape", "kernel", "clip"),
    [
        ((20, 50, 60), (7, 20, 20), 0.005),
        ((5, 33, 17), (3, 4, 5), 0.05),
        ((13, 31, 29), (8, 8, 8), 0.001),
        ((9, 40), (4, 7), 0.01),
        ((1, 10, 10), (1, 4, 4), 0.5),
        ((30,), (7,), 0.1),
        ((6, 9, 11), (6, 9, 11), 1.0),
    ],
)
def test_clahe_core_equals_scikit_image(rng, shape, kernel, clip):
    image = rng.gamma(2.0, 2000.0, size=shape).clip(0, 16383).astype(np.uint16)
    image[: max(1, shape[0] // 2)] //= 3  # uneven: regions differ
    reference = skimage_core(image.copy(), list(kernel), clip, 256)
    np.testing.assert_array_equal(clahe_levels(image, kernel, clip), reference)
    inner = tuple(slice(s // 4, s - s // 5) for s in shape)
    np.testing.assert_array_equal(clahe_levels(image, kernel, clip, inner), reference[inner])


def test_clip_histograms_equals_scikit_image(rng):
    from skimage.exposure._adapthist import clip_histogram

    hist = rng.integers(0, 40, size=(50, 256)).astype(np.int64)
    hist[::3, :10] += 500  # large excess: several redistribution passes
    for clip in (1, 7, 30):
        expected = np.stack([clip_histogram(row.copy(), clip) for row in hist])
        np.testing.assert_array_equal(clip_histograms(hist.copy(), clip), expected)


@pytest.mark.parametrize(
    ("radius", "voxel"),
    [(1.0, (0.3, 0.1, 0.1)), (0.1, (0.3, 0.1, 0.1)), (0.7, (1.0, 0.2, 0.2)), (0.5, (0.1, 0.1))],
)
def test_ball_decomposition_equals_distance_transform(rng, radius, voxel):
    shape = (12, 40, 45)[-len(voxel) :]
    rows = ball_rows(radius, voxel)
    assert _decomposed_passes(rows) <= MAX_DECOMPOSED_PASSES  # the fast path is the one tested
    for density in (0.003, 0.5):
        targets = rng.random(shape) < density
        np.testing.assert_array_equal(
            within_distance(targets, radius, voxel), within_distance_edt(targets, radius, voxel)
        )


def test_cached_chunks_reads_equal_and_decode_once(tmp_path, rng):
    data = rng.integers(0, 1000, size=(24, 40, 50)).astype(np.uint16)
    write_ome_zarr(tmp_path / "a.ome.zarr", data, (1, 1, 1), chunks=(8, 16, 16))
    array = open_ome_zarr(tmp_path / "a.ome.zarr").array
    cached = CachedChunks(array)
    assert cached.max_bytes == default_cache_bytes(array) > 0
    for box in [
        (slice(3, 20), slice(0, 40), slice(7, 33)),
        (slice(23, 24), slice(15, 17), slice(0, 1)),
    ]:
        np.testing.assert_array_equal(cached[box], data[box])
    np.testing.assert_array_equal(cached[...], data)
    assert cached.decoded == 3 * 3 * 4  # every chunk decoded once
    small = CachedChunks(array, max_bytes=0)  # no caching: still correct
    np.testing.assert_array_equal(small[2:9, 3:30, 5:49], data[2:9, 3:30, 5:49])
    with pytest.raises(IndexError):
        cached[::2]


def test_streamed_roi_equals_whole_volume_on_many_chunks(tmp_path):
    # 4 x 3 x 3 chunks, CLAHE regions straddling chunk borders, smoothing + morphology halos
    s = spot_volume((24, 72, 72), snr=4.0, density="medium", clutter=True, seed=11)
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(path, np.round(s.image).astype(np.uint16), (0.5, 0.2, 0.2), chunks=(6, 24, 24))
    params = RoiConfig.model_validate(
        {
            "clahe_clip_limit": 0.03,
            "clahe_kernel_um": (2.5, 1.8, 1.8),
            "erosion_radius_um": 0.2,
            "extend_radius_um": 0.4,
        }
    )
    runs = {}
    for name, kwargs in {
        "chunked": {"workers": 2},
        "whole": {"workers": 1, "block_shape": (24, 72, 72)},
    }.items():
        runs[name] = roi.segment_roi(
            path,
            tmp_path / f"{name}.ome.zarr",
            tmp_path / f"{name}.json",
            params=params,
            sample="s",
            seed=3,
            **kwargs,
        )
    a = np.asarray(open_ome_zarr(tmp_path / "chunked.ome.zarr").array[...])
    b = np.asarray(open_ome_zarr(tmp_path / "whole.ome.zarr").array[...])
    print(f"ROI fraction {a.mean():.3f}")
    assert 0.02 < a.mean() < 0.98
    np.testing.assert_array_equal(a, b)
    assert runs["chunked"]["gmm"] == runs["whole"]["gmm"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # scratch removed
