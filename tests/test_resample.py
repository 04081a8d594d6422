"""Prediction on the model's training grid (fewlabel.inference.resample): the lazy view, the
engine (one job, slab jobs, ROI) and extract_points writing points in the image's voxels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_nets import TinyConv

from fewlabel.cli import main
from fewlabel.config import DetectionPredictConfig
from fewlabel.errors import InputDataError
from fewlabel.inference.engine import predict_volume
from fewlabel.inference.resample import (
    Resampled,
    grid_shape,
    points_to_image,
    target_grid,
    training_grid,
)
from fewlabel.inference.slabs import create_prediction_array, finalize_prediction
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.models.store import register_architecture, save_model

ARCH = "test_resample_tinyconv"
PARAMS = DetectionPredictConfig(  # model_grid: true (the default)
    tile=(8, 16, 16), overlap=(4, 4, 4), batch_size=2, cache_tiles=8, precision="float32"
)
IMAGE_VOXEL = (0.3, 0.11, 0.11)
GRID = (0.4, 0.11, 0.11)


register_architecture(ARCH, TinyConv, replace=True)


# --------------------------------------------------------------------------- the view
def test_grid_helpers():
    assert training_grid([(0.4, 0.11, 0.11), (0.3, 0.1, 0.1), (0.4, 0.12, 0.11)]) == (
        0.4,
        0.11,
        0.11,
    )
    assert target_grid((0.3, 0.11, 0.11), None) is None
    assert target_grid((0.39, 0.11, 0.11), GRID) is None  # within 5 %: not resampled
    assert target_grid((0.3, 0.108, 0.11), GRID) == (0.4, 0.108, 0.11)  # only z moves
    assert grid_shape((10, 40, 36), IMAGE_VOXEL, GRID) == (7, 40, 36)  # 2.7 µm -> 0..2.4 µm
    np.testing.assert_allclose(points_to_image(np.array([[3.0, 5.0, 7.0]]), GRID, IMAGE_VOXEL),
                               [[4.0, 5.0, 7.0]])  # fmt: skip


def test_linear_view_is_exact_on_a_ramp_and_identity_on_the_same_grid(rng):
    z_um = (np.arange(10) * 0.3)[:, None, None] * np.ones((10, 6, 5))
    view = Resampled(z_um.astype(np.float32), IMAGE_VOXEL, GRID)
    assert view.shape == (7, 6, 5) and view.dtype == np.float32
    np.testing.assert_allclose(view[...][:, 0, 0], np.arange(7) * 0.4, atol=1e-5)
    same = rng.normal(size=(5, 8, 9)).astype(np.float32)
    np.testing.assert_array_equal(Resampled(same, IMAGE_VOXEL, IMAGE_VOXEL)[...], same)


@pytest.mark.parametrize("order", [1, 0])
@pytest.mark.parametrize("channels", [None, 2])
def test_any_region_equals_the_whole_view(rng, order, channels):
    shape = (11, 17, 13) if channels is None else (channels, 11, 17, 13)
    source = rng.integers(0, 1000, size=shape).astype(np.uint16)
    view = Resampled(source, (0.3, 0.1, 0.12), (0.45, 0.13, 0.1), order=order)
    whole = np.asarray(view)
    assert whole.shape == view.shape and whole.dtype == view.dtype
    lead = () if channels is None else (slice(None),)
    for _ in range(20):
        lo = [int(rng.integers(0, n)) for n in view.shape[-3:]]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, view.shape[-3:], strict=True)]
        box = lead + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        np.testing.assert_array_equal(view[box], whole[box])
    assert view[lead + (3,)].shape == view.shape[:-3] + view.shape[-2:]  # an int drops the axis
    if order == 0:  # nearest plane: every value is one of the source's
        assert set(np.unique(whole)) <= set(np.unique(source))


# --------------------------------------------------------------------------- the engine
@pytest.fixture
def volume(tmp_path, rng):
    image = (rng.gamma(2.0, 40.0, size=(19, 40, 36)) + 100).astype(np.uint16)
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(path, image, IMAGE_VOXEL, chunks=(4, 16, 16))
    return path, image


def _model(folder, grid=GRID):
    torch.manual_seed(0)
    training = {} if grid is None else {"voxel_size_um": list(grid)}
    return save_model(
        folder, TinyConv(), arch={"name": ARCH, "kwargs": {}}, training=training,
        normalization={"percentiles": [1, 99.8]},
    )  # fmt: skip


def test_prediction_on_the_training_grid_equals_predicting_the_resampled_image(volume, tmp_path):
    path, image = volume
    folder = _model(tmp_path / "model")
    out = tmp_path / "pred.ome.zarr"
    predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu")
    result = open_ome_zarr(out)
    assert result.voxel_size == GRID  # the NGFF scale places it over the image
    assert result.array.shape == grid_shape(image.shape, IMAGE_VOXEL, GRID) == (14, 40, 36)
    record = result.attrs["fewlabel"]["resampled"]
    assert record == {
        "voxel_size": list(GRID),
        "image_voxel_size": list(IMAGE_VOXEL),
        "image_shape": [19, 40, 36],
    }
    # the same model on an image written on the grid (no resampling left to do)
    on_grid = tmp_path / "on_grid.ome.zarr"
    write_ome_zarr(
        on_grid, np.asarray(Resampled(image, IMAGE_VOXEL, GRID)), GRID, chunks=(4, 16, 16)
    )
    ref = tmp_path / "ref.ome.zarr"
    predict_volume(folder, on_grid, ref, params=PARAMS, sample="s1", device="cpu")
    assert open_ome_zarr(ref).attrs["fewlabel"]["resampled"] is None
    np.testing.assert_array_equal(result.array[...], open_ome_zarr(ref).array[...])
    # model_grid off, or a folder from before the grid was recorded: the image's own grid
    for name, params, model in (
        ("off", PARAMS.model_copy(update={"model_grid": False}), folder),
        ("old", PARAMS, _model(tmp_path / "old", grid=None)),
    ):
        own = tmp_path / f"{name}.ome.zarr"
        predict_volume(model, path, own, params=params, sample="s1", device="cpu")
        assert open_ome_zarr(own).array.shape == image.shape
        assert open_ome_zarr(own).voxel_size == IMAGE_VOXEL


def test_slab_jobs_and_roi_gating_on_the_training_grid(volume, tmp_path):
    path, image = volume
    folder = _model(tmp_path / "model")
    one = tmp_path / "one.ome.zarr"
    predict_volume(folder, path, one, params=PARAMS, sample="s1", device="cpu")
    slabs = tmp_path / "slabs.ome.zarr"
    create_prediction_array(
        folder, path, slabs, params=PARAMS, sample="s1", n_slabs=3, device="cpu",
    )  # fmt: skip
    for slab in range(3):
        predict_volume(
            folder, path, slabs, params=PARAMS, sample="s1", device="cpu", slab=slab,
            n_slabs=3,
        )  # fmt: skip
    finalize_prediction(slabs, sample="s1")
    np.testing.assert_array_equal(open_ome_zarr(slabs).array[...], open_ome_zarr(one).array[...])
    assert open_ome_zarr(slabs).attrs["fewlabel"]["resampled"]["image_shape"] == [19, 40, 36]
    # an ROI mask on the image grid: gated on the training grid, ROI voxels as ungated
    mask = np.zeros(image.shape, np.uint8)
    mask[:6] = 1  # the first 6 planes = 1.8 µm: grid planes 0-4 (0-1.6 µm)
    roi = tmp_path / "roi.ome.zarr"
    write_ome_zarr(roi, mask, IMAGE_VOXEL, chunks=(4, 16, 16))
    gated = tmp_path / "gated.ome.zarr"
    predict_volume(folder, path, gated, params=PARAMS, sample="s1", device="cpu", roi=roi)
    got, ref = open_ome_zarr(gated).array[...], open_ome_zarr(one).array[...]
    inside = np.asarray(Resampled(mask, IMAGE_VOXEL, GRID, order=0)).astype(bool)
    assert inside[:5].all() and not inside[6:].any()
    np.testing.assert_array_equal(got[inside], ref[inside])
    wrong = tmp_path / "wrong_roi.ome.zarr"
    write_ome_zarr(wrong, mask[:7], IMAGE_VOXEL, chunks=(4, 16, 16))  # 7 planes: the grid's
    with pytest.raises(InputDataError, match=r"ROI mask has shape \(7, 40, 36\).*\(19, 40, 36\)"):
        predict_volume(
            folder, path, tmp_path / "x.ome.zarr", params=PARAMS, sample="s1", device="cpu",
            roi=wrong,
        )  # fmt: skip


def test_a_volume_too_small_on_the_training_grid_names_both_shapes(volume, tmp_path):
    path, _ = volume  # 19 planes of 0.3 µm = 14 of 0.4 µm
    folder = _model(tmp_path / "model")
    params = PARAMS.model_copy(update={"tile": (16, 16, 16), "overlap": (4, 4, 4)})
    with pytest.raises(InputDataError) as caught:
        predict_volume(
            folder, path, tmp_path / "p.ome.zarr", params=params, sample="s1", device="cpu"
        )
    text = str(caught.value)
    assert "the volume (14, 40, 36) is smaller than one tile" in text
    assert "the image is (19, 40, 36) voxels of [0.3, 0.11, 0.11] µm" in text
    assert "model_grid: false" in text and "pad_to_tile: true" in text
    own_grid = params.model_copy(update={"model_grid": False})
    predict_volume(  # on its own grid it holds the tile
        folder, path, tmp_path / "p.ome.zarr", params=own_grid, sample="s1", device="cpu"
    )


# --------------------------------------------------------------------------- points
def _spots(truth: np.ndarray, shape=(19, 40, 36)) -> np.ndarray:
    """Gaussian spots (s.d. 0.3 µm in z, 0.165 µm in y/x) at ``truth`` (voxels of 0.3 µm z)."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    image = np.zeros(shape, np.float32)
    for z, y, x in truth:
        d_xy = ((yy - y) ** 2 + (xx - x) ** 2) * 0.11**2
        image += np.exp(-(((zz - z) * 0.3) ** 2) / 0.18 - d_xy / 0.0545)
    return image


