"""Segmenter (mask + distance) training: targets, ISL / scratch init, errors, end-to-end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from fewlabel.cli import main
from fewlabel.config import IslConfig, SegmentationPredictConfig, SegmenterTrainConfig, parse
from fewlabel.errors import ConfigError, InputDataError, ModelError
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.models.store import load_model
from fewlabel.segmentation.distance.annotated import instance_targets
from fewlabel.segmentation.distance.isl import pretrain_isl
from fewlabel.segmentation.distance.predict import predict_segmentation
from fewlabel.segmentation.distance.segmenter import (
    _build_segmenter,
    build_segmenter_loss,
    train_segmenter,
)
from fewlabel.segmentation.distance.tuning import H_GRID

TINY = {
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "crop": [4, 16, 16],
    "model": {"base_channels": 4, "depth": 1},
}


def seg_params(**changes) -> SegmenterTrainConfig:
    return SegmenterTrainConfig.model_validate({**TINY, **changes})


VOXEL = (1.0, 0.5, 0.5)


def write_sample(folder, name, *, shape=(6, 24, 24), seed=0, empty=False):
    """Touching ellipsoid-ish cells: labels, fluorescence, label-free contrast."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    if not empty:
        for k in range(3):
            cz, cy, cx = shape[0] // 2, rng.integers(5, shape[1] - 5), rng.integers(5, shape[2] - 5)
            inside = ((zz - cz) / 2.5) ** 2 + ((yy - cy) / 5.0) ** 2 + ((xx - cx) / 5.0) ** 2 <= 1
            labels[inside & (labels == 0)] = k + 1
    fluo = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0) * 100
    lf = 1 + ndi.gaussian_filter(fluo, 1) - ndi.gaussian_filter(fluo, 3)
    lf = (lf + rng.normal(0, 0.05, shape)).astype(np.float32)
    paths = {k: folder / f"{name}_{k}.ome.zarr" for k in ("lf", "fl", "lab")}
    write_ome_zarr(paths["lf"], lf, VOXEL, chunks=(6, 24, 24))
    write_ome_zarr(
        paths["fl"],
        fluo.astype(np.float32) + rng.normal(0, 0.5, shape).astype(np.float32),
        VOXEL,
        chunks=(6, 24, 24),
    )
    write_ome_zarr(paths["lab"], labels, VOXEL, chunks=(6, 24, 24))
    return {
        "sample": name,
        "image": str(paths["lf"]),
        "target": str(paths["fl"]),
        "labels": str(paths["lab"]),
    }


def isl_item(s):
    return {k: s[k] for k in ("sample", "image", "target")}


def seg_item(s):
    return {k: s[k] for k in ("sample", "image", "labels")}


@pytest.fixture(scope="module")
def isl_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg")
    a = write_sample(folder, "a", seed=1)
    b = write_sample(folder, "b", seed=2)
    pretrain_isl(
        [isl_item(a)],
        [isl_item(b)],
        folder / "isl",
        params=IslConfig.model_validate(TINY),
        seed=0,
        threads=1,
    )
    return folder, a, b


def test_instance_targets_distance_per_object():
    labels = np.zeros((1, 9, 16), np.uint16)
    labels[0, 1:8, 1:8] = 1
    labels[0, 1:8, 8:15] = 2  # touching object
    targets = instance_targets(labels, (1.0, 1.0, 1.0))
    mask, dist = targets
    assert targets.shape == (2, 1, 9, 16) and targets.dtype == np.float32
    assert np.array_equal(mask, labels > 0)
    assert dist[labels == 0].max() == 0
    for k in (1, 2):
        assert dist[labels == k].max() == pytest.approx(1.0)
        assert dist[labels == k].min() > 0
    # the touching border is a valley, the centres are peaks
    assert dist[0, 4, 7] < dist[0, 4, 4] and dist[0, 4, 8] < dist[0, 4, 11]
    # anisotropic sampling changes the (unnormalised) shape of the map
    aniso = instance_targets(labels, (1.0, 1.0, 3.0))[1]
    assert not np.allclose(aniso, dist)


