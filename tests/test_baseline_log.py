"""LoG baseline (detection, threshold tuning, chunked response, model folder) and the CLI stages
extract_points / fit_log_threshold / predict_log / evaluate_detection / aggregate_detection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from fewlabel.cli import main
from fewlabel.config import LogConfig, PeaksConfig, parse
from fewlabel.detection.log.baseline import (
    detect_log,
    load_log_model,
    log_halo,
    log_response,
    log_response_zarr,
    save_log_model,
)
from fewlabel.detection.log.tuning import tune_log_threshold
from fewlabel.errors import ConfigError
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.metrics.detection import match_points

SIGMA = (1.0, 1.5, 1.5)


def spot_volume(seed: int, n: int = 25, shape=(16, 64, 64), amplitude=40.0, noise=5.0):
    """Separated Gaussian spots (PSF s.d. SIGMA) on a background of 100 with Gaussian noise."""
    rng = np.random.default_rng(seed)
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform([2, 3, 3], np.asarray(shape) - [3, 4, 4])
        if all(np.linalg.norm((p - q) * [1.5, 1, 1]) > 7 for q in pts):
            pts.append(p)
    points = np.asarray(pts)
    grid = np.mgrid[tuple(slice(0, s) for s in shape)].astype(np.float32)
    clean = np.zeros(shape, np.float32)
    for p in points:
        clean += np.exp(-sum((grid[i] - p[i]) ** 2 / (2 * SIGMA[i] ** 2) for i in range(3)))
    image = 100 + amplitude * clean + rng.normal(0, noise, shape)
    return image.astype(np.float32), points


def test_log_response_is_positive_on_spots_and_matches_gaussian_laplace():
    image, points = spot_volume(0, n=5, noise=0.0)
    response = log_response(image, SIGMA)
    z, y, x = np.round(points[0]).astype(int)
    assert response[z, y, x] > 0.5 * response.max() > 0
    iso = log_response(image, (1.5, 1.5, 1.5))
    expected = -(1.5**2) * ndimage.gaussian_laplace(image.astype(np.float64), 1.5)
    np.testing.assert_allclose(iso, expected, rtol=1e-4, atol=1e-3)
    assert log_halo(SIGMA) == (4, 6, 6)


def test_log_detects_spots_in_noise_with_high_f1():
    image, points = spot_volume(1)
    train, train_points = spot_volume(2)
    best, table = tune_log_threshold(
        [train],
        [train_points],
        sigma=SIGMA,
        min_distance=(1, 2, 2),
        gate=2.0,
        percentiles=(1, 99.8),
    )
    detections = detect_log(
        image, sigma=SIGMA, threshold=best, min_distance=(1, 2, 2), percentiles=(1, 99.8)
    )
    result = match_points(points, detections[["z", "y", "x"]].to_numpy(), max_distance=2.0)
    assert result.f1 > 0.9
    assert result.rmse < 0.6
    assert set(table.columns) >= {"threshold", "precision", "recall", "f1"}


def test_threshold_tuning_picks_a_sensible_threshold():
    train, train_points = spot_volume(3)
    best, table = tune_log_threshold(
        [train], [train_points], sigma=SIGMA, min_distance=(1, 2, 2), gate=2.0
    )
    assert table["f1"].max() > 0.95
    f1_at_best = table.loc[np.isclose(table["threshold"], best), "f1"].iloc[0]
    assert f1_at_best == table["f1"].max()
    # far too low thresholds admit noise peaks, far too high ones lose spots
    low = table["threshold"].min()
    assert table.loc[table["threshold"] == low, "precision"].iloc[0] < 0.5
    assert table.loc[table["threshold"] == table["threshold"].max(), "recall"].iloc[0] < 0.5
    detections = detect_log(train, sigma=SIGMA, threshold=best, min_distance=(1, 2, 2))
    assert abs(len(detections) - len(train_points)) <= 2
    # explicit candidates are scored as given
    best2, table2 = tune_log_threshold(
        [train],
        [train_points],
        sigma=SIGMA,
        min_distance=(1, 2, 2),
        gate=2.0,
        candidates=[0.0, best, 1e9],
    )
    assert best2 == best and len(table2) == 3


def test_log_response_zarr_chunked_equals_whole(tmp_path):
    image, _ = spot_volume(4, n=10, shape=(13, 40, 37))
    write_ome_zarr(tmp_path / "img.ome.zarr", image, (2.0, 0.5, 0.5), chunks=(4, 16, 16))
    volume = open_ome_zarr(tmp_path / "img.ome.zarr")
    offset, scale = log_response_zarr(
        volume.array,
        tmp_path / "r.ome.zarr",
        sigma=SIGMA,
        voxel_size=volume.voxel_size,
        percentiles=(1, 99.8),
        workers=2,
    )
    out = open_ome_zarr(tmp_path / "r.ome.zarr")
    assert out.voxel_size == (2.0, 0.5, 0.5) and out.array.chunks == (4, 16, 16)
    whole = log_response(image, SIGMA, scale=scale, offset=offset)
    np.testing.assert_array_equal(out.array[...], whole)


def test_log_model_folder_round_trip(tmp_path):
    table = pd.DataFrame(
        {"threshold": [0.1, 0.2], "precision": [0.5, 1.0], "recall": [1.0, 0.9], "f1": [0.67, 0.95]}
    )
    params = LogConfig(sigma=(0.5, 1.0, 1.0), normalisation={"mode": "percentile"})
    save_log_model(
        tmp_path / "m",
        params.sigma,
        0.2,
        table,
        params=params,
        peaks=PeaksConfig(min_distance=(2, 2, 2)),
    )
    model = load_log_model(tmp_path / "m")
    assert model.sigma == [0.5, 1.0, 1.0] and model.threshold == 0.2
    assert model.min_distance == [2, 2, 2] and model.percentiles == [1.0, 99.8]
    assert model.sigma_unit == "um" and model.normalization == {"percentiles": [1.0, 99.8]}
    assert json.loads((tmp_path / "m" / "model.json").read_text())["name"] == "log"
    thresholds = json.loads((tmp_path / "m" / "thresholds.json").read_text())
    assert thresholds["detection_threshold"] == 0.2 and len(thresholds["f1_curve"]) == 2
    training = json.loads((tmp_path / "m" / "training.json").read_text())
    assert training["params"]["sigma"] == [0.5, 1.0, 1.0]
    assert training["peaks"]["min_distance"] == [2, 2, 2]
    with pytest.raises(ConfigError, match=r"config key 'detection.log.sigma'"):
        parse(LogConfig, {"sigma": [1, 2]})
    with pytest.raises(ConfigError, match=r"config key 'detection.log.sigmas': unknown key"):
        parse(LogConfig, {"sigmas": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"config key 'detection.log.min_distance'"):
        parse(LogConfig, {"min_distance": [1, 2, 2]})  # lives in detection.peaks
    with pytest.raises(ConfigError, match="at least one axis"):
        parse(LogConfig, {"sigma": [0, 0, 0]})


# --------------------------------------------------------------------------- CLI
def _write_points(path, points):
    pd.DataFrame(points, columns=["z", "y", "x"]).to_csv(path, index=False)


def test_cli_log_chain_train_predict_extract_evaluate(tmp_path):
    voxel = [1.0, 0.5, 0.5]
    samples = []
    for name, seed in (("a", 5), ("b", 6)):
        image, points = spot_volume(seed, n=15, shape=(12, 48, 48))
        write_ome_zarr(tmp_path / f"{name}.ome.zarr", image, voxel, chunks=(6, 24, 24))
        _write_points(tmp_path / f"{name}.csv", points)
        samples.append(
            {
                "sample": name,
                "image": str(tmp_path / f"{name}.ome.zarr"),
                "points": str(tmp_path / f"{name}.csv"),
            }
        )
    params = json.dumps({"sigma": list(SIGMA), "gate": 1.5, "gate_unit": "um"})
    model = tmp_path / "log_model"
    assert (
        main(
            [
                "fit_log_threshold",
                "--samples-json",
                json.dumps(samples[:1]),
                "--params",
                params,
                "--peaks",
                '{"min_distance": [1, 2, 2], "min_distance_unit": "voxel", '
                '"refine_radius": [1, 1, 1]}',
                "--targets",
                '{"annotation": "full"}',  # every spot is in the points
                "--output-dir",
                str(model),
            ]
        )
        == 0
    )
    assert (model / "thresholds.json").exists()
    assert load_log_model(model).min_distance == [1, 2, 2]
    assert (
        main(
            [
                "predict_log",
                "--model-dir",
                str(model),
                "--image",
                samples[1]["image"],
                "--output",
                str(tmp_path / "resp.ome.zarr"),
                "--threads",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "extract_points",
                "--sample",
                "b",
                "--density",
                str(tmp_path / "resp.ome.zarr"),
                "--model-dir",
                str(model),
                "--params",
                '{"min_distance": [1, 2, 2], "min_distance_unit": "voxel"}',
                "--output",
                str(tmp_path / "b_pred.csv"),
                "--threads",
                "2",
            ]
        )
        == 0
    )
    pred = pd.read_csv(tmp_path / "b_pred.csv")
    assert list(pred.columns) == ["z", "y", "x", "z_um", "y_um", "x_um", "score"]
    np.testing.assert_allclose(pred["y_um"], pred["y"] * 0.5)
    assert (
        main(
            [
                "evaluate_detection",
                "--sample",
                "b",
                "--gt",
                samples[1]["points"],
                "--pred",
                str(tmp_path / "b_pred.csv"),
                "--voxel-size",
                json.dumps(voxel),
                "--params",
                '{"gate": 1.5, "gate_unit": "um"}',
                "--output",
                str(tmp_path / "b.tsv"),
                "--matches",
                str(tmp_path / "b_m.csv"),
            ]
        )
        == 0
    )
    row = pd.read_csv(tmp_path / "b.tsv", sep="\t").iloc[0]
    assert row["f1"] > 0.9 and row["gate_unit"] == "um"
    assert (
        main(
            [
                "evaluate_detection",
                "--sample",
                "a",
                "--gt",
                samples[0]["points"],
                "--pred",
                str(tmp_path / "b_pred.csv"),
                "--params",
                '{"gate": 3.0, "gate_unit": "voxel"}',
                "--output",
                str(tmp_path / "a.tsv"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "aggregate_detection",
                "--inputs",
                str(tmp_path / "a.tsv"),
                str(tmp_path / "b.tsv"),
                "--output",
                str(tmp_path / "summary.tsv"),
            ]
        )
        == 0
    )
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert summary["sample"].tolist() == ["a", "b", "ALL", "MEAN"]
    assert summary["gate_unit"].iloc[2] == "mixed"


def test_cli_extract_points_missing_thresholds_file(tmp_path, capsys):
    write_ome_zarr(
        tmp_path / "d.ome.zarr", np.zeros((4, 8, 8), np.float32), (1, 1, 1), chunks=(4, 8, 8)
    )
    (tmp_path / "model").mkdir()
    code = main(
        [
            "extract_points",
            "--sample",
            "s1",
            "--density",
            str(tmp_path / "d.ome.zarr"),
            "--model-dir",
            str(tmp_path / "model"),
            "--output",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "thresholds.json" in err and "Fix:" in err
    assert not (tmp_path / "p.csv").exists()
    # an explicit threshold needs no model folder; an empty map gives a header-only CSV
    assert (
        main(
            [
                "extract_points",
                "--sample",
                "s1",
                "--density",
                str(tmp_path / "d.ome.zarr"),
                "--threshold",
                "0.5",
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert pd.read_csv(tmp_path / "p.csv").empty


def test_cli_bad_params_are_config_errors(tmp_path, capsys):
    _write_points(tmp_path / "g.csv", np.zeros((1, 3)))
    code = main(
        [
            "evaluate_detection",
            "--sample",
            "s",
            "--gt",
            str(tmp_path / "g.csv"),
            "--pred",
            str(tmp_path / "g.csv"),
            "--params",
            '{"gate": 2, "gate_unit": "um"}',
            "--output",
            str(tmp_path / "m.tsv"),
        ]
    )
    assert code == 2 and "voxel size" in capsys.readouterr().err
    code = main(
        [
            "extract_points",
            "--sample",
            "s",
            "--density",
            str(tmp_path / "none.ome.zarr"),
            "--threshold",
            "1",
            "--params",
            '{"min_distance": [1, 2]}',
            "--output",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2 and "config key 'detection.peaks.min_distance'" in capsys.readouterr().err
    code = main(
        [
            "evaluate_detection",
            "--sample",
            "s",
            "--gt",
            str(tmp_path / "g.csv"),
            "--pred",
            str(tmp_path / "g.csv"),
            "--params",
            '{"gate": -1}',
            "--output",
            str(tmp_path / "m.tsv"),
        ]
    )
    assert code == 2 and "config key 'evaluation.detection.gate'" in capsys.readouterr().err


def _partly_clicked(tmp_path, voxel):
    """A volume whose left quarter (x < 16, the annotated box) has every spot clicked, and whose
    rest has only its bright spots clicked: the annotator skipped the dim ones there."""
    image, points = spot_volume(11, n=30, shape=(16, 64, 64), amplitude=30.0, noise=4.0)
    bright = np.arange(len(points)) % 2 == 0
    grid = np.mgrid[tuple(slice(0, s) for s in image.shape)].astype(np.float32)
    for p in points[bright]:  # doubled amplitude
        image += 30.0 * np.exp(-sum((grid[i] - p[i]) ** 2 / (2 * SIGMA[i] ** 2) for i in range(3)))
    clicked = bright | (points[:, 2] < 16)
    write_ome_zarr(tmp_path / "v.ome.zarr", image, voxel, chunks=(16, 64, 64))
    _write_points(tmp_path / "v.csv", points[clicked])
    pd.DataFrame([[0, 0, 0, 16, 64, 16]], columns=["z0", "y0", "x0", "z1", "y1", "x1"]).to_csv(
        tmp_path / "box.csv", index=False
    )
    return image, points, clicked


def test_log_tuning_counts_only_what_partial_clicks_cover(tmp_path):
    """Unclicked dim spots outside the annotated box are not false positives: tuning with the
    box (click recall, precision inside the box) keeps them, while reading the clicks as
    complete pushes the threshold over every dim spot (issue 11's cause 1, for the LoG)."""
    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.log.tuning import train_log

    voxel = (1.0, 0.5, 0.5)
    image, points, clicked = _partly_clicked(tmp_path, voxel)
    assert 0 < (~clicked).sum() < len(points) // 2
    params = LogConfig(sigma=SIGMA, sigma_unit="voxel", gate=1.5, gate_unit="um")
    peaks = PeaksConfig(min_distance=(1, 2, 2), min_distance_unit="voxel")
    targets = DensityTargetsConfig(sigma=SIGMA, sigma_unit="voxel")
    found = {}
    for region in ("full", str(tmp_path / "box.csv")):
        entry = {
            "sample": "v",
            "image": str(tmp_path / "v.ome.zarr"),
            "points": str(tmp_path / "v.csv"),
            "annotated_region": region,
        }
        out = tmp_path / f"model_{len(found)}"
        best, _ = train_log([entry], out, params=params, peaks=peaks, targets=targets)
        record = json.loads((out / "thresholds.json").read_text())
        assert record["detection_threshold"] == pytest.approx(best)
        assert record["tuned_with"] == (
            "full" if region == "full" else "clicks-recall+regions-precision"
        )
        model = load_log_model(out)
        pred = detect_log(
            image,
            sigma=SIGMA,
            threshold=best,
            min_distance=(1, 2, 2),
            normalization=model.normalization,
            voxel_size=voxel,
        )
        res = match_points(points, pred[["z", "y", "x"]].to_numpy(), max_distance=1.5, scale=voxel)
        found[region == "full"] = (res.tp / len(points), res.tp / max(len(pred), 1))
    recall_box, precision_box = found[False]
    recall_full, _ = found[True]
    assert recall_box >= 0.9 and precision_box >= 0.8, found
    assert recall_full <= recall_box - 0.15, found  # the dim spots were taught as false
