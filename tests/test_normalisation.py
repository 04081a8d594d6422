"""Intensity normalisation modes (percentile | robust | background): statistics, the lazy
background filter (any read equals the whole-volume result), recipes in training and in the
tiled engine, config validation, and the LoG baseline's µm sigma and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from tiny_nets import TinyConv

from fewlabel.config import DetectorTrainConfig, LogConfig, NormalisationConfig, parse
from fewlabel.errors import ConfigError, ModelError
from fewlabel.inference.model_info import input_view, intensity_range
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.normalize import (
    BackgroundSubtracted,
    apply_range,
    percentile_range,
    prepare,
    recipe,
    robust_range,
    top_hat,
)

VOXEL = (0.5, 0.25, 0.25)


def _whole(volume: np.ndarray, radius) -> np.ndarray:
    """The white top-hat of the whole volume, written out with scipy."""
    data = volume.astype(np.float32)
    smooth = ndimage.gaussian_filter(data, 1.0, truncate=3.0, mode="reflect")
    size = tuple(2 * r + 1 for r in radius)
    return data - ndimage.grey_opening(smooth, size=size, mode="reflect")


def _spots(shape, centres, height, sigma=(1.0, 1.5, 1.5)) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    out = np.zeros(shape, np.float32)
    for c in centres:
        d2 = sum(((grid[a] - c[a]) / sigma[a]) ** 2 for a in range(3))
        out += height * np.exp(-0.5 * d2)
    return out


# --------------------------------------------------------------------------- statistics
def test_robust_range_is_noise_units_while_percentiles_follow_bright_structures(rng):
    volume = rng.normal(100.0, 5.0, size=(10, 60, 60)).astype(np.float32)
    volume[:, :6, :6] = 5000.0  # a bright non-spot structure (1 % of the voxels)
    low, high = robust_range(volume)
    assert low == pytest.approx(100.0, abs=0.3) and high - low == pytest.approx(5.0, rel=0.05)
    p_low, p_high = percentile_range(volume, (1.0, 99.8))
    assert p_high > 4000  # the percentile scale is set by the structure, not the noise
    z = apply_range(volume, low, high)
    assert np.median(z) == pytest.approx(0.0, abs=0.05)
    constant = np.full((4, 8, 8), 7.0, np.float32)
    assert robust_range(constant) == (7.0, 8.0)  # zero MAD and s.d.: unit scale, no division by 0


def test_streamed_statistics_equal_whole_volume_and_are_deterministic(tmp_path, rng):
    volume = rng.gamma(2.0, 30.0, size=(16, 64, 64)).astype(np.uint16)
    path = tmp_path / "v.ome.zarr"
    write_ome_zarr(path, volume, VOXEL, chunks=(4, 16, 16))
    array = open_ome_zarr(path).array
    values = volume.astype(np.float64).ravel()
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    # all voxels sampled: chunked reads give exactly the whole-volume statistics
    assert robust_range(array) == pytest.approx((median, median + mad))
    # bounded subsample (whole random chunks): close, and the same for the same seed
    sub = robust_range(array, max_voxels=20_000)
    assert sub == robust_range(array, max_voxels=20_000)
    assert sub[0] == pytest.approx(median, rel=0.05)
    assert sub[1] - sub[0] == pytest.approx(mad, rel=0.1)


# --------------------------------------------------------------------------- background view
def test_background_view_any_read_equals_the_whole_volume_filter(tmp_path, rng):
    volume = rng.gamma(2.0, 30.0, size=(12, 50, 44)).astype(np.uint16)
    path = tmp_path / "v.ome.zarr"
    write_ome_zarr(path, volume, VOXEL, chunks=(4, 16, 16))
    sigma = (1, 3, 4)
    whole = _whole(volume, sigma)
    np.testing.assert_array_equal(top_hat(volume, sigma), whole)
    for source in (volume, open_ome_zarr(path).array):
        view = BackgroundSubtracted(source, sigma)
        assert view.shape == volume.shape and view.dtype == np.float32
        np.testing.assert_allclose(view[...], whole, atol=1e-3)
        for key in [
            (slice(2, 7), slice(10, 33), slice(5, 44)),
            (slice(0, 4), slice(0, 16), slice(0, 16)),  # one chunk at the corner
            (slice(11, 12), slice(40, 50), slice(30, 44)),
            (3, slice(None), slice(-10, None)),  # int and negative indices
            (Ellipsis, slice(7, 9)),
        ]:
            np.testing.assert_allclose(view[key], whole[key], atol=1e-3)
    # CZYX: each channel filtered along z, y, x only
    two = np.stack([volume, volume[:, ::-1]])
    view = BackgroundSubtracted(two, sigma)
    np.testing.assert_allclose(view[1, 2:5], _whole(volume[:, ::-1], sigma)[2:5], atol=1e-3)
    with pytest.raises(IndexError, match="unit-step"):
        view[:, ::2]


def test_background_mode_equalises_spot_contrast_where_percentiles_do_not(rng):
    """The real-data failure: the same spots in two crops, one with camera offset, other gain,
    uneven background and a bright non-spot structure. Background normalisation gives them
    the same height (noise units); percentile normalisation does not (more than 5x)."""
    shape = (10, 80, 80)
    centres = [(5, 20, 20), (5, 20, 60), (4, 60, 40)]
    spots = _spots(shape, centres, 60.0)
    a = spots + rng.normal(200.0, 5.0, size=shape)
    ramp = np.linspace(0.0, 300.0, shape[2])[None, None, :]
    b = 3.0 * (spots + rng.normal(0.0, 5.0, size=shape) + ramp) + 2000.0
    b[:, 70:, 70:] += 20000.0  # bright structure sets p99.8
    heights = {}
    for mode in ("percentile", "background"):
        norm = recipe(mode, (1.0, 99.8), (1.0, 1.0, 1.0))
        for name, vol in (("a", a), ("b", b)):
            view, low, high = prepare(vol.astype(np.float32), norm, VOXEL)
            z = apply_range(np.asarray(view[...]), low, high)
            heights[mode, name] = np.median([z[c] for c in centres])
    assert heights["background", "b"] == pytest.approx(heights["background", "a"], rel=0.15)
    assert heights["percentile", "a"] > 5 * heights["percentile", "b"]


# --------------------------------------------------------------------------- recipes and config
def test_normalisation_config_validation_and_recipes():
    params = DetectorTrainConfig()
    assert params.normalisation.mode in ("percentile", "robust", "background")
    cfg = parse(NormalisationConfig, {"mode": "background", "background_um": [1, 2, 2]})
    assert cfg.background_um == (1.0, 2.0, 2.0)
    with pytest.raises(ConfigError, match=r"detection.train.normalisation.mode"):
        parse(
            DetectorTrainConfig,
            {"normalisation": {"mode": "zscore"}},
            prefix="detection.train",
        )
    for bad in ([0, 1, 1], [1, 1], [-1, 2, 2]):
        with pytest.raises(ConfigError, match="background_um"):
            parse(NormalisationConfig, {"background_um": bad})
    with pytest.raises(ConfigError, match="unknown key"):
        parse(NormalisationConfig, {"mode": "robust", "scale": 2})
    assert recipe("percentile", (1, 99), (2, 2, 2)) == {
        "method": "percentile",
        "percentiles": [1.0, 99.0],
    }
    assert recipe("robust", (1, 99), (2, 2, 2)) == {"method": "robust"}
    assert recipe("background", (1, 99), (1, 2, 2)) == {
        "method": "background",
        "background_um": [1.0, 2.0, 2.0],
    }
    with pytest.raises(ValueError, match="unsupported normalisation recipe"):
        prepare(np.zeros((2, 4, 4)), {"method": "nope"}, VOXEL)
    with pytest.raises(ModelError, match="background_um"):
        input_view(np.zeros((2, 4, 4)), {"method": "background"}, VOXEL, sample="s")
    log_params = parse(LogConfig, {"sigma": [0.3, 0.15, 0.15]})
    assert log_params.sigma_unit == "um"


def test_background_recipe_uses_each_volume_voxel_size(rng):
    volume = rng.normal(100.0, 5.0, size=(8, 40, 40)).astype(np.float32)
    norm = recipe("background", (1, 99.8), (1.0, 1.0, 1.0))
    view = input_view(volume, norm, VOXEL, sample="s")
    assert view.radius == (2, 4, 4)  # 1 µm / (0.5, 0.25, 0.25)
    assert input_view(volume, {"percentiles": [1, 99.8]}, VOXEL, sample="s") is volume
    low, high = intensity_range(view, norm)
    assert (low, high) == robust_range(view)


# --------------------------------------------------------------------------- engine + training
def test_tiled_engine_with_background_recipe_equals_whole_volume_inference(tmp_path, rng):
    from fewlabel.config import PredictConfig
    from fewlabel.inference.engine import predict_with_module

    volume = (rng.gamma(2.0, 40.0, size=(13, 40, 36)) + 100).astype(np.uint16)
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(path, volume, VOXEL, chunks=(4, 16, 16))
    torch.manual_seed(0)
    module = TinyConv().eval()
    norm = recipe("background", (1, 99.8), (1.0, 2.0, 2.0))
    params = PredictConfig(
        tile=(8, 16, 16), overlap=(4, 4, 4), batch_size=3, cache_tiles=8, precision="float32"
    )
    out = tmp_path / "pred.ome.zarr"
    summary = predict_with_module(
        module, path, out, params=params, sample="s1", normalization=norm, device="cpu"
    )
    whole = _whole(volume, (2, 8, 8))
    low, high = robust_range(whole)
    assert summary["intensity_range"] == pytest.approx([low, high], rel=1e-5)
    with torch.inference_mode():
        expected = module(torch.from_numpy(apply_range(whole, low, high))[None, None])[0, 0]
    np.testing.assert_allclose(open_ome_zarr(out).array[...], expected.numpy(), atol=1e-4)


def test_training_volume_reads_the_same_normalised_image_as_prediction(tmp_path, rng):
    import pandas as pd

    from fewlabel.detection.density.targets import make_density_targets
    from fewlabel.detection.density.volumes import DetectorItem, load_volume, normalisation_recipe
    from fewlabel.io import write_points_csv

    volume = (rng.gamma(2.0, 40.0, size=(10, 40, 40)) + 100).astype(np.uint16)
    paths = {k: str(tmp_path / f"{k}.ome.zarr") for k in ("image", "target", "weight")}
    paths["points"] = str(tmp_path / "p.csv")
    write_ome_zarr(paths["image"], volume, VOXEL, chunks=(5, 20, 20))
    write_points_csv(pd.DataFrame([[5, 20, 20]], columns=["z", "y", "x"]), paths["points"])
    make_density_targets(
        paths["image"], paths["points"], paths["target"], paths["weight"], sample="s"
    )
    params = parse(DetectorTrainConfig, {"normalisation": {"mode": "background"}})
    vol = load_volume(DetectorItem("s", **paths), params, training=True)
    norm = normalisation_recipe(params)
    view, low, high = prepare(open_ome_zarr(paths["image"]).array, norm, VOXEL)
    assert (vol.low, vol.high) == (low, high)
    np.testing.assert_allclose(vol.normalise(vol.image), apply_range(view[...], low, high))
    np.testing.assert_allclose(view[...], _whole(volume, (2, 4, 4)), atol=1e-3)


# --------------------------------------------------------------------------- LoG
def test_log_sigma_in_um_equals_voxels_and_background_mode_ignores_a_ramp(tmp_path, rng):
    from fewlabel.detection.log.baseline import (
        detect_log,
        load_log_model,
        log_recipe,
        save_log_model,
        sigma_voxels,
    )

    shape = (12, 64, 64)
    centres = [(6, 16, 16), (6, 16, 48), (5, 48, 32)]
    clean = _spots(shape, centres, 50.0) + rng.normal(100.0, 4.0, size=shape)
    assert sigma_voxels((0.3, 0.15, 0.15), "um", (0.3, 0.1, 0.1)) == pytest.approx((1, 1.5, 1.5))
    assert sigma_voxels((1, 1.5, 1.5), "voxel", (0.3, 0.1, 0.1)) == (1, 1.5, 1.5)
    params = parse(LogConfig, {"normalisation": {"mode": "background"}})
    norm = log_recipe(params)
    ramp = np.linspace(0.0, 400.0, shape[1])[None, :, None]
    tables = [
        detect_log(
            vol,
            sigma=(1.0, 1.5, 1.5),
            threshold=0.0,
            min_distance=(1, 2, 2),
            normalization=norm,
            voxel_size=(0.3, 0.1, 0.1),
        )
        for vol in (clean, 5 * (clean + ramp) + 1000)
    ]
    top = [t.nlargest(3, "score")[["z", "y", "x"]].round().to_numpy() for t in tables]
    assert sorted(map(tuple, top[0])) == sorted(map(tuple, top[1])) == sorted(centres)
    scores = [t.nlargest(3, "score")["score"].to_numpy() for t in tables]
    # the threshold transfers (the opening of a noisy ramp differs a little from a flat one)
    np.testing.assert_allclose(scores[0], scores[1], rtol=0.3)
    folder = save_log_model(tmp_path / "log", params.sigma, 0.5, tables[0], params=params)
    model = load_log_model(folder)
    assert model.sigma_unit == "um" and model.normalization == norm
    assert model.sigma_voxels((0.3, 0.1, 0.1)) == pytest.approx((1.0, 1.5, 1.5))


def test_object_diameter_derives_the_top_hat_box_unless_set():
    from fewlabel.detection.sizes import derive_normalisation

    default = DetectorTrainConfig()
    assert derive_normalisation(default, None) is default
    derived = derive_normalisation(default, 10.0)
    assert derived.normalisation.background_um == (10.0, 10.0, 10.0)  # cells keep contrast
    assert derived.normalisation.mode == default.normalisation.mode
    explicit = parse(DetectorTrainConfig, {"normalisation": {"background_um": [3, 3, 3]}})
    assert derive_normalisation(explicit, 10.0).normalisation.background_um == (3.0, 3.0, 3.0)
    log_params = derive_normalisation(LogConfig(), 8.0)
    assert log_params.normalisation.background_um == (8.0, 8.0, 8.0)


# --------------------------------------------------------------------------- PU
@pytest.mark.parametrize("mode", ["background", "percentile"])
def test_pu_model_records_its_normalisation_and_tiled_prediction_equals_whole_volume(
    tmp_path, rng, mode
):
    """detection.pu.normalisation: train_pu's model folder records the recipe; the training
    volume and the tiled engine's PU score map both equal the whole-volume normalisation."""
    import pandas as pd

    from fewlabel.config import PredictConfig
    from fewlabel.config.pu import PUConfig
    from fewlabel.detection.pu.fit import load_volume, train_to_folder
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import write_points_csv
    from fewlabel.models.store import load_model

    shape = (12, 40, 44)
    volume = rng.gamma(2.0, 40.0, size=shape) + 500 + 30 * np.indices(shape)[2]  # + a ramp
    volume = (volume + _spots(shape, [(4, 10, 10), (7, 30, 30), (5, 20, 34)], 400.0)).astype(
        np.uint16
    )
    item = {"sample": "s", "image": str(tmp_path / "img.ome.zarr"), "points": str(tmp_path / "p")}
    write_ome_zarr(item["image"], volume, VOXEL, chunks=(4, 16, 16))
    clicks = pd.DataFrame([[4, 10, 10], [7, 30, 30]], columns=["z", "y", "x"])
    write_points_csv(clicks, item["points"])
    tiny = {"width": 4, "channels": [4, 8], "expand": 2, "head_channels": 8}
    params = parse(
        PUConfig,
        {
            "window": [5, 9, 9], "radius_um": 0.5, "expected_particles": 20, "batch_size": 8,
            "steps": 4, "model": tiny, "averaging": {"mode": "none"},
            "normalisation": {"mode": mode, "background_um": [1.0, 1.0, 1.0]},
            "predict": {"tile": [8, 16, 16], "overlap": [4, 8, 8]},
        },
    )  # fmt: skip
    train_to_folder([item], tmp_path / "model", params=params, seed=0)
    loaded = load_model(tmp_path / "model", "cpu")
    assert loaded.normalization == recipe(mode, params.percentiles, (1.0, 1.0, 1.0))
    assert loaded.training["params"]["normalisation"]["mode"] == mode

    image = _whole(volume, (2, 4, 4)) if mode == "background" else volume.astype(np.float32)
    low, high = robust_range(image) if mode == "background" else percentile_range(image)
    expected_input = apply_range(image, low, high)
    np.testing.assert_allclose(load_volume(item, params).image, expected_input, atol=1e-4)

    tiles = PredictConfig(tile=(8, 16, 16), overlap=(4, 8, 8), precision="float32")
    predict_volume(
        tmp_path / "model", item["image"], tmp_path / "map.ome.zarr", params=tiles, sample="s",
        device="cpu",
    )  # fmt: skip
    with torch.inference_mode():
        whole = loaded.module(torch.from_numpy(expected_input)[None, None])[0, 0].numpy()
    tiled = np.asarray(open_ome_zarr(tmp_path / "map.ome.zarr").array[...])
    inner = (slice(2, -2), slice(4, -4), slice(4, -4))  # the window inside the volume
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-4)