def test_isl_init_loads_pretrained_body_and_scratch_does_not(isl_setup):
    folder, a, _ = isl_setup
    isl = load_model(folder / "isl", expect="unet").module.state_dict()
    torch.manual_seed(0)
    model, kwargs, info = _build_segmenter(seg_params(), folder / "isl", None, "cpu")
    body = model.body.state_dict()
    assert info["init"] == "isl" and kwargs["base_channels"] == 4
    assert all(torch.equal(body[k], isl[k]) for k in isl)
    scratch, _, info = _build_segmenter(seg_params(init="scratch"), folder / "isl", None, "cpu")
    assert info["init"] == "scratch"
    name = "encoder.0.block.0.weight"
    assert not torch.equal(scratch.body.state_dict()[name], isl[name])


def test_isl_of_other_dims_is_a_model_error(isl_setup):
    folder, _, _ = isl_setup
    with pytest.raises(ModelError, match="3D but the segmenter is configured as 2D"):
        _build_segmenter(seg_params(dims=2), folder / "isl", 1, "cpu")


def test_isl_init_without_folder_falls_back_to_scratch(tmp_path, isl_setup):
    _, a, _ = isl_setup
    summary = train_segmenter(
        [seg_item(a)], [], tmp_path / "seg", params=seg_params(), init_from=""
    )
    training = json.loads((tmp_path / "seg" / "training.json").read_text())
    assert summary["init"] == "scratch" and training["init_requested"] == "isl"
    assert training["init_from"] is None


def test_empty_training_mask_names_the_sample(tmp_path, isl_setup):
    folder, _, _ = isl_setup
    empty = write_sample(tmp_path, "blank", empty=True)
    with pytest.raises(InputDataError) as info:
        train_segmenter(
            [seg_item(empty)], [], tmp_path / "seg", params=seg_params(), init_from=folder / "isl"
        )
    assert "blank" in str(info.value) and "no objects" in str(info.value)


