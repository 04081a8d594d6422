"""Peak extraction: the local peak rule, sub-voxel centring, chunked == whole volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fewlabel.detection.peaks import ellipsoid_offsets, extract_points, find_peaks


def _gauss(shape, centres, sigma=(1.0, 1.5, 1.5), amps=None):
    grid = np.mgrid[tuple(slice(0, s) for s in shape)].astype(float)
    out = np.zeros(shape)
    amps = amps or [1.0] * len(centres)
    for c, a in zip(centres, amps, strict=True):
        r2 = sum((grid[i] - c[i]) ** 2 / (2 * sigma[i] ** 2) for i in range(3))
        out += a * np.exp(-r2)
    return out


def _same(table, whole):
    a = table[["z", "y", "x", "score"]].to_numpy()
    b = whole[["z", "y", "x", "score"]].to_numpy()
    return a.shape == b.shape and np.array_equal(a, b)


def test_ellipsoid_offsets_anisotropic():
    off = ellipsoid_offsets((1, 2, 2))
    assert (np.abs(off) <= [1, 2, 2]).all()
    assert [0, 0, 2] in off.tolist() and [1, 0, 0] in off.tolist()
    assert [1, 2, 0] not in off.tolist()  # (1/1)^2 + (2/2)^2 > 1
    assert len(ellipsoid_offsets((0, 1, 1))) == 5  # a 2D cross in one plane


def test_find_peaks_separated_spots_and_min_distance():
    centres = [(4, 6, 6), (4, 6, 15), (10, 14, 8)]
    vol = _gauss((15, 22, 22), centres, amps=[1.0, 0.8, 0.6])
    peaks = find_peaks(vol, threshold=0.3, min_distance=2)
    assert len(peaks) == 3
    assert peaks["score"].is_monotonic_decreasing
    np.testing.assert_allclose(peaks[["z", "y", "x"]].to_numpy(), centres, atol=0.05)
    # a weaker spot 2 voxels from a stronger one is suppressed by min_distance=3 but not by 1
    vol2 = _gauss((11, 21, 21), [(5, 10, 7), (5, 10, 11)], sigma=(1, 0.7, 0.7), amps=[1.0, 0.9])
    assert len(find_peaks(vol2, threshold=0.1, min_distance=(1, 1, 1))) == 2
    assert len(find_peaks(vol2, threshold=0.1, min_distance=(1, 5, 5))) == 1
    # threshold is strict and monotone: peaks at a higher threshold are a subset
    low = find_peaks(vol, threshold=0.1, min_distance=2)
    high = find_peaks(vol, threshold=0.7, min_distance=2)
    assert len(high) == 2 and set(map(tuple, high[["z", "y", "x"]].round(6).to_numpy())) <= set(
        map(tuple, low[["z", "y", "x"]].round(6).to_numpy())
    )


def test_plateau_gives_one_deterministic_peak():
    vol = np.zeros((5, 9, 9))
    vol[2, 3:6, 3:7] = 1.0  # flat plateau
    peaks = find_peaks(vol, threshold=0.5, min_distance=(1, 2, 2), refine_radius=0)
    assert peaks[["z", "y", "x"]].to_numpy().tolist() == [[2.0, 3.0, 3.0]]  # smallest (z,y,x)
    # two equal isolated maxima farther apart than min_distance are both kept
    vol = np.zeros((3, 5, 12))
    vol[1, 2, 2] = vol[1, 2, 9] = 1.0
    assert len(find_peaks(vol, threshold=0.5, min_distance=2, refine_radius=0)) == 2


@pytest.mark.parametrize("centre", [(7.3, 10.45, 9.8), (6.6, 9.55, 10.2), (7.0, 10.0, 10.0)])
@pytest.mark.parametrize("refine_radius", [1, 2])
def test_subvoxel_refinement_recovers_gaussian_centre(centre, refine_radius):
    vol = _gauss((15, 21, 21), [centre], sigma=(1.0, 1.5, 1.5))
    peaks = find_peaks(vol, threshold=0.1, min_distance=2, refine_radius=refine_radius)
    assert len(peaks) == 1
    err = np.abs(peaks[["z", "y", "x"]].to_numpy()[0] - centre)
    assert err.max() < 0.2
    no_refine = find_peaks(vol, threshold=0.1, min_distance=2, refine_radius=0)
    assert np.allclose(no_refine[["z", "y", "x"]].to_numpy()[0], np.round(centre))


def test_refinement_at_volume_border_does_not_pull_inwards():
    vol = _gauss((6, 12, 12), [(0.0, 5.3, 11.0)])
    peaks = find_peaks(vol, threshold=0.1, min_distance=2, refine_radius=2)
    z, y, x = peaks[["z", "y", "x"]].to_numpy()[0]
    assert z == 0.0 and x == 11.0 and abs(y - 5.3) < 0.2


def _noise_density(shape, seed):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.0).astype(np.float32)


@pytest.mark.parametrize(
    "block_shape", [(5, 7, 9), (8, 16, 16), (3, 4, 5), (23, 1, 37), (64, 64, 64)]
)
@pytest.mark.parametrize(
    "min_distance,refine", [((1, 2, 2), (1, 1, 1)), (2, (1, 2, 2)), ((0, 1, 3), 0)]
)
def test_chunked_extraction_equals_whole_volume(block_shape, min_distance, refine):
    density = _noise_density((23, 41, 37), seed=1)  # not a multiple of any block shape
    whole = find_peaks(density, threshold=0.5, min_distance=min_distance, refine_radius=refine)
    assert len(whole) > 50
    table = extract_points(
        density,
        threshold=0.5,
        min_distance=min_distance,
        refine_radius=refine,
        block_shape=block_shape,
        workers=2,
    )
    assert _same(table, whole)


def test_chunked_zarr_with_peaks_and_plateaus_on_chunk_borders(tmp_path):
    import zarr

    shape = (10, 30, 26)
    centres = [(4, 7, 8), (4, 8, 19), (5, 15, 12), (9, 29, 25), (0, 0, 0), (5, 16, 3)]
    vol = _gauss(shape, centres, sigma=(0.8, 1.0, 1.0), amps=[1, 0.9, 0.8, 0.7, 0.6, 0.5])
    # an exact tie straddling a chunk border (y=7|8 with chunk 8) and a plateau across x=8|7
    vol[2, 7, 14] = vol[2, 8, 14] = 2.0
    vol[7, 20:22, 7:9] = 1.5
    arr = zarr.create_array(
        str(tmp_path / "d.zarr"), shape=shape, chunks=(5, 8, 8), dtype="float32"
    )
    arr[...] = vol.astype(np.float32)
    whole = find_peaks(arr[...], threshold=0.3, min_distance=(1, 2, 2), refine_radius=1)
    tied = find_peaks(arr[...], threshold=0.3, min_distance=(1, 2, 2), refine_radius=0)
    tied = tied[tied["score"] == 2.0]
    assert tied[["z", "y", "x"]].to_numpy().tolist() == [[2, 7, 14]]  # smaller (z, y, x) wins
    for workers in (1, 3):
        table = extract_points(
            arr,
            threshold=0.3,
            min_distance=(1, 2, 2),
            refine_radius=1,
            voxel_size=(2.0, 0.5, 0.25),
            workers=workers,
        )
        assert _same(table, whole)
        np.testing.assert_allclose(table["z_um"], table["z"] * 2.0)
        np.testing.assert_allclose(table["x_um"], table["x"] * 0.25)
    assert list(table.columns) == ["z", "y", "x", "z_um", "y_um", "x_um", "score"]


def test_extract_points_empty_and_2d():
    empty = extract_points(np.zeros((4, 8, 8), np.float32), threshold=0.5, min_distance=1)
    assert len(empty) == 0 and "score" in empty.columns
    img = _gauss((1, 20, 20), [(0, 5.2, 14.7)])[0]
    table = extract_points(img, threshold=0.2, min_distance=(0, 2, 2), block_shape=(1, 7, 7))
    assert len(table) == 1 and table["z"].iloc[0] == 0.0
    assert abs(table["y"].iloc[0] - 5.2) < 0.2 and abs(table["x"].iloc[0] - 14.7) < 0.2