def test_pu_top_hat_follows_the_object_diameter_unless_set(tmp_path, caplog):
    """detection.object_diameter_um sets PU's normalisation.background_um (d µm per axis) as it
    does the detector's and the LoG's; an explicit background_um is kept."""
    import logging

    import pandas as pd

    from fewlabel.config.pu import PUConfig
    from fewlabel.detection.pu.fit import train_to_folder
    from fewlabel.io import write_points_csv
    from fewlabel.models.store import load_model

    shape = (10, 32, 32)
    volume = (_spots(shape, [(4, 10, 10), (6, 22, 20)], 400.0) + 500).astype(np.uint16)
    item = {"sample": "s", "image": str(tmp_path / "img.ome.zarr"), "points": str(tmp_path / "p")}
    write_ome_zarr(item["image"], volume, VOXEL, chunks=(5, 16, 16))
    write_points_csv(pd.DataFrame([[4, 10, 10]], columns=["z", "y", "x"]), item["points"])
    tiny = {
        "window": [5, 9, 9], "radius_um": 0.5, "expected_particles": 4, "batch_size": 4,
        "steps": 2, "model": {"width": 4, "channels": [4, 8], "expand": 2, "head_channels": 8},
        "averaging": {"mode": "none"}, "threshold": 0.5,
    }  # fmt: skip
    recorded = {}
    for name, extra in {"default": {}, "explicit": {"background_um": [1.5, 1.5, 1.5]}}.items():
        params = parse(PUConfig, {**tiny, "normalisation": {"mode": "background", **extra}})
        with caplog.at_level(logging.INFO, logger="fewlabel.detection.sizes"):
            train_to_folder([item], tmp_path / name, params=params, seed=0, object_diameter_um=2.0)
        recorded[name] = load_model(tmp_path / name, "cpu").normalization["background_um"]
    assert recorded == {"default": [2.0, 2.0, 2.0], "explicit": [1.5, 1.5, 1.5]}
    assert "normalisation.background_um derived from detection.object_diameter_um" in caplog.text
