"""ISL pretraining (label-free -> fluorescence U-Net) and its tiled prediction, on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from fewlabel.cli import main
from fewlabel.config import IslConfig, SegmentationPredictConfig, parse
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.models.store import load_model, load_state
from fewlabel.segmentation.distance.data import pearson
from fewlabel.segmentation.distance.isl import pretrain_isl
from fewlabel.segmentation.distance.predict import predict_isl

TINY_DICT = {
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "crop": [4, 16, 16],
    "model": {"base_channels": 4, "depth": 1},
}
TINY = IslConfig.model_validate(TINY_DICT)


def write_pair(folder, name, *, shape=(6, 24, 24), seed=0, target_shape=None):
    """Blobby nuclei: fluorescence = blurred blobs; label-free = their gradient-like contrast."""
    rng = np.random.default_rng(seed)
    blobs = np.zeros(shape, np.float32)
    for _ in range(4):
        c = [rng.integers(0, s) for s in shape]
        blobs[tuple(c)] = 1.0
    fluo = ndi.gaussian_filter(blobs, (1.0, 3.0, 3.0)) * 100 + rng.normal(0, 0.01, shape)
    lf = 1.0 + ndi.gaussian_filter(fluo, 1.0) - ndi.gaussian_filter(fluo, 3.0)
    lf = lf + rng.normal(0, 0.01, shape)
    image = folder / f"{name}_lf.ome.zarr"
    target = folder / f"{name}_fl.ome.zarr"
    write_ome_zarr(image, lf.astype(np.float32), (1.0, 0.5, 0.5), chunks=(4, 16, 16))
    fl = fluo.astype(np.float32)
    if target_shape is not None:
        fl = np.resize(fl, target_shape)
    write_ome_zarr(target, fl, (1.0, 0.5, 0.5), chunks=(4, 16, 16))
    return {"sample": name, "image": str(image), "target": str(target)}


def test_isl_two_epochs_writes_model_folder_with_pcc(tmp_path):
    train = [write_pair(tmp_path, "a", seed=1)]
    val = [write_pair(tmp_path, "b", seed=2)]
    summary = pretrain_isl(train, val, tmp_path / "isl", params=TINY, seed=0, threads=1)
    folder = tmp_path / "isl"
    for name in (
        "weights.pt",
        "weights_last.pt",
        "model.json",
        "training.json",
        "normalization.json",
        "curve.tsv",
        "curve.png",
    ):
        assert (folder / name).exists(), name
    curve = pd.read_csv(folder / "curve.tsv", sep="\t")
    assert list(curve["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "val_pcc"} <= set(curve.columns)
    assert set(summary["val_pcc_per_image"]) == {"b"}
    # the reported validation PCC is the PCC of the saved model's prediction of the whole image
    out = tmp_path / "b_pred.ome.zarr"
    predict_isl(
        folder,
        val[0]["image"],
        out,
        params=SegmentationPredictConfig(tile=(6, 24, 24), overlap=(0, 0, 0)),
        sample="b",
    )
    recomputed = pearson(
        np.asarray(open_ome_zarr(out).array[...]),
        np.asarray(open_ome_zarr(val[0]["target"]).array[...]),
    )
    assert summary["val_pcc_per_image"]["b"] == pytest.approx(recomputed, abs=1e-3)
    best = curve.loc[curve["val_loss"].idxmin()]  # the saved weights: lowest validation L1
    assert best["val_pcc"] == pytest.approx(recomputed, abs=1e-3)
    loaded = load_model(folder, expect="unet")
    assert loaded.arch["kwargs"]["dims"] == 3 and loaded.arch["kwargs"]["out_channels"] == 1
    assert loaded.normalization["mode"] == "volume"
    assert loaded.normalization["percentiles"] == [1.0, 99.8]


def test_isl_is_deterministic_with_seed(tmp_path):
    train = [write_pair(tmp_path, "a", seed=1)]
    runs = []
    for k in range(2):
        pretrain_isl(train, [], tmp_path / f"m{k}", params=TINY, seed=7, threads=1)
        runs.append(load_state(tmp_path / f"m{k}" / "weights_last.pt"))
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_target_shape_mismatch_names_sample_and_shapes(tmp_path):
    bad = write_pair(tmp_path, "oops", target_shape=(6, 24, 20))
    with pytest.raises(InputDataError) as info:
        pretrain_isl([bad], [], tmp_path / "isl", params=TINY, seed=0, threads=1)
    message = str(info.value)
    assert "oops" in message and "(6, 24, 20)" in message and "(6, 24, 24)" in message


def test_params_reject_unknown_keys():
    with pytest.raises(ConfigError, match=r"'segmentation.isl.epochz': unknown key"):
        parse(IslConfig, {"epochz": 3})
    with pytest.raises(ConfigError, match=r"'segmentation.isl.model.width': unknown key"):
        parse(IslConfig, {"model": {"width": 3}})
    with pytest.raises(ConfigError, match=r"'segmentation.isl.dims'"):
        parse(IslConfig, {"dims": 4})
    assert IslConfig.model_validate({"crop": [2, 8, 8]}).crop == (2, 8, 8)
    assert IslConfig().model.base_channels == 8 and IslConfig().patience == 25


def test_predict_isl_tiled_matches_shape_and_tracks_target(tmp_path):
    train = [write_pair(tmp_path, "a", seed=1)]
    longer = TINY.model_copy(update={"epochs": 6, "steps_per_epoch": 4})
    pretrain_isl(train, [], tmp_path / "isl", params=longer, seed=0, threads=1)
    out = tmp_path / "pred.ome.zarr"
    predict_isl(
        tmp_path / "isl",
        train[0]["image"],
        out,
        params=SegmentationPredictConfig(tile=(4, 16, 16), overlap=(2, 8, 8)),
        sample="a",
    )
    pred = open_ome_zarr(out)
    assert pred.shape == (6, 24, 24) and pred.array.dtype == np.float32
    assert pred.voxel_size == (1.0, 0.5, 0.5)
    values = np.asarray(pred.array[...])
    assert np.isfinite(values).all()
    target = np.asarray(open_ome_zarr(train[0]["target"]).array[...])
    assert pearson(values, target) > 0.3  # learned something on its own training image


def test_planes_as_channels_2d_cli(tmp_path):
    """2D mode: a 5-plane label-free stack -> one fluorescence plane, through the CLI stages."""
    rng = np.random.default_rng(0)
    fluo = ndi.gaussian_filter(rng.random((1, 24, 24)).astype(np.float32), (0, 2, 2))
    planes = np.concatenate([ndi.gaussian_filter(fluo, (0, s, s)) for s in (0.5, 1, 2, 3, 4)])
    write_ome_zarr(tmp_path / "lf.ome.zarr", planes, (1.0, 0.5, 0.5), chunks=(5, 16, 16))
    write_ome_zarr(tmp_path / "fl.ome.zarr", fluo, (1.0, 0.5, 0.5), chunks=(1, 16, 16))
    items = [
        {
            "sample": "p",
            "image": str(tmp_path / "lf.ome.zarr"),
            "target": str(tmp_path / "fl.ome.zarr"),
        }
    ]
    (tmp_path / "train.json").write_text(json.dumps(items))
    params = {**TINY_DICT, "dims": 2}
    assert (
        main(
            [
                "pretrain_isl",
                "--train-json",
                str(tmp_path / "train.json"),
                "--val-json",
                "",
                "--out-dir",
                str(tmp_path / "isl2d"),
                "--params",
                json.dumps(params),
            ]
        )
        == 0
    )
    loaded = load_model(tmp_path / "isl2d", expect="unet")
    assert loaded.arch["kwargs"]["dims"] == 2 and loaded.arch["kwargs"]["in_channels"] == 5
    assert loaded.normalization["mode"] == "planes_as_channels"
    assert (
        main(
            [
                "predict_isl",
                "--model-dir",
                str(tmp_path / "isl2d"),
                "--image",
                str(tmp_path / "lf.ome.zarr"),
                "--output",
                str(tmp_path / "p.ome.zarr"),
                "--params",
                '{"tile": [1, 16, 16], "overlap": [0, 4, 4]}',
            ]
        )
        == 0
    )
    assert open_ome_zarr(tmp_path / "p.ome.zarr").shape == (1, 24, 24)
    # a 3-plane image cannot go through a 5-plane model: clear error, exit code 2
    write_ome_zarr(tmp_path / "lf3.ome.zarr", planes[:3], (1.0, 0.5, 0.5), chunks=(3, 16, 16))
    assert (
        main(
            [
                "predict_isl",
                "--model-dir",
                str(tmp_path / "isl2d"),
                "--image",
                str(tmp_path / "lf3.ome.zarr"),
                "--output",
                str(tmp_path / "q.ome.zarr"),
            ]
        )
        == 2
    )
