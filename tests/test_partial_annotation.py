"""Partial point annotation for DM-DetNet3D, physical units, and the annotated_region column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fewlabel.config import DensityTargetsConfig, DetectorTrainConfig, PeaksConfig
from fewlabel.config.sheet import load_samples
from fewlabel.detection.density.awing import DensityLoss
from fewlabel.detection.density.partial import click_neighbourhood, load_region
from fewlabel.detection.density.targets import make_density_targets
from fewlabel.detection.density.training import train_detector
from fewlabel.detection.density.tuning import predict_density
from fewlabel.detection.peaks import find_peaks
from fewlabel.detection.sizes import derive_peaks, tuning_gate
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr, write_ome_zarr, write_points_csv
from fewlabel.metrics.detection import evaluate_sample, match_points
from fewlabel.models.store import load_model
from fewlabel.normalize import apply_range, prepare
from fewlabel.synth.spots import spot_volume

torch.set_num_threads(1)


# --------------------------------------------------------------------------- loss mask
def test_loss_ignores_zero_weight_and_pu_term_only_on_unlabelled() -> None:
    torch.manual_seed(0)
    target = torch.zeros(1, 1, 4, 8, 8)
    target[0, 0, 2, 4, 4] = 1.0
    weight = torch.zeros_like(target)
    weight[..., 2:, :, :] = 1.0  # known half
    pred = torch.rand_like(target)
    loss = DensityLoss("awing", prior=0.0)
    base = loss(pred, target, weight)
    other = pred.clone()
    other[..., :2, :, :] = torch.rand(1, 1, 2, 8, 8)  # ignored voxels: any prediction
    assert torch.allclose(loss(other, target, weight), base)
    # the same voxels marked unlabelled (W < 0) now pull predictions towards 0 ...
    weight_u = weight.clone()
    weight_u[..., :2, :, :] = -1.0
    low, high = pred.clone(), pred.clone()
    low[..., :2, :, :] = 0.0
    high[..., :2, :, :] = 0.9
    assert loss(high, target, weight_u) > loss(low, target, weight_u)
    # ... but never below the known-voxel loss: a high prior cancels the risk (clamped at 0)
    lenient = DensityLoss("awing", prior=0.99)
    known_only = DensityLoss("awing")(high, target, weight)
    assert lenient(high, target, weight_u) >= known_only - 1e-6


def test_click_neighbourhood_chunked_equals_whole() -> None:
    pts = np.array([[2.0, 5.5, 7.0], [6.0, 20.0, 3.0]])
    whole = click_neighbourhood((8, 24, 24), pts, (1.5, 3.0, 3.0))
    part = click_neighbourhood((4, 12, 24), pts, (1.5, 3.0, 3.0), origin=(4, 12, 0))
    np.testing.assert_array_equal(part, whole[4:8, 12:24, :])
    assert whole[2, 5, 7] and whole[2, 8, 7] and not whole[2, 9, 7]


def test_click_radius_per_axis_in_um_sets_the_known_ellipsoid(tmp_path) -> None:
    """click_radius_um takes one radius or z, y, x semi-axes (µm), on anisotropic voxels: an
    unclicked spot beside a click lies in the known ring at the default 4 σ (taught as
    background) and outside it, unlabelled, with a ring that ends before it."""
    vs = (0.4, 0.1, 0.1)
    image = str(tmp_path / "img.ome.zarr")
    write_ome_zarr(image, np.zeros((10, 40, 40), np.float32), vs, chunks=(10, 40, 40))
    click = np.array([[5.0, 20.0, 20.0]])
    neighbour = (5, 20, 25)  # an unclicked spot 0.5 µm away along x
    weights = {}
    for key, radius in {"4 sigma": None, "axes": [0.8, 0.3, 0.3], "one": 0.3}.items():
        params = DensityTargetsConfig(sigma=(0.2, 0.15, 0.15), click_radius_um=radius)
        paths = _targets(tmp_path, key.replace(" ", ""), image, click, params)
        weights[key] = np.asarray(open_ome_zarr(paths["weight"]).array[...])
    assert weights["4 sigma"][neighbour] > 0  # known: certain background
    assert weights["axes"][neighbour] < 0  # unlabelled: PU risk, never certain background
    # semi-axes in voxels: z 0.8 / 0.4 = 2 planes, y / x 0.3 / 0.1 = 3 voxels (2.9999… in
    # floats: the voxel on the surface is inside)
    known = weights["axes"] > 0
    assert known[3, 20, 20] and not known[2, 20, 20] and known[5, 20, 23] and not known[5, 20, 24]
    # one radius: a sphere of 0.3 µm, less than one z plane of 0.4 µm
    assert not (weights["one"] > 0)[4, 20, 20] and (weights["one"] > 0)[5, 23, 20]
    with pytest.raises(ValueError, match="click_radius_um"):
        DensityTargetsConfig(click_radius_um=[0.8, 0.3])


# --------------------------------------------------------------------------- half-clicked volume
def _spots(root, name: str, seed: int, shape=(12, 64, 64)):
    synth = spot_volume(shape, snr=6.0, density=500.0, clutter=False, seed=seed)
    vs = (0.2, 0.2, 0.2)
    image_path = str(root / f"{name}.ome.zarr")
    write_ome_zarr(image_path, synth.image.astype(np.float32), vs, chunks=(6, 32, 32))
    return image_path, synth.points[["z", "y", "x"]].to_numpy(float)


def _targets(root, name, image, points, params, region=None) -> dict[str, str]:
    csv = root / f"{name}.csv"
    write_points_csv(pd.DataFrame(points, columns=["z", "y", "x"]), csv)
    paths = {
        "sample": name,
        "image": image,
        "points": str(csv),
        "target": str(root / f"{name}_t.ome.zarr"),
        "weight": str(root / f"{name}_w.ome.zarr"),
    }
    make_density_targets(
        image,
        csv,
        paths["target"],
        paths["weight"],
        params=params,
        sample=name,
        annotated_region=region,
    )
    return paths


def _detect(model_dir, image) -> np.ndarray:
    net = load_model(model_dir, expect="dmdetnet3d")
    volume = open_ome_zarr(image)
    view, lo, hi = prepare(volume.array, net.normalization, volume.voxel_size)  # the model's
    density = predict_density(
        net.module, view, device="cpu", normalise=lambda b: apply_range(b, lo, hi)
    )
    threshold = json.loads((model_dir / "thresholds.json").read_text())["detection_threshold"]
    found = find_peaks(density, threshold=threshold, min_distance=(1, 2, 2))
    return found[["z", "y", "x"]].to_numpy()


def test_half_clicked_volume_trains_to_find_all_spots(tmp_path, capsys) -> None:
    """Half of the training spots clicked, nothing else known: the partial-annotation loss finds
    the unclicked half too; with a fully annotated box on the validation volume the tuned
    threshold does not fire everywhere (precision against all spots)."""
    image, pts = _spots(tmp_path, "train", 1)
    val_image, val_pts = _spots(tmp_path, "val", 2)
    rng = np.random.default_rng(0)
    clicked = rng.random(len(pts)) < 0.5
    # val: half clicked at random, plus every spot of its fully annotated left half (a box)
    val_clicked = (rng.random(len(val_pts)) < 0.5) | (val_pts[:, 2] < 32)
    boxes = tmp_path / "val_region.csv"
    boxes.write_text("z0,y0,x0,z1,y1,x1\n0,0,0,12,64,32\n")
    params = DetectorTrainConfig.model_validate(
        {
            "epochs": 8,
            "steps_per_epoch": 6,
            "batch_size": 4,
            "crop": [8, 32, 32],
            "patience": 8,
            "lr": 3e-3,
            "model": {"base_channels": 4, "depth": 2},
        }
    )
    targets = DensityTargetsConfig(sigma=(0.2, 0.3, 0.3))
    assert targets.annotation == "clicks"  # the default
    train = _targets(tmp_path, "tr", image, pts[clicked], targets)
    val = _targets(tmp_path, "va", val_image, val_pts[val_clicked], targets, str(boxes))
    weight = np.asarray(open_ome_zarr(train["weight"]).array[...])
    assert (weight > 0).any() and (weight < 0).any()  # known and unlabelled voxels
    summary = train_detector([train], [val], tmp_path / "m", params=params, seed=0)
    assert summary["tuned_with"] == "clicks-recall+regions-precision"
    found = _detect(tmp_path / "m", image)
    scale = (0.2, 0.2, 0.2)
    unclicked = match_points(pts[~clicked], found, max_distance=0.6, scale=scale)
    overall = match_points(pts, found, max_distance=0.6, scale=scale)
    n_unclicked = int((~clicked).sum())
    with capsys.disabled():
        print(
            f"\nhalf-clicked training volume: recall on the {n_unclicked} unclicked spots "
            f"{unclicked.recall:.2f}, on all {len(pts)}: {overall.recall:.2f}, precision "
            f"against all spots {overall.precision:.2f}"
        )
    assert unclicked.recall >= 0.8
    assert overall.precision >= 0.5  # the lowest thresholds give 0.2-0.35 here


# --------------------------------------------------------------------------- units
def test_um_settings_equal_voxel_settings_on_isotropic_volume(tmp_path) -> None:
    vs = 0.5
    rng = np.random.default_rng(3)
    image = rng.poisson(10, (8, 32, 32)).astype(np.float32)
    write_ome_zarr(tmp_path / "im.ome.zarr", image, (vs, vs, vs), chunks=(4, 16, 16))
    pts = pd.DataFrame(rng.uniform([1, 2, 2], [7, 30, 30], (5, 3)), columns=["z", "y", "x"])
    write_points_csv(pts, tmp_path / "p.csv")
    maps = {}
    for unit, sigma in (("voxel", (1.0, 1.5, 1.5)), ("um", (0.5, 0.75, 0.75))):
        params = DensityTargetsConfig(sigma=sigma, sigma_unit=unit, annotation="full")
        t, w = tmp_path / f"t_{unit}.ome.zarr", tmp_path / f"w_{unit}.ome.zarr"
        make_density_targets(tmp_path / "im.ome.zarr", tmp_path / "p.csv", t, w, params=params)
        maps[unit] = np.asarray(open_ome_zarr(t).array[...])
    np.testing.assert_allclose(maps["um"], maps["voxel"], atol=1e-6)
    assert maps["um"].max() > 0.9
    peaks_vox = derive_peaks(
        PeaksConfig(min_distance=(1, 2, 2), min_distance_unit="voxel"), None, (vs,) * 3
    )
    peaks_um = derive_peaks(PeaksConfig(min_distance=(0.5, 1.0, 1.0)), None, (vs,) * 3)
    assert tuple(peaks_um.min_distance) == tuple(peaks_vox.min_distance) == (1, 2, 2)
    # gates: 3 voxels == 1.5 µm on 0.5 µm voxels, for evaluation and for tuning
    gt = pts.to_numpy()
    pred = np.clip(gt + rng.normal(0, 1.5, gt.shape), 0, [7.9, 31.9, 31.9])
    write_points_csv(pd.DataFrame(pred, columns=["z", "y", "x"]), tmp_path / "pred.csv")
    gt_csv, pred_csv = tmp_path / "p.csv", tmp_path / "pred.csv"
    a = evaluate_sample(gt_csv, pred_csv, sample="s", gate=3.0, voxel_size=(vs,) * 3)
    b = evaluate_sample(
        gt_csv, pred_csv, sample="s", gate=1.5, gate_unit="um", voxel_size=(vs,) * 3
    )
    assert 0 < a["tp"] < len(gt)
    assert (a["tp"], a["fp"], a["fn"]) == (b["tp"], b["fp"], b["fn"])
    assert tuning_gate(None, "um", {"gate": 1.5, "gate_unit": "um"}) == (1.5, "um")
    assert tuning_gate(3.0, "voxel", {"gate": 1.5, "gate_unit": "um"}) == (3.0, "voxel")


# --------------------------------------------------------------------------- sheet
def _sheet(tmp_path, rows: list[str]):
    (tmp_path / "im.tif").write_bytes(b"x")
    (tmp_path / "p.csv").write_text("z,y,x\n1,2,3\n")
    (tmp_path / "boxes.csv").write_text("z0,y0,x0,z1,y1,x1\n0,0,0,4,10,10\n")
    (tmp_path / "bad.csv").write_text("z,y,x\n1,2,3\n")
    sheet = tmp_path / "s.tsv"
    header = "sample\timage\tsplit\ttask\tpoints\tannotated_region"
    sheet.write_text("\n".join([header, *rows]) + "\n")
    return load_samples(sheet, base_dir=tmp_path)


def test_sheet_mixing_full_and_partial_annotation(tmp_path) -> None:
    sheet = _sheet(
        tmp_path,
        [
            "full1\tim.tif\ttrain\tdetect\tp.csv\tfull",
            "clicks1\tim.tif\ttrain\tdetect\tp.csv\t",
            "none1\tim.tif\ttrain\tdetect\tp.csv\tnone",
            "boxed\tim.tif\tval\tdetect\tp.csv\tboxes.csv",
            "test1\tim.tif\ttest\tdetect\tp.csv\t",
            "test2\tim.tif\ttest\tdetect\tp.csv\tboxes.csv",  # complete inside the box
            "test3\tim.tif\ttest\tdetect\tp.csv\tfull",
        ],
    )
    assert list(sheet["annotated_region"]) == [
        "full", "", "none", "boxes.csv", "", "boxes.csv", "full",
    ]  # fmt: skip
    region = load_region(str(tmp_path / "boxes.csv"), (8, 20, 20))
    assert region.sum() == 4 * 10 * 10 and region[3, 9, 9] and not region[4, 0, 0]
    cases = [
        ("t\tim.tif\tpredict\tdetect\tp.csv\tfull", "on a 'predict'/'detect' row"),
        ("t\tim.tif\ttest\tdetect\tp.csv\tnone", "precision cannot be measured"),
        ("t\tim.tif\ttrain\tsegment\tp.csv\tfull", "on a 'train'/'segment' row"),
        ("t\tim.tif\ttrain\tdetect\tp.csv\tmask.png", "neither 'full', 'none'"),
        ("t\tim.tif\ttrain\tdetect\tp.csv\tmissing.csv", "does not exist"),
        ("t\tim.tif\ttrain\tdetect\tp.csv\tbad.csv", r"lacks column\(s\) \['z0'"),
    ]
    for row, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            _sheet(tmp_path, [row])
        text = str(info.value)
        assert "sample 't'" in text and "annotated_region" in text and "fix" in text.lower()
    with pytest.raises(InputDataError, match="outside the volume"):
        load_region(
            _write(tmp_path / "far.csv", "z0,y0,x0,z1,y1,x1\n0,50,50,2,60,60\n"), (8, 20, 20)
        )


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_roi_limits_unlabelled_voxels(tmp_path) -> None:
    from fewlabel.config import DetectorTrainConfig as _Cfg
    from fewlabel.detection.density.volumes import DetectorItem, load_volume, loss_centres

    rng = np.random.default_rng(1)
    image = rng.poisson(10, (6, 32, 32)).astype(np.float32)
    write_ome_zarr(tmp_path / "im.ome.zarr", image, (0.3, 0.1, 0.1), chunks=(6, 16, 16))
    roi = np.zeros(image.shape, np.uint8)
    roi[:, :, :16] = 1  # particles can only lie in the left half
    write_ome_zarr(tmp_path / "roi.ome.zarr", roi, (0.3, 0.1, 0.1), chunks=(6, 16, 16))
    write_points_csv(pd.DataFrame([[3.0, 16.0, 8.0]], columns=["z", "y", "x"]), tmp_path / "p.csv")
    paths = {k: str(tmp_path / f"{k}.ome.zarr") for k in ("target", "weight")}
    make_density_targets(
        tmp_path / "im.ome.zarr",
        tmp_path / "p.csv",
        paths["target"],
        paths["weight"],
        roi=tmp_path / "roi.ome.zarr",
    )
    weight = np.asarray(open_ome_zarr(paths["weight"]).array[...])
    assert weight[3, 16, 8] > 1  # the click: known, foreground weight lam + 1
    assert (weight[:, :, 16:] == 1).all()  # outside the ROI: background as before
    assert weight[0, 0, 0] == -1.0  # inside the ROI, far from the click: unlabelled
    item = DetectorItem(
        "s",
        str(tmp_path / "im.ome.zarr"),
        paths["target"],
        paths["weight"],
        str(tmp_path / "p.csv"),
    )
    vol = load_volume(item, _Cfg(), training=True)
    assert vol.partial
    centres = loss_centres(vol, seed=0)
    idx = np.rint(centres).astype(int)
    assert (weight[idx[:, 0], idx[:, 1], idx[:, 2]] != 0).all() and len(centres) > 100