TRUTH = np.array([[4.0, 10.0, 12.0], [12.0, 30.0, 20.0], [15.0, 18.0, 28.0]])


def test_threshold_tuning_predicts_a_volume_of_another_voxel_size_on_the_grid():
    """grid_peaks (train_detector's tuning): peaks found on the grid, in the volume's voxels."""
    from types import SimpleNamespace

    from fewlabel.config import PeaksConfig
    from fewlabel.detection.density.tuning import grid_peaks

    image = _spots(TRUTH)
    vol = SimpleNamespace(  # on the grid: min-max scaled (the spots peak at 1 over 0)
        image=image, voxel_size=IMAGE_VOXEL, normalise=None, raw=image,
        recipe={"method": "percentile", "percentiles": [0.0, 100.0]},
    )  # fmt: skip
    args = (torch.nn.Identity(), vol)
    rest = (0.3, (1, 2, 2), PeaksConfig(), "cpu", (32, 64, 64))
    on_grid, own = grid_peaks(*args, GRID, *rest), grid_peaks(*args, None, *rest)
    for table in (on_grid, own):
        got = table.sort_values("z")[["z", "y", "x"]].to_numpy()
        np.testing.assert_allclose(got, TRUTH, atol=0.35)
    assert not np.allclose(on_grid.sort_values("z")["z"], own.sort_values("z")["z"])


