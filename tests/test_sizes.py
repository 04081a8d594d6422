"""detection.object_diameter_um: σ, min_distance and crop derived from the object size."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from fewlabel.cli import main as cli_main
from fewlabel.config import (
    DensityTargetsConfig,
    DetectionConfig,
    DetectorTrainConfig,
    PeaksConfig,
)
from fewlabel.detection import sizes
from fewlabel.detection.density.targets import make_density_targets
from fewlabel.io import open_ome_zarr, write_ome_zarr, write_points_csv

COARSE = (5.0, 2.0, 2.0)
FINE = (0.5, 0.25, 0.25)


def test_rules_per_voxel_size():
    assert DetectionConfig().object_diameter_um is None
    assert sizes.target_sigma_um(10.0) == 2.5
    assert sizes.min_distance_voxels(10.0, COARSE) == (1, 3, 3)  # radius 5 µm, 2.5 -> 3
    assert sizes.min_distance_voxels(10.0, FINE) == (10, 20, 20)
    assert sizes.crop_voxels(10.0, COARSE) == (8, 20, 20)
    assert sizes.crop_voxels(10.0, FINE, minimum=(8, 48, 48), limit=(40, 500, 500)) == (
        40,
        128,
        128,
    )
    assert sizes.crop_voxels(1.0, FINE, minimum=(8, 48, 48)) == (8, 48, 48)  # never smaller


def test_defaults_are_derived_and_explicit_values_win(caplog):
    with caplog.at_level(logging.INFO, logger="fewlabel.detection.sizes"):
        targets = sizes.derive_targets(DensityTargetsConfig(), 10.0, COARSE, sample="brain")
        peaks = sizes.derive_peaks(PeaksConfig(), 10.0, COARSE, sample="brain")
        train = sizes.derive_train(DetectorTrainConfig(), 10.0, [FINE, COARSE], [(40, 300, 300)])
        kept = sizes.derive_targets(
            DensityTargetsConfig(sigma=(1, 2, 2), sigma_unit="voxel"), 10.0, COARSE
        )
        kept_peaks = sizes.derive_peaks(PeaksConfig(min_distance=(0, 1, 1)), 10.0, COARSE)
        kept_train = sizes.derive_train(DetectorTrainConfig(crop=(4, 32, 32)), 10.0, [FINE], [])
    assert targets.sigma == (2.5, 2.5, 2.5) and targets.sigma_unit == "um"
    assert peaks.min_distance == (1, 3, 3)
    assert train.crop == (40, 128, 128)  # finest voxels, capped at 128 and the volume
    assert kept.sigma == (1, 2, 2) and kept.sigma_unit == "voxel"
    assert kept_peaks.min_distance == (0, 1, 1)
    assert kept_train.crop == (4, 32, 32)
    text = caplog.text
    assert "detection.targets.sigma derived from detection.object_diameter_um = 10 µm" in text
    assert "(0.5, 1.25, 1.25) voxels at voxel size (5, 2, 2) µm" in text
    assert "detection.peaks.min_distance derived" in text and "[1, 3, 3] voxels" in text
    assert "detection.train.crop derived" in text and "[40, 128, 128]" in text
    assert "is explicit and kept" in text
    # null diameter: everything as configured, no message
    assert sizes.derive_targets(DensityTargetsConfig(), None, COARSE) == DensityTargetsConfig()


def test_size_warnings(caplog):
    assert sizes.size_warnings((2.0, 2.5, 2.5), 10.0, None) == []
    far = sizes.size_warnings((5.0, 0.3, 0.3), 10.0, None, sample="brain")
    assert len(far) == 1 and "more than 3x away" in far[0] and "2.5 µm" in far[0]
    grid = np.stack(np.meshgrid(*[np.arange(3) * 10.0] * 3, indexing="ij"), -1).reshape(-1, 3)
    spacing = sizes.mean_nearest_neighbour_um(grid, (1.0, 0.5, 0.5))
    assert spacing == pytest.approx(5.0)
    with caplog.at_level(logging.WARNING):
        hint = sizes.size_warnings((0.3, 0.3, 0.3), None, spacing, sample="brain")
    assert len(hint) == 1 and "detection.object_diameter_um" in hint[0]
    assert "sample brain" in caplog.text
    assert sizes.size_warnings((1.0, 1.0, 1.0), None, spacing) == []


def _volume(tmp_path, name="a", voxel=(1.0, 0.5, 0.5)):
    rng = np.random.default_rng(0)
    shape = (6, 24, 28)
    pts = np.array([[3.0, 6.0, 6.0], [3.0, 16.0, 18.0], [2.0, 8.0, 20.0]])
    image = rng.poisson(10, shape).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    for p in pts:
        image += 40 * np.exp(
            -0.5 * (((zz - p[0]) / 0.8) ** 2 + ((yy - p[1]) ** 2 + (xx - p[2]) ** 2))
        )
    paths = {k: str(tmp_path / f"{name}_{k}.ome.zarr") for k in ("image", "target", "weight")}
    paths["points"] = str(tmp_path / f"{name}.csv")
    write_ome_zarr(paths["image"], image, voxel, chunks=(3, 16, 16))
    write_points_csv(pd.DataFrame(pts, columns=["z", "y", "x"]), paths["points"])
    return {"sample": name, **paths}


def test_make_density_targets_derives_sigma(tmp_path):
    item = _volume(tmp_path)
    out = make_density_targets(
        item["image"],
        item["points"],
        item["target"],
        item["weight"],
        params=DensityTargetsConfig(),
        sample="a",
        object_diameter_um=4.0,
    )
    assert out["sigma_voxels"] == [1.0, 2.0, 2.0]  # 1 µm = d/4 at 1 x 0.5 x 0.5 µm voxels
    attrs = open_ome_zarr(item["target"]).attrs["fewlabel"]
    assert attrs["sigma_voxels"] == [1.0, 2.0, 2.0]


def test_extract_points_derives_min_distance(tmp_path):
    density = np.zeros((5, 32, 32), np.float32)
    density[2, 10, 10], density[2, 10, 14] = 0.9, 0.8  # 2 µm apart at 0.5 µm voxels
    path = tmp_path / "d.ome.zarr"
    write_ome_zarr(path, density, (1.0, 0.5, 0.5), chunks=(5, 32, 32))

    def run(*extra):
        out = tmp_path / f"p{len(extra)}.csv"
        args = ["extract_points", "--sample", "s", "--density", str(path), "--threshold", "0.5"]
        assert cli_main([*args, "--output", str(out), *extra]) == 0
        return pd.read_csv(out)

    assert len(run()) == 2  # default min_distance (1, 2, 2)
    assert len(run("--object-diameter-um", "6")) == 1  # radius 3 µm = 6 voxels: one object


def test_train_detector_derives_peaks_and_warns_on_sigma(tmp_path, caplog):
    from fewlabel.detection.density.training import train_detector

    items = []
    for name in ("a", "b"):
        item = _volume(tmp_path, name)
        make_density_targets(
            item["image"], item["points"], item["target"], item["weight"], sample=name
        )
        items.append(item)
    tiny = DetectorTrainConfig.model_validate(
        {
            "epochs": 1,
            "steps_per_epoch": 1,
            "batch_size": 1,
            "crop": [4, 16, 16],
            "model": {"base_channels": 2, "depth": 1},
            "threshold_grid": [0.3],
        }
    )
    with caplog.at_level(logging.INFO):
        summary = train_detector(
            [items[0]], [items[1]], tmp_path / "m", params=tiny, object_diameter_um=12.0
        )
    thresholds = json.loads((tmp_path / "m" / "thresholds.json").read_text())
    assert thresholds["min_distance"] == [6, 12, 12]  # radius 6 µm
    assert thresholds["min_distance_per_sample"] == {"b": [6, 12, 12]}
    # targets made with the default σ (1, 1.5, 1.5) voxels = (1, 0.75, 0.75) µm, d/4 = 3 µm
    assert any("more than 3x away" in w for w in summary["warnings"])
    assert "detection.train.crop = [4, 16, 16] voxels is explicit and kept" in caplog.text