def test_params_validate_loss_and_init():
    with pytest.raises(ConfigError, match=r"'segmentation.train.init'"):
        parse(SegmenterTrainConfig, {"init": "imagenet"})
    with pytest.raises(ConfigError, match=r"'segmentation.train.loss'"):
        parse(SegmenterTrainConfig, {"loss": "hinge"})
    with pytest.raises(ConfigError, match=r"'segmentation.train.loss_params'.*bogus"):
        parse(SegmenterTrainConfig, {"loss": "dice", "loss_params": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"'segmentation.train.loss_params'.*mask_loss"):
        parse(SegmenterTrainConfig, {"loss_params": {"mask_loss": "mask_distance"}})
    with pytest.raises(ConfigError, match=r"'segmentation.train.model.head_kernel'"):
        parse(SegmenterTrainConfig, {"model": {"head_kernel": 5}})
    params = SegmenterTrainConfig(loss="focal_tversky", loss_params={"beta": 0.8})
    assert build_segmenter_loss(params).mask_loss.params == {"beta": 0.8}


def test_end_to_end_pretrain_finetune_predict(tmp_path, isl_setup):
    folder, a, b = isl_setup
    c = write_sample(tmp_path, "c", seed=3)
    summary = train_segmenter(
        [seg_item(a), seg_item(c)],
        [seg_item(b)],
        tmp_path / "seg",
        params=seg_params(),
        init_from=folder / "isl",
        seed=0,
        threads=1,
    )
    assert summary["n_train_images"] == 2 and summary["init"] == "isl"
    loaded = load_model(tmp_path / "seg", expect="segmenter")  # rebuilt from model.json alone
    assert 0 < loaded.thresholds["mask_threshold"] < 1
    # h tuned on the whole validation image: the best of the grid by instance F1@0.5
    curve = loaded.thresholds["h_curve"]
    assert [row["h"] for row in curve] == list(H_GRID) and summary["h"] in H_GRID
    best = max(row["f1_50"] for row in curve)
    assert loaded.thresholds["h_f1_50"] == best and loaded.thresholds["h_tuned_on"] == "val"
    assert all(row["tp"] + row["fn"] == curve[0]["tp"] + curve[0]["fn"] for row in curve)
    assert loaded.arch["kwargs"]["head_channels"] == 8
    out = tmp_path / "pred.ome.zarr"
    predict_segmentation(
        tmp_path / "seg",
        b["image"],
        out,
        sample="b",
        params=SegmentationPredictConfig(tile=(4, 16, 16), overlap=(2, 8, 8)),
    )
    pred = open_ome_zarr(out)
    assert pred.shape == (2, 6, 24, 24) and pred.array.dtype == np.float32
    values = np.asarray(pred.array[...])
    assert np.isfinite(values).all()
    assert values[0].min() >= 0.0 and values[0].max() <= 1.0  # channel 0 = mask probability


def test_cli_2d_scratch_segmenter(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.zeros((1, 24, 24), np.uint16)
    labels[0, 3:10, 3:10] = 1
    labels[0, 12:20, 10:21] = 2
    fluo = ndi.gaussian_filter((labels > 0).astype(np.float32), (0, 1, 1))
    planes = np.concatenate([ndi.gaussian_filter(fluo, (0, s, s)) for s in (0.5, 1.5, 3)])
    planes = planes + rng.normal(0, 0.02, planes.shape).astype(np.float32)
    write_ome_zarr(tmp_path / "lf.ome.zarr", planes, VOXEL, chunks=(3, 24, 24))
    write_ome_zarr(tmp_path / "lab.ome.zarr", labels, VOXEL, chunks=(1, 24, 24))
    items = json.dumps(
        [
            {
                "sample": "two_d",
                "image": str(tmp_path / "lf.ome.zarr"),
                "labels": str(tmp_path / "lab.ome.zarr"),
            }
        ]
    )
    params = json.dumps({**TINY, "dims": 2, "init": "scratch", "loss": "dice"})
    assert (
        main(
            [
                "train_segmenter",
                "--train-json",
                items,
                "--out-dir",
                str(tmp_path / "seg"),
                "--init-from",
                "",
                "--params",
                params,
            ]
        )
        == 0
    )
    predict = [
        "predict_segmentation",
        "--model-dir",
        str(tmp_path / "seg"),
        "--image",
        str(tmp_path / "lf.ome.zarr"),
        "--output",
        str(tmp_path / "p.ome.zarr"),
    ]
    # 24 x 24 planes are smaller than the default 96 x 96 tile: an error naming the fix ...
    assert main(predict) == 2
    err = capsys.readouterr().err
    assert "smaller than one tile" in err and "pad_to_tile" in err and "lf.ome.zarr" in err
    assert not (tmp_path / "p.ome.zarr").exists()
    # ... unless padding is asked for
    assert main([*predict, "--params", json.dumps({"pad_to_tile": True})]) == 0
    assert open_ome_zarr(tmp_path / "p.ome.zarr").shape == (2, 1, 24, 24)


def test_report_shows_real_thresholds_as_tables_and_curves_without_seconds(tmp_path, isl_setup):
    """On the files a real training writes: the tuned-thresholds table has numbers, each curve
    of thresholds.json is its own table (no raw JSON lists), and the training-curve panels plot
    losses and scores only (no wall-clock seconds on the scores axis)."""
    import pandas as pd

    from fewlabel.report.figures import curve_panels
    from fewlabel.report.sections import _model_context

    folder, a, b = isl_setup
    train_segmenter(
        [seg_item(a)],
        [seg_item(b)],
        tmp_path / "seg",
        params=seg_params(),
        init_from=folder / "isl",
        seed=0,
        threads=1,
    )
    for model, score in ((folder / "isl", "val_pcc"), (tmp_path / "seg", "val_dice")):
        curve = pd.read_csv(model / "curve.tsv", sep="\t")
        assert "seconds" in curve.columns  # the real file has it ...
        losses, scores = curve_panels(curve)
        assert not {"seconds", "epoch"} & {*losses, *scores}  # ... but it is not plotted
        assert "train_loss" in losses and score in scores
    context = _model_context(tmp_path / "seg", "segmentation model")
    cells = {row["cells"][0]: row["cells"][1] for row in context["thresholds"]["rows"]}
    thresholds = json.loads((tmp_path / "seg" / "thresholds.json").read_text())
    assert float(cells["mask_threshold"]) == pytest.approx(thresholds["mask_threshold"])
    assert "dice_curve" not in cells and "h_curve" not in cells
    assert not any("[" in v or "{" in v for v in cells.values())  # no raw JSON
    curves = {c["name"]: c["table"] for c in context["threshold_curves"]}
    assert set(curves) == {"dice_curve", "h_curve"}
    dice = curves["dice_curve"]
    assert dice["columns"] == ["chosen", "threshold", "dice"]
    assert len(dice["rows"]) == len(thresholds["dice_curve"])
    chosen = [r for r in dice["rows"] if r["highlight"]]
    assert len(chosen) == 1 and float(chosen[0]["cells"][1]) == thresholds["mask_threshold"]
    assert curves["h_curve"]["columns"][:3] == ["chosen", "h", "f1_50"]
