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
    # the same seed gives the same network
    train_detector([train], [val], root / "prior2", params=params, seed=5, threads=1)
    a = torch.load(root / "prior" / "weights.pt", weights_only=True)
    b = torch.load(root / "prior2" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


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
