"""DM-DetNet3D with a fixed LoG prior (``detection.train.model.log_prior``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_detector import TINY_DICT, samples  # noqa: F401 (the module fixture)

from fewlabel.config import DetectorTrainConfig
from fewlabel.detection.density.detnet import DMDetNet3D
from fewlabel.detection.density.log_prior import LogPrior, init_gain
from fewlabel.detection.density.training import train_detector
from fewlabel.detection.log.baseline import log_response
from fewlabel.io import open_ome_zarr, read_points_csv
from fewlabel.models.store import load_model, save_model

torch.set_num_threads(1)
SIGMA = (1.0, 1.5, 1.5)


def _volume(seed: int = 0, shape: tuple[int, int, int] = (20, 40, 40)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_prior_is_the_baseline_log_response_away_from_the_borders() -> None:
    volume = _volume()
    prior = LogPrior(SIGMA)
    ours = prior.response(torch.tensor(volume)[None, None])[0, 0].numpy()
    theirs = log_response(volume, SIGMA)
    rz, ry, rx = prior.radius
    inner = (slice(rz, -rz), slice(ry, -ry), slice(rx, -rx))
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=1e-5)
    assert np.abs(ours - theirs).max() > 1e-3  # only the border handling differs
    # a flat axis (sigma 0) takes no derivative and no smoothing, as in the baseline
    flat = LogPrior((0.0, 1.5, 1.5)).response(torch.tensor(volume)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(
        flat[:, 7:-7, 7:-7], log_response(volume, (0.0, 1.5, 1.5))[:, 7:-7, 7:-7], atol=1e-5
    )


def test_the_untrained_network_is_the_log_through_a_sigmoid() -> None:
    torch.manual_seed(0)
    model = DMDetNet3D(base_channels=4, depth=2, log_prior_sigma=SIGMA).eval()
    assert model.log_prior is not None
    model.log_prior.gain.data.fill_(3.0)
    x = torch.tensor(_volume(1, (8, 32, 32)))[None, None]
    with torch.no_grad():
        out = model(x)[0, 0]
    expected = torch.sigmoid(-2.0 + 3.0 * model.log_prior.response(x)[0, 0])
    torch.testing.assert_close(out, expected)
    # the prior widens the receptive field when it reaches further than the hourglass
    shallow = DMDetNet3D(base_channels=2, depth=0, log_prior_sigma=(2.0, 3.0, 3.0))
    assert shallow.receptive_field() == (17, 25, 25)
    assert DMDetNet3D(base_channels=2, depth=0).receptive_field() == (7, 7, 7)


def test_gain_puts_the_clicks_median_response_at_the_lift() -> None:
    prior = LogPrior(SIGMA)
    zz, yy, xx = np.indices((9, 25, 25))
    spot = np.exp(-0.5 * ((zz - 4) ** 2 + ((yy - 12) / 1.5) ** 2 + ((xx - 12) / 1.5) ** 2))
    crops = [(0.5 * spot, np.array([[4, 12, 12]])), (spot, np.array([[4, 12, 12]]))]
    gain = init_gain(prior, crops, lift=4.0)
    response = prior.response(torch.tensor(spot, dtype=torch.float32)[None, None])[0, 0, 4, 12, 12]
    assert float(prior.gain.detach()) == pytest.approx(gain, rel=1e-6)
    np.testing.assert_allclose(gain * 0.75 * float(response), 4.0, rtol=1e-4)
    # no positive response at the clicks (e.g. dark spots): the gain stays 1
    assert init_gain(LogPrior(SIGMA), [(-spot, np.array([[4, 12, 12]]))], lift=4.0) == 1.0


def test_save_load_round_trip_with_the_prior(tmp_path) -> None:
    torch.manual_seed(2)
    kwargs = {"base_channels": 2, "depth": 1, "log_prior_sigma": [1.0, 1.5, 1.5]}
    model = DMDetNet3D(**kwargs).eval()
    model.log_prior.gain.data.fill_(7.5)  # type: ignore[union-attr]
    folder = save_model(
        tmp_path / "m",
        model,
        arch={"name": "dmdetnet3d", "kwargs": {"in_channels": 1, **kwargs}},
        training={},
        thresholds={"detection_threshold": 0.5},
    )
    loaded = load_model(folder, expect="dmdetnet3d")
    x = torch.rand(1, 1, 6, 20, 22)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.module(x))


def test_train_detector_builds_the_prior_from_the_target_sigma(samples) -> None:  # noqa: F811
    root, train, val = samples
    params = DetectorTrainConfig.model_validate(
        {**TINY_DICT, "model": {"base_channels": 2, "depth": 1, "log_prior": True}}
    )
    train_detector([train], [val], root / "prior", params=params, seed=5, threads=1)
    arch = json.loads((root / "prior" / "model.json").read_text())
    # the fixtures' targets: sigma (1, 1.5, 1.5) voxels of (1, 0.5, 0.5) µm
    assert arch["kwargs"]["log_prior_sigma"] == [1.0, 1.5, 1.5]
    loaded = load_model(root / "prior", expect="dmdetnet3d")
    prior = loaded.module.log_prior
    assert prior is not None
    # the gain was set from the training clicks (then trained): their median logit lift ~ 4
    image = open_ome_zarr(train["image"]).array[...]
    points = read_points_csv(train["points"])[["z", "y", "x"]].to_numpy()
    low, high = np.percentile(image, (1.0, 99.8))
    x = torch.tensor((image - low) / (high - low), dtype=torch.float32)[None, None]
    with torch.no_grad():
        response = prior.response(x)[0, 0].numpy()
    idx = tuple(np.rint(points).astype(int).T)
    lift = float(prior.gain.detach()) * float(np.median(response[idx]))
    assert 3.0 < lift < 5.0
    # the same seed gives the same network (tuning on the volumes' own grid, which here is the
    # training grid: the same threshold; thresholds.json says which grid tuned it)
    train_detector(
        [train], [val], root / "prior2", params=params, seed=5, threads=1, model_grid=False
    )
    a = torch.load(root / "prior" / "weights.pt", weights_only=True)
    b = torch.load(root / "prior2" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    tuned = [json.loads((root / m / "thresholds.json").read_text()) for m in ("prior", "prior2")]
    assert [t["tuned_on_grid"] for t in tuned] == ["training", "own"]
    assert tuned[0]["detection_threshold"] == tuned[1]["detection_threshold"]


def test_fit_keeps_the_starting_weights_when_no_epoch_beats_them(tmp_path) -> None:
    from fewlabel.training import CurveLogger, fit

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    scores = iter([0.1, 0.5, 0.4, 0.3])  # epoch 0 (the start) is the best

    def step(model: torch.nn.Module) -> torch.Tensor:
        return model(torch.ones(4, 2)).pow(2).mean()

    result = fit(
        net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        train_step_loss=step,
        validate=lambda model: {"val_loss": next(scores)},
        epochs=3,
        steps_per_epoch=2,
        device="cpu",
        patience=5,
        curve=CurveLogger(tmp_path / "c.tsv", tmp_path / "c.png"),
        validate_first=True,
    )
    assert result.best_epoch == 0 and result.epochs_run == 3
    assert all(torch.equal(start[k], result.best_state[k]) for k in start)
    assert not all(torch.equal(start[k], result.last_state[k]) for k in start)
    curve = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    assert list(curve["epoch"]) == [0, 1, 2, 3] and np.isnan(curve["train_loss"][0])
    from fewlabel.detection.density.member import barely_trained

    assert "the saved network is the starting one" in barely_trained(result, "val_error")


def test_the_prior_keeps_its_sigma_in_um_on_another_grid() -> None:
    from fewlabel.detection.density.log_prior import priors_on_grid

    volume = _volume(3, (20, 40, 40))
    model = DMDetNet3D(base_channels=2, depth=1, log_prior_sigma=SIGMA)
    prior = model.log_prior
    assert prior is not None
    prior.gain.data.fill_(2.5)
    trained, own = (0.4, 0.11, 0.11), (0.3, 0.11, 0.11)
    with priors_on_grid(model, trained, own):
        assert prior.sigma == pytest.approx((1.0 * 0.4 / 0.3, 1.5, 1.5))
        assert prior.radius == (5, 6, 6) and model.receptive_field()[0] >= 11
        ours = prior.response(torch.tensor(volume)[None, None])[0, 0].numpy()
    inner = (slice(6, -6), slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(ours[inner], log_response(volume, prior_um(own))[inner], atol=1e-5)
    assert prior.sigma == SIGMA and prior.radius == (4, 6, 6)  # restored
    assert float(prior.gain.detach()) == 2.5
    for grid in (trained, None):  # the training grid itself, or no recorded grid: unchanged
        with priors_on_grid(model, grid, trained):
            assert prior.sigma == SIGMA


def prior_um(voxel_size) -> tuple[float, ...]:
    """SIGMA (voxels of the grid (0.4, 0.11, 0.11)) in voxels of ``voxel_size``."""
    return tuple(s * g / v for s, g, v in zip(SIGMA, (0.4, 0.11, 0.11), voxel_size, strict=True))


def test_engine_and_tuning_predict_an_off_grid_volume_with_its_own_log(tmp_path) -> None:
    """detection.predict.model_grid false: a volume of another voxel size is predicted on its
    own grid; the untrained network (zero head) is then that volume's LoG with σ in µm, in the
    prediction engine and in train_detector's threshold tuning alike."""
    from types import SimpleNamespace

    from fewlabel.config import DetectionPredictConfig, PeaksConfig
    from fewlabel.detection.density.tuning import grid_peaks
    from fewlabel.detection.peaks import find_peaks
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import write_ome_zarr
    from fewlabel.normalize import apply_range, prepare, recipe

    own, grid = (0.3, 0.11, 0.11), (0.4, 0.11, 0.11)
    rng = np.random.default_rng(4)
    image = rng.gamma(2.0, 40.0, size=(22, 48, 44)) + 100
    zz, yy, xx = np.indices(image.shape)
    for z, y, x in ((8, 15, 14), (13, 30, 28), (11, 20, 33)):
        image += 600 * np.exp(
            -0.5 * (((zz - z) / 1.4) ** 2 + ((yy - y) / 1.5) ** 2 + ((xx - x) / 1.5) ** 2)
        )
    image = image.astype(np.uint16)
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(path, image, own, chunks=(8, 16, 16))
    norm = recipe("percentile", (1.0, 99.8), (0.6, 0.55, 0.55))
    torch.manual_seed(0)
    kwargs = {"base_channels": 2, "depth": 1, "log_prior_sigma": list(SIGMA)}
    model = DMDetNet3D(**kwargs).eval()
    model.log_prior.gain.data.fill_(3.0)  # type: ignore[union-attr]
    folder = save_model(
        tmp_path / "m", model, arch={"name": "dmdetnet3d", "kwargs": {"in_channels": 1, **kwargs}},
        training={"voxel_size_um": list(grid)}, thresholds={"detection_threshold": 0.5},
        normalization=norm,
    )  # fmt: skip
    params = DetectionPredictConfig(  # one tile: instance-norm networks are not tiling-exact
        tile=(22, 48, 44), overlap=(0, 0, 0), batch_size=1, precision="float32", model_grid=False
    )
    out = tmp_path / "pred.ome.zarr"
    predict_volume(folder, path, out, params=params, sample="s1", device="cpu")
    engine = np.asarray(open_ome_zarr(out).array[...])
    view, _, _ = prepare(image, norm, own)
    low, high = open_ome_zarr(out).attrs["fewlabel"]["intensity_range"]  # subsampled percentiles
    x = apply_range(np.asarray(view[...]), low, high)
    bias = float(model.head.bias.detach()[0])
    inner = (slice(6, -6), slice(6, -6), slice(6, -6))
    expected = 1 / (1 + np.exp(-(bias + 3.0 * log_response(x, prior_um(own)))))
    np.testing.assert_allclose(engine[inner], expected[inner], atol=1e-4)
    stale = 1 / (1 + np.exp(-(bias + 3.0 * log_response(x, SIGMA))))  # σ in training voxels
    assert np.abs(stale[inner] - engine[inner]).max() > 1e-2
    # tuning (model_grid false: grid None) predicts the same map
    vol = SimpleNamespace(
        image=view, voxel_size=own, raw=image, recipe=norm,
        normalise=lambda block: apply_range(block, low, high),
    )  # fmt: skip
    tuned = grid_peaks(model, vol, None, 0.3, (1, 2, 2), PeaksConfig(), "cpu", (32, 64, 64), grid)
    reference = find_peaks(
        engine, threshold=0.3, min_distance=(1, 2, 2), refine_radius=PeaksConfig().refine_radius
    )
    assert len(tuned) == len(reference) >= 3
    np.testing.assert_allclose(
        tuned.sort_values(["z", "y", "x"])[["z", "y", "x"]].to_numpy(),
        reference.sort_values(["z", "y", "x"])[["z", "y", "x"]].to_numpy(),
        atol=1e-3,
    )
    assert model.log_prior.sigma == SIGMA  # type: ignore[union-attr]


def test_training_volumes_off_the_training_grid_are_named(caplog) -> None:
    from types import SimpleNamespace

    from fewlabel.detection.density.training import prior_grid_warnings

    def vol(sample: str, voxel: tuple[float, float, float]) -> SimpleNamespace:
        return SimpleNamespace(item=SimpleNamespace(sample=sample), voxel_size=voxel)

    grid = (0.4, 0.11, 0.11)
    assert prior_grid_warnings([vol("a", grid), vol("b", (0.401, 0.11, 0.11))], grid) == []
    (text,) = prior_grid_warnings([vol("a", grid), vol("c", (0.3, 0.11, 0.11))], grid)
    assert "training volume(s) c" in text and "[0.3, 0.11, 0.11]" in text
    assert "[0.4, 0.11, 0.11]" in text and "Fix:" in text and text in caplog.text