@pytest.mark.parametrize("method", ["background", "percentile"])
def test_threshold_tuning_normalises_on_the_grid_as_prediction_does(volume, tmp_path, method):
    """train_detector tunes on the map the engine predicts for an off-grid validation volume:
    resampled first, then normalised on the grid (a background top-hat sized for the grid's
    voxels). The former order (normalised, then resampled) gives another map."""
    from types import SimpleNamespace

    from fewlabel.detection.density.tuning import grid_input, predict_density
    from fewlabel.inference.resample import Resampled
    from fewlabel.normalize import apply_range, prepare, recipe

    path, image = volume
    norm = recipe(method, (1.0, 99.8), (0.6, 0.55, 0.55))
    torch.manual_seed(0)
    folder = save_model(
        tmp_path / "model", TinyConv(), arch={"name": ARCH, "kwargs": {}},
        training={"voxel_size_um": list(GRID)}, normalization=norm,
    )  # fmt: skip
    out = tmp_path / "pred.ome.zarr"
    predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu")
    engine = np.asarray(open_ome_zarr(out).array[...])
    net = TinyConv()
    net.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    view, low, high = prepare(image, norm, IMAGE_VOXEL)  # as load_volume prepares it
    vol = SimpleNamespace(
        image=view, voxel_size=IMAGE_VOXEL, raw=image, recipe=norm,
        normalise=lambda block: apply_range(block, low, high),
    )  # fmt: skip
    view_on, normalise_on = grid_input(vol, GRID)
    tuned = predict_density(net, view_on, normalise=normalise_on, device="cpu")
    assert tuned.shape == engine.shape
    np.testing.assert_allclose(tuned, engine, atol=1e-5)
    before = Resampled(view, IMAGE_VOXEL, GRID)  # the former order
    former = predict_density(net, before, normalise=vol.normalise, device="cpu")
    assert np.abs(former - engine).max() > 1e-3


