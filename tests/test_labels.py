"""Density targets and weight maps (DM-DetNet3D targets, seed eq. 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fewlabel.config import DensityTargetsConfig
from fewlabel.detection.density.targets import (
    density_target,
    make_density_targets,
    sigma_in_voxels,
    weight_map,
)
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr, write_ome_zarr, write_points_csv


def test_single_point_gaussian_values() -> None:
    target = density_target((9, 21, 21), np.array([[4.0, 10.0, 10.0]]), (1.0, 2.0, 2.0))
    assert target.dtype == np.float32
    assert target[4, 10, 10] == pytest.approx(1.0)
    assert target[5, 10, 10] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert target[4, 12, 10] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert target[4, 10, 19] == 0.0  # beyond 4 sigma (8 voxels)
    assert target[4, 10, 18] > 0.0
    assert target.min() >= 0.0 and target.max() <= 1.0


def test_subvoxel_point_peak_is_one_and_overlap_is_max() -> None:
    pts = np.array([[2.3, 5.6, 5.0], [2.0, 5.0, 8.0]])
    target = density_target((5, 12, 14), pts, 1.5)
    assert target[2, 6, 5] == pytest.approx(1.0)  # nearest voxel of the sub-voxel point
    single = [density_target((5, 12, 14), p[None], 1.5) for p in pts]
    np.testing.assert_array_equal(target, np.maximum(*single))


def test_weight_map_eq2() -> None:
    target = np.zeros((5, 7, 7), np.float32)
    target[2, 3, 3] = 0.5
    target[0, 0, 6] = 0.1
    w = weight_map(target, lam=10.0, T=0.2)
    assert w.dtype == np.float32
    assert set(np.unique(w).tolist()) == {1.0, 11.0}
    expected = np.ones_like(w)
    expected[1:4, 2:5, 2:5] = 11.0  # 3x3x3 dilation of the voxel above T
    np.testing.assert_array_equal(w, expected)


def test_sigma_units() -> None:
    assert sigma_in_voxels([1.0, 0.4, 0.4], "um", (2.0, 0.2, 0.2)) == pytest.approx((0.5, 2, 2))
    assert sigma_in_voxels(2.0, "voxel", (2.0, 0.2, 0.2)) == (2.0, 2.0, 2.0)
    with pytest.raises(ConfigError):
        sigma_in_voxels(2.0, "px", (1, 1, 1))
    with pytest.raises(ConfigError):
        density_target((3, 3, 3), np.zeros((1, 3)), (1.0, 0.0, 1.0))


def test_chunked_targets_equal_whole_volume(tmp_path) -> None:
    rng = np.random.default_rng(3)
    shape = (11, 37, 29)
    image = rng.normal(100, 10, shape).astype(np.float32)
    pts = rng.uniform(-0.5, np.array(shape) - 0.5, size=(25, 3))
    pts[0] = [0, 0, 0]
    pts[1] = [10.4, 36.4, 28.4]
    write_ome_zarr(tmp_path / "img.ome.zarr", image, (2.0, 0.5, 0.5), chunks=(4, 8, 16))
    write_points_csv(pd.DataFrame(pts, columns=["z", "y", "x"]), tmp_path / "p.csv")
    make_density_targets(
        tmp_path / "img.ome.zarr",
        tmp_path / "p.csv",
        tmp_path / "t.ome.zarr",
        tmp_path / "w.ome.zarr",
        params=DensityTargetsConfig(
            sigma=(1.0, 0.75, 1.25), sigma_unit="um", lam=5.0, T=0.3, annotation="full"
        ),
        sample="s1",
        workers=2,
    )
    t = open_ome_zarr(tmp_path / "t.ome.zarr")
    w = open_ome_zarr(tmp_path / "w.ome.zarr")
    assert t.array.chunks == (4, 8, 16) and w.array.chunks == (4, 8, 16)
    assert t.voxel_size == (2.0, 0.5, 0.5)
    whole_pts = pd.read_csv(tmp_path / "p.csv")[["z", "y", "x"]].to_numpy()
    whole = density_target(shape, whole_pts, (0.5, 1.5, 2.5))
    np.testing.assert_array_equal(t.array[...], whole)
    np.testing.assert_array_equal(w.array[...], weight_map(whole, lam=5.0, T=0.3))
    assert (t.array[...] > 0.99).sum() >= 20


def test_empty_points_file_is_an_error(tmp_path) -> None:
    write_ome_zarr(
        tmp_path / "img.ome.zarr", np.ones((2, 8, 8), np.float32), (1, 1, 1), chunks=(2, 8, 8)
    )
    (tmp_path / "p.csv").write_text("z,y,x\n")
    with pytest.raises(InputDataError, match="no points"):
        make_density_targets(
            tmp_path / "img.ome.zarr",
            tmp_path / "p.csv",
            tmp_path / "t.ome.zarr",
            tmp_path / "w.ome.zarr",
            sample="s",
        )
    assert not (tmp_path / "t.ome.zarr").exists()
