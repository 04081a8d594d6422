"""Intensity augmentation of training crops (detection.train.intensity_augment)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from fewlabel.augment import IntensityAugment
from fewlabel.config import DetectorTrainConfig, IntensityAugmentConfig
from fewlabel.sampling import CropSampler, CropVolume

GAIN_ONLY = IntensityAugment(1.0, (0.5, 2.0), (0.0, 0.0), 0.0, (0.0, 0.0))


def test_gain_is_log_uniform_within_its_range_and_seeded() -> None:
    image = np.full((2, 4, 4), 3.0, np.float32)
    rng = np.random.default_rng(0)
    gains = np.array([GAIN_ONLY(image, rng)[0, 0, 0] / 3.0 for _ in range(4000)])
    assert gains.min() >= 0.5 - 1e-6 and gains.max() <= 2.0 + 1e-6
    # log-uniform: halving and doubling equally likely, median gain 1
    assert abs(np.median(np.log2(gains))) < 0.05
    assert abs(np.mean(gains < 0.75) - np.mean(gains > 1.0 / 0.75)) < 0.03
    again = np.random.default_rng(0)
    np.testing.assert_array_equal(
        GAIN_ONLY(image, again), GAIN_ONLY(image, np.random.default_rng(0))
    )


def test_offset_and_noise_ranges() -> None:
    image = np.zeros((4, 32, 32), np.float32)
    shift = IntensityAugment(1.0, (1.0, 1.0), (-0.2, 0.2), 0.0, (0.0, 0.0))
    noise = IntensityAugment(0.0, (0.5, 2.0), (0.0, 0.0), 1.0, (0.05, 0.05))
    rng = np.random.default_rng(1)
    offsets = [float(np.unique(shift(image, rng))[0]) for _ in range(200)]
    assert -0.2 <= min(offsets) < -0.15 and 0.15 < max(offsets) <= 0.2
    noisy = noise(image, rng)
    assert noisy.dtype == np.float32 and abs(noisy.std() - 0.05) < 0.005


def test_off_by_default_and_the_sampler_only_changes_the_image() -> None:
    assert IntensityAugmentConfig().build() is None  # probabilities 0: no draw, no change
    assert DetectorTrainConfig().intensity_augment.build() is None
    rng = np.random.default_rng(2)
    image = rng.normal(5.0, 1.0, (6, 20, 20)).astype(np.float32)
    target = rng.random((6, 20, 20)).astype(np.float32)
    volume = CropVolume([image, target], name="v")
    plain = CropSampler([volume], (4, 8, 8), seed=3).sample(16)
    aug = IntensityAugmentConfig(probability=1.0).build()
    assert aug is not None
    augmented = CropSampler([volume], (4, 8, 8), seed=3, image_augment=aug).sample(16)
    # the augmentation has its own random stream: same crop positions and flips, same targets
    np.testing.assert_array_equal(plain[1], augmented[1])
    ratios = augmented[0].reshape(16, -1).std(axis=1) / plain[0].reshape(16, -1).std(axis=1)
    assert np.all((ratios > 0.5 - 1e-4) & (ratios < 2.0 + 1e-4)) and np.ptp(ratios) > 0.3
    # validation crops are never augmented
    sampler = CropSampler([volume], (4, 8, 8), seed=3, image_augment=aug)
    fixed = CropSampler([volume], (4, 8, 8), seed=3).fixed_crops(2, seed=0)
    for a, b in zip(sampler.fixed_crops(2, seed=0), fixed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])


def test_bad_ranges_are_clear_config_errors() -> None:
    with pytest.raises(ValidationError, match="low <= high"):
        IntensityAugmentConfig(scale=(2.0, 0.5))
    with pytest.raises(ValidationError):
        IntensityAugmentConfig(scale=(0.0, 2.0))  # a gain must be positive
    with pytest.raises(ValidationError):
        IntensityAugmentConfig(probability=1.5)


def test_train_detector_records_and_uses_the_augmentation(tmp_path) -> None:
    from test_train_detector import TINY_DICT, _make_sample

    from fewlabel.detection.density.training import train_detector
    from fewlabel.models.store import load_model

    train, val = _make_sample(tmp_path, "a", 1), _make_sample(tmp_path, "b", 2)
    params = {**TINY_DICT, "intensity_augment": {"probability": 1.0, "noise_probability": 1.0}}
    cfg = DetectorTrainConfig.model_validate(params)
    train_detector([train], [val], tmp_path / "aug", params=cfg, seed=5, threads=1)
    train_detector(
        [train], [val], tmp_path / "plain",
        params=DetectorTrainConfig.model_validate(TINY_DICT), seed=5, threads=1,
    )  # fmt: skip
    recorded = load_model(tmp_path / "aug", expect="dmdetnet3d").training["params"]
    assert recorded["intensity_augment"]["probability"] == 1.0
    curves = [
        (tmp_path / name / "curve.tsv").read_text().splitlines()[1:] for name in ("aug", "plain")
    ]
    assert curves[0] != curves[1]  # the augmented crops changed the training losses
    assert json.loads((tmp_path / "aug" / "thresholds.json").read_text())["gate_unit"] == "um"


def test_pu_windows_get_one_gain_each_and_nothing_changes_when_off() -> None:
    from fewlabel.detection.pu.sampling import PUVolume, WindowSampler

    rng = np.random.default_rng(4)
    image = rng.normal(0.0, 1.0, (8, 32, 32)).astype(np.float32)
    vol = PUVolume("v", image, np.array([[4.0, 16.0, 16.0]]), (0.3, 0.1, 0.1))
    vol.prepare(0.2)
    kwargs = {"rotate_yx": False, "flip": False, "scale": (1.0, 1.0)}
    plain = WindowSampler([vol], (3, 7, 7), **kwargs)
    off = WindowSampler([vol], (3, 7, 7), intensity=IntensityAugmentConfig().build(), **kwargs)
    on = WindowSampler([vol], (3, 7, 7), intensity=GAIN_ONLY, **kwargs)
    x_plain, _ = plain.batch(np.random.default_rng(0), 2, 6)
    x_off, _ = off.batch(np.random.default_rng(0), 2, 6)
    x_on, labels = on.batch(np.random.default_rng(0), 2, 6)
    assert np.array_equal(x_plain.numpy(), x_off.numpy())
    assert x_on.shape == x_plain.shape and labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    ratio = (x_on / x_plain).numpy().reshape(8, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(ratio.shape[1], 1), rtol=1e-4)
    assert np.all((ratio[:, 0] >= 0.5 - 1e-4) & (ratio[:, 0] <= 2.0 + 1e-4))
    assert np.ptp(ratio[:, 0]) > 0.1