def test_extract_points_writes_the_image_voxels_of_a_map_on_the_training_grid(tmp_path):
    """Gaussian spots at known image positions (z step 0.3 µm); their map on the 0.4 µm grid
    (as the engine writes it); extract_points gives the image's voxels and the same µm."""
    truth, image = TRUTH, _spots(TRUTH)
    density = tmp_path / "density.ome.zarr"
    record = {"voxel_size": list(GRID), "image_voxel_size": list(IMAGE_VOXEL),
              "image_shape": [19, 40, 36]}  # fmt: skip
    write_ome_zarr(
        density, np.asarray(Resampled(image, IMAGE_VOXEL, GRID)), GRID, chunks=(4, 16, 16),
        extra_attrs={"resampled": record},
    )  # fmt: skip
    out = tmp_path / "points.csv"
    args = ["extract_points", "--sample", "s1", "--density", str(density), "--threshold", "0.3",
            "--params", '{"min_distance": [1, 2, 2], "min_distance_unit": "voxel"}',
            "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    points = pd.read_csv(out).sort_values("z").reset_index(drop=True)
    assert len(points) == 3
    np.testing.assert_allclose(points[["z", "y", "x"]].to_numpy(), truth, atol=0.35)
    np.testing.assert_allclose(points["z_um"], points["z"] * 0.3, rtol=1e-9)
    np.testing.assert_allclose(points["y_um"], points["y"] * 0.11, rtol=1e-9)


def test_extract_points_warns_when_the_map_is_not_on_the_tuning_grid(tmp_path, capsys):
    """model_grid: false predicts a 0.3 µm volume on its own grid; the threshold was tuned on
    the 0.4 µm training grid: extract_points says so (and not for a map on that grid)."""
    import json

    folder = _model(tmp_path / "model")  # training.json: voxel_size_um = GRID
    (folder / "thresholds.json").write_text(json.dumps({"detection_threshold": 0.3}))
    image = _spots(TRUTH)
    for name, voxel, warned in (("own", IMAGE_VOXEL, True), ("grid", GRID, False)):
        density = tmp_path / f"{name}.ome.zarr"
        write_ome_zarr(density, image, voxel, chunks=(4, 16, 16))
        capsys.readouterr()
        args = ["extract_points", "--sample", "s1", "--density", str(density), "--model-dir",
                str(folder), "--output", str(tmp_path / f"{name}.csv")]  # fmt: skip
        assert main(args) == 0
        said = capsys.readouterr().err  # the stage's log (fewlabel.logs) goes to stderr
        assert ("WARNING" in said and "training grid [0.4, 0.11, 0.11]" in said) == warned, said
        assert ("may not carry over" in said) == warned, said
        assert len(pd.read_csv(tmp_path / f"{name}.csv")) == 3
    # a folder tuned on the volumes' own grids (train_detector with model_grid false) says so
    (folder / "thresholds.json").write_text(
        json.dumps({"detection_threshold": 0.3, "tuned_on_grid": "own"})
    )
    args[args.index("--density") + 1] = str(tmp_path / "own.ome.zarr")  # the 0.3 µm map
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "again.csv")]) == 0
    said = capsys.readouterr().err
    assert "threshold was tuned as it is applied here" in said, said
    assert "may not carry over" not in said
