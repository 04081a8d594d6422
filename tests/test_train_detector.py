"""Training utilities and the DM-DetNet3D trainer on tiny real Zarr files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fewlabel.cli import main as cli_main
from fewlabel.config import DensityTargetsConfig, DetectorTrainConfig, PeaksConfig, parse
from fewlabel.detection.density.targets import make_density_targets
from fewlabel.detection.density.training import train_detector
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import write_ome_zarr, write_points_csv
from fewlabel.models.store import load_model
from fewlabel.sampling import CropSampler, CropVolume
from fewlabel.training import CurveLogger, EarlyStopping

torch.set_num_threads(1)

TINY_DICT = {
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "crop": [8, 16, 16],
    "patience": 5,
    "model": {"base_channels": 2, "depth": 1},
    "threshold_grid": [0.1, 0.3, 0.5],
}
TINY = DetectorTrainConfig.model_validate(TINY_DICT)


# --------------------------------------------------------------------------- common utilities
def test_crop_sampler_is_deterministic_flips_and_pads() -> None:
    image = np.arange(4 * 10 * 12, dtype=np.float32).reshape(4, 10, 12)
    weight = np.ones_like(image)
    volume = CropVolume([image, weight], name="v", transforms=[lambda a: a * 2, None])
    a = CropSampler([volume], (6, 8, 8), seed=3, pad_values=[None, 0.0]).sample(5)
    b = CropSampler([volume], (6, 8, 8), seed=3, pad_values=[None, 0.0]).sample(5)
    c = CropSampler([volume], (6, 8, 8), seed=4, pad_values=[None, 0.0]).sample(5)
    assert a[0].shape == (5, 6, 8, 8) and a[0].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    # z is 4 < 6: the image is mirror-padded, the weight padded with 0
    np.testing.assert_array_equal(a[1][:, 4:], 0.0)
    np.testing.assert_array_equal(a[1][:, :4], 1.0)
    np.testing.assert_array_equal(np.sort(a[0][:, 4:6].ravel()), np.sort(a[0][:, 2:4].ravel()))
    # every crop is the (transformed) image content, possibly flipped in y/x
    crops = CropSampler([volume], (4, 8, 8), seed=0).sample(40)[0]
    flipped_y = [not np.all(np.diff(c, axis=1) > 0) for c in crops]
    assert any(flipped_y) and not all(flipped_y)
    assert np.all(np.isin(crops, image * 2))


def test_point_centred_crops_contain_points() -> None:
    image = np.zeros((8, 64, 64), np.float32)
    centres = np.array([[4.0, 50.0, 10.0]])
    image[4, 50, 10] = 1.0
    volume = CropVolume([image], centres=centres)
    crops = CropSampler([volume], (4, 16, 16), seed=0, point_fraction=1.0).sample(20)[0]
    assert np.all(crops.reshape(20, -1).max(axis=1) == 1.0)


def test_early_stopping_and_curve(tmp_path) -> None:
    stop = EarlyStopping(patience=2)
    assert stop.step(1.0, 1) and not stop.step(1.0, 2) and not stop.should_stop
    assert not stop.step(1.5, 3) and stop.should_stop and stop.best_epoch == 1
    curve = CurveLogger(tmp_path / "c.tsv", tmp_path / "c.png")
    curve.log(epoch=1, train_loss=2.0, val_loss=3.0)
    curve.log(epoch=2, train_loss=1.0, val_loss=2.0)
    assert list(pd.read_csv(tmp_path / "c.tsv", sep="\t")["val_loss"]) == [3.0, 2.0]
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_train_params_from_config_section() -> None:
    params = DetectorTrainConfig.model_validate(
        {"crop": [4, 8, 8], "awing": {"theta": 0.4}, "model": {"pool_z": True}}
    )
    assert params.crop == (4, 8, 8) and params.awing.theta == 0.4 and params.model.pool_z
    assert params.awing.alpha == 2.1 and params.loss == "awing"
    assert params.model.base_channels == 8  # one default for the width, whatever else is set
    assert json.loads(json.dumps(params.model_dump(mode="json")))["crop"] == [4, 8, 8]
    with pytest.raises(ConfigError, match=r"config key 'detection.train.epoch': unknown key"):
        parse(DetectorTrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match=r"'detection.train.model.channels': unknown key"):
        parse(DetectorTrainConfig, {"model": {"channels": 3}})
    with pytest.raises(ConfigError, match=r"'detection.train.loss'"):
        parse(DetectorTrainConfig, {"loss": "l1"})
    with pytest.raises(ConfigError, match=r"'detection.train.min_distance': unknown key"):
        parse(DetectorTrainConfig, {"min_distance": [1, 2, 2]})  # lives in detection.peaks


# --------------------------------------------------------------------------- trainer
def _make_sample(root, name: str, seed: int, *, n_points: int = 6) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    shape = (6, 24, 28)
    pts = rng.uniform([1, 3, 3], [5, 21, 25], size=(n_points, 3))
    image = rng.poisson(10, shape).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    for p in pts:
        image += 40 * np.exp(
            -0.5 * (((zz - p[0]) / 0.8) ** 2 + ((yy - p[1]) / 1.2) ** 2 + ((xx - p[2]) / 1.2) ** 2)
        )
    paths = {k: str(root / f"{name}_{k}.ome.zarr") for k in ("image", "target", "weight")}
    paths["points"] = str(root / f"{name}.csv")
    write_ome_zarr(paths["image"], image, (1.0, 0.5, 0.5), chunks=(3, 16, 16))
    write_points_csv(pd.DataFrame(pts, columns=["z", "y", "x"]), paths["points"])
    make_density_targets(
        paths["image"],
        paths["points"],
        paths["target"],
        paths["weight"],
        params=DensityTargetsConfig(sigma=(1.0, 1.5, 1.5), sigma_unit="voxel", annotation="full"),
        sample=name,
    )
    return {"sample": name, **paths}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector")
    return root, _make_sample(root, "a", 1), _make_sample(root, "b", 2)


def test_train_detector_writes_folder_and_is_deterministic(samples) -> None:
    root, train, val = samples
    summary = train_detector([train], [val], root / "m1", params=TINY, seed=5, threads=1)
    folder = root / "m1"
    for name in (
        "weights.pt",
        "weights_last.pt",
        "model.json",
        "training.json",
        "thresholds.json",
        "normalization.json",
        "curve.tsv",
        "curve.png",
    ):
        assert (folder / name).is_file(), name
    trained_on = json.loads((folder / "training.json").read_text())["provenance"]["environment"]
    assert trained_on["cpu"] and trained_on["cpu_capability"]  # floats differ between CPU types
    curve = pd.read_csv(folder / "curve.tsv", sep="\t")
    assert list(curve["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss"} <= set(curve.columns)
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert thresholds["detection_threshold"] in (0.1, 0.3, 0.5)
    assert [r["threshold"] for r in thresholds["f1_curve"]] == [0.1, 0.3, 0.5]
    # the chosen threshold is the one with the best validation F1 on the curve it reports
    best = max(thresholds["f1_curve"], key=lambda r: r["f1"])
    assert thresholds["val_f1"] == best["f1"]
    chosen = next(
        r for r in thresholds["f1_curve"] if r["threshold"] == thresholds["detection_threshold"]
    )
    assert chosen["f1"] == thresholds["val_f1"]
    assert summary["val_f1"] == thresholds["val_f1"]
    loaded = load_model(folder, expect="dmdetnet3d")
    assert loaded.normalization == {  # the default recipe, repeated by the tiled engine
        "method": "percentile",
        "percentiles": [1.0, 99.8],
        "per_volume": True,
    }
    assert loaded.training["params"]["model"]["base_channels"] == 2
    assert loaded.training["epochs_run"] == 2
    assert loaded.training["voxel_size_um"] == [1.0, 0.5, 0.5]  # the grid prediction uses
    # the threshold was tuned with detection.peaks, recorded for extract_points: the default
    # (0.3, 0.2, 0.2) µm is (0, 0, 0) voxels of 1 x 0.5 x 0.5 µm (rounded)
    assert loaded.training["peaks"]["min_distance"] == [0.3, 0.2, 0.2]
    assert thresholds["min_distance"] == [0, 0, 0]
    assert thresholds["gate"] == 0.5 and thresholds["gate_unit"] == "um"  # evaluation's
    assert thresholds["tuned_with"] == "full"

    # same seed through the CLI -> identical weights; another seed -> different weights
    code = cli_main(
        [
            "train_detector",
            "--train-json",
            json.dumps([train]),
            "--val-json",
            json.dumps([val]),
            "--out-dir",
            str(root / "m2"),
            "--params",
            json.dumps(TINY_DICT),
            "--peaks",
            "{}",
            "--seed",
            "5",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    w1 = torch.load(folder / "weights.pt", weights_only=True)
    w2 = torch.load(root / "m2" / "weights.pt", weights_only=True)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    train_detector(
        [train],
        [val],
        root / "m3",
        params=TINY,
        peaks=PeaksConfig(min_distance=(1, 3, 3), min_distance_unit="voxel"),
        seed=6,
        threads=1,
    )
    assert json.loads((root / "m3" / "thresholds.json").read_text())["min_distance"] == [1, 3, 3]
    w3 = torch.load(root / "m3" / "weights.pt", weights_only=True)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_empty_training_points_is_a_clear_error(samples, tmp_path) -> None:
    _root, train, val = samples
    empty = tmp_path / "empty.csv"
    empty.write_text("z,y,x\n")
    with pytest.raises(InputDataError, match="no points") as info:
        train_detector([{**train, "points": str(empty)}], [val], tmp_path / "m", params=TINY)
    assert "sample 'a'" in str(info.value)
    with pytest.raises(ConfigError, match="no samples with points in the train split"):
        train_detector([], [val], tmp_path / "m", params=TINY)
    assert not (tmp_path / "m").exists()


def test_cli_make_density_targets(samples, tmp_path) -> None:
    _root, train, _val = samples
    code = cli_main(
        [
            "make_density_targets",
            "--sample",
            "a",
            "--image",
            train["image"],
            "--points",
            train["points"],
            "--target",
            str(tmp_path / "t.ome.zarr"),
            "--weight",
            str(tmp_path / "w.ome.zarr"),
            "--params",
            '{"sigma": [1.0, 1.5, 1.5], "lam": 10, "T": 0.2}',
        ]
    )
    assert code == 0
    assert (tmp_path / "t.ome.zarr").is_dir() and (tmp_path / "w.ome.zarr").is_dir()
    code = cli_main(
        [
            "make_density_targets",
            "--sample",
            "a",
            "--image",
            train["image"],
            "--points",
            train["points"],
            "--target",
            str(tmp_path / "t2.ome.zarr"),
            "--weight",
            str(tmp_path / "w2.ome.zarr"),
            "--params",
            '{"sigm": 1}',
        ]
    )
    assert code == 2


def test_select_f1_picks_the_epoch_with_the_best_validation_f1(samples) -> None:
    root, train, val = samples
    params = DetectorTrainConfig.model_validate({**TINY_DICT, "epochs": 4, "select": "f1"})
    summary = train_detector([train], [val], root / "f1", params=params, seed=5, threads=1)
    curve = pd.read_csv(root / "f1" / "curve.tsv", sep="\t")
    assert {"val_loss", "val_f1", "val_error"} <= set(curve.columns)
    np.testing.assert_allclose(
        curve["val_error"], 1 - curve["val_f1"] + 1e-4 * curve["val_loss"], rtol=1e-6
    )
    best = curve.loc[curve["val_error"].idxmin()]
    assert best["val_f1"] == curve["val_f1"].max()
    loaded = load_model(root / "f1", expect="dmdetnet3d")
    assert loaded.training["best_epoch"] == int(best["epoch"])
    assert loaded.training["params"]["select"] == "f1"
    # the saved weights are the selected epoch's: their tuned F1 is the curve's best
    assert summary["val_f1"] == pytest.approx(best["val_f1"])


def test_init_from_starts_at_the_other_models_weights_and_checks_they_fit(samples) -> None:
    root, train, val = samples
    train_detector([train], [val], root / "pre", params=TINY, seed=5, threads=1)
    slow = DetectorTrainConfig.model_validate({**TINY_DICT, "epochs": 1, "lr": 1e-9})
    train_detector(
        [train], [val], root / "tuned", params=slow, seed=9, threads=1, init_from=root / "pre"
    )
    pre = torch.load(root / "pre" / "weights.pt", weights_only=True)
    tuned = torch.load(root / "tuned" / "weights.pt", weights_only=True)
    weights = [k for k in pre if pre[k].is_floating_point() and "running" not in k]
    assert all(torch.allclose(pre[k], tuned[k], atol=1e-5) for k in weights)
    loaded = load_model(root / "tuned", expect="dmdetnet3d")
    assert loaded.training["init_from"] == str(root / "pre")
    # the config key (detection.train.init_from) does the same
    keyed = DetectorTrainConfig.model_validate(
        {**TINY_DICT, "epochs": 1, "lr": 1e-9, "init_from": str(root / "pre")}
    )
    train_detector([train], [val], root / "keyed", params=keyed, seed=9, threads=1)
    again = torch.load(root / "keyed" / "weights.pt", weights_only=True)
    assert all(torch.equal(tuned[k], again[k]) for k in weights)
    wider = DetectorTrainConfig.model_validate({**TINY_DICT, "model": {"base_channels": 3}})
    with pytest.raises(ConfigError, match="architecture"):
        train_detector([train], [val], root / "x", params=wider, init_from=root / "pre")
    robust = DetectorTrainConfig.model_validate({**TINY_DICT, "normalisation": {"mode": "robust"}})
    with pytest.raises(ConfigError, match="normalised"):
        train_detector([train], [val], root / "y", params=robust, init_from=root / "pre")


def test_ensemble_and_mirroring_tune_record_and_predict_one_network(samples) -> None:
    """ensemble: 2 + mirror: member i is the training with seed + i; the threshold is tuned on
    the mirrored mean of both, which the folder records and the tiled engine predicts with."""
    from fewlabel.config import DetectionPredictConfig
    from fewlabel.detection.density.tuning import tune_threshold
    from fewlabel.detection.density.volumes import DetectorItem, load_volume
    from fewlabel.detection.sizes import derive_peaks
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import open_ome_zarr
    from fewlabel.models.compose import Mirrored, compose
    from fewlabel.normalize import apply_range, prepare

    root, train, val = samples
    params = TINY.model_copy(update={"ensemble": 2, "mirror": True})
    summary = train_detector([train], [val], root / "ens", params=params, seed=5, threads=1)
    for seed in (5, 6):
        train_detector([train], [val], root / f"one{seed}", params=TINY, seed=seed, threads=1)
    folder = root / "ens"
    for name, single in (("weights.pt", "one5"), ("weights_member1.pt", "one6")):
        mine = torch.load(folder / name, weights_only=True)
        theirs = torch.load(root / single / "weights.pt", weights_only=True)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    assert json.loads((folder / "model.json").read_text())["inference"] == {
        "members": 2,
        "mirror_axes": ["y", "x"],
    }
    assert [m["seed"] for m in summary["members"]] == [5, 6]
    assert (folder / "curve_member1.tsv").is_file() and (folder / "curve_member1.png").is_file()
    for name, single in (("weights_last.pt", "one5"), ("weights_last_member1.pt", "one6")):
        mine = torch.load(folder / name, weights_only=True)  # every member's last epoch
        theirs = torch.load(root / single / "weights_last.pt", weights_only=True)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name

    loaded = load_model(folder, expect="dmdetnet3d")
    assert isinstance(loaded.module, Mirrored)
    members = [load_model(root / f"one{s}").module for s in (5, 6)]
    x = torch.randn(1, 1, 6, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), compose(members, ["y", "x"])(x))

    # thresholds.json is the sweep of the composed network, not of member 0 alone
    vol = load_volume(DetectorItem.coerce(val, 0), params, training=False)
    peaks = {"b": derive_peaks(PeaksConfig(), None, vol.voxel_size, sample="b")}
    grid = tuple(loaded.training["voxel_size_um"])
    sweeps = [
        tune_threshold(net, [vol], peaks, params, PeaksConfig(), "cpu", gate=0.5, gate_unit="um",
                       grid=grid)[1].to_dict(orient="records")
        for net in (loaded.module, members[0])
    ]  # fmt: skip
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert thresholds["f1_curve"] == sweeps[0]
    assert sweeps[0] != sweeps[1]

    # the tiled engine (optimised CPU copy) predicts with the composition the folder records
    tiles = DetectionPredictConfig(tile=(6, 24, 28), overlap=(0, 0, 0), precision="float32")
    predict_volume(folder, val["image"], root / "ens_map.ome.zarr", params=tiles, sample="b")
    image = open_ome_zarr(val["image"])
    view, low, high = prepare(image.array, loaded.normalization, image.voxel_size)
    with torch.no_grad():
        whole = loaded.module(torch.from_numpy(apply_range(view[...], low, high))[None, None])
        plain = members[0](torch.from_numpy(apply_range(view[...], low, high))[None, None])
    tiled = np.asarray(open_ome_zarr(root / "ens_map.ome.zarr").array[...])
    np.testing.assert_allclose(tiled, whole[0, 0].numpy(), atol=1e-5)
    assert np.abs(tiled - plain[0, 0].numpy()).max() > 1e-3


def test_select_f1_scores_each_epoch_with_the_mirroring_it_predicts_with(samples) -> None:
    """select: f1 + mirror: the F1 that picks the epoch is the mirrored network's (the one the
    folder predicts with), not the plain network's: the last epoch's curve value equals the
    mirrored sweep of weights_last.pt."""
    import copy

    from fewlabel.detection.density.tuning import tune_threshold
    from fewlabel.detection.density.volumes import DetectorItem, load_volume
    from fewlabel.detection.sizes import derive_peaks
    from fewlabel.models.compose import compose

    root, train, val = samples
    grid = tuple(round(float(t), 3) for t in np.linspace(0.02, 0.6, 30))
    params = TINY.model_copy(update={"select": "f1", "mirror": True, "threshold_grid": grid})
    train_detector([train], [val], root / "sel", params=params, seed=3, threads=1)
    folder = root / "sel"
    loaded = load_model(folder, expect="dmdetnet3d")
    last = copy.deepcopy(loaded.network)
    last.load_state_dict(torch.load(folder / "weights_last.pt", weights_only=True))
    vol = load_volume(DetectorItem.coerce(val, 0), params, training=False)
    peaks = {"b": derive_peaks(PeaksConfig(), None, vol.voxel_size, sample="b")}
    on = tuple(loaded.training["voxel_size_um"])
    best = {}
    for name, net in (("mirrored", compose([last], ["y", "x"])), ("plain", last)):
        _, table, _ = tune_threshold(
            net, [vol], peaks, params, PeaksConfig(), "cpu", gate=0.5, gate_unit="um", grid=on
        )
        best[name] = float(table["f1"].max())
    curve = pd.read_csv(folder / "curve.tsv", sep="\t")
    assert curve["val_f1"].iloc[-1] == pytest.approx(best["mirrored"])
    assert best["mirrored"] != best["plain"]  # the check can tell them apart


def test_a_barely_trained_network_is_recorded_for_the_report(tmp_path):
    """Validation clicks moved off the spots: learning the spots makes the validation loss
    worse, so early stopping keeps first-epoch weights. That is logged and also written to
    training.json's warnings, per ensemble network, which the report's training table shows."""
    from fewlabel.report.data import _scalars

    train, val = _make_sample(tmp_path, "a", 1), _make_sample(tmp_path, "b", 2)
    wrong = np.random.default_rng(9).uniform([1, 3, 3], [5, 21, 25], size=(6, 3))
    write_points_csv(pd.DataFrame(wrong, columns=["z", "y", "x"]), val["points"])
    moved = {**val, "target": str(tmp_path / "moved_t.ome.zarr"),
             "weight": str(tmp_path / "moved_w.ome.zarr")}  # fmt: skip
    make_density_targets(
        val["image"], val["points"], moved["target"], moved["weight"], sample="b",
        params=DensityTargetsConfig(sigma=(1.0, 1.5, 1.5), sigma_unit="voxel", annotation="full"),
    )  # fmt: skip
    settings = {**TINY_DICT, "epochs": 6, "patience": 3, "ensemble": 2}
    cfg = DetectorTrainConfig.model_validate(settings)
    train_detector([train], [moved], tmp_path / "model", params=cfg, seed=7, threads=1)
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    early = [i for i, m in enumerate(record["members"]) if m["best_epoch"] == 1 < m["epochs_run"]]
    assert early, record["members"]  # the moved clicks did make the loss worse
    warned = [w for w in record.get("warnings", []) if "barely trained" in w]
    assert [w.split(" (seed")[0] for w in warned] == [f"network {i + 1} of 2" for i in early]
    assert all("detection.train.select: f1" in w for w in warned)
    table = _scalars(record)
    assert "barely trained" in table.loc[table["key"] == "warnings", "value"].iloc[0]
