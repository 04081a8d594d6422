"""Copy-paste of close spot pairs (fewlabel.detection.density.pair_paste): what one paste
writes into the image, target and weight crops, the sampler hook, and a training run."""

from __future__ import annotations

import numpy as np

from fewlabel.config import DetectorTrainConfig
from fewlabel.detection.density.pair_paste import PairPaste
from fewlabel.detection.density.targets import density_target, weight_map
from fewlabel.sampling import CropSampler, CropVolume

VOXEL = (0.3, 0.1, 0.1)
SIGMA = (1.0, 1.5, 1.5)
CLICK = np.array([[6.0, 16.0, 16.0]])


def _crop():
    """A spot (amplitude 10 on background 2) at CLICK; its target and a partial weight map:
    λ + 1 on the spot, 1 in its 4 σ neighbourhood, 0 (unknown) elsewhere."""
    target = density_target((12, 32, 32), CLICK, SIGMA)
    image = (2.0 + 10.0 * target).astype(np.float32)
    weight = weight_map(target, lam=10.0, T=0.2)
    zz, yy, xx = np.ogrid[:12, :32, :32]
    inside = ((zz - 6) / 4.0) ** 2 + ((yy - 16) / 6.0) ** 2 + ((xx - 16) / 6.0) ** 2 <= 1
    return [image, target, np.where(inside, weight, 0.0).astype(np.float32)]


def _paste(probability=1.0):
    return PairPaste(probability, (0.4, 0.8), VOXEL, SIGMA, (4.0, 6.0, 6.0), 0.2)


def test_a_paste_adds_a_second_spot_its_target_and_its_known_neighbourhood():
    image, target, weight = _crop()
    for seed in range(20):
        new_image, new_target, new_weight = _paste()(
            [image, target, weight], CLICK, np.random.default_rng(seed)
        )
        peaks = np.argwhere(new_target == 1.0)
        assert len(peaks) == 2 and [6, 16, 16] in peaks.tolist()  # the click keeps its peak
        other = next(p for p in peaks if p.tolist() != [6, 16, 16])
        distance = float(np.linalg.norm((other - CLICK[0]) * VOXEL))
        assert 0.4 - 0.2 <= distance <= 0.8 + 0.2, distance  # whole-voxel rounding
        # the copy is the spot above its background, added (fluorescence adds photons)
        assert new_image[tuple(other)] > image[tuple(other)] + 5.0
        np.testing.assert_allclose(new_image[tuple(other)] - image[tuple(other)], 10.0, atol=0.5)
        assert np.array_equal(new_image[:, :, 28:], image[:, :, 28:])  # far away: untouched
        assert new_weight[tuple(other)] == weight[6, 16, 16] == 11.0  # known, positive
        assert np.array_equal(new_weight > 0, (new_weight > 0) | (weight > 0))
        assert np.all(new_target >= target)
    assert _paste(0.0)([image, target, weight], CLICK, np.random.default_rng(0))[0] is image


def test_no_paste_without_a_known_click_inside_the_crop():
    image, target, weight = _crop()
    for clicks in (np.zeros((0, 3)), np.array([[0.0, 1.0, 1.0]]), CLICK + [0, 14, 14]):
        out = _paste()([image, target, weight], clicks, np.random.default_rng(0))
        assert out[0] is image
    unknown = [image, target, np.zeros_like(weight)]
    assert _paste()(unknown, CLICK, np.random.default_rng(0))[0] is image


def test_the_sampler_gives_the_hook_the_clicks_in_crop_coordinates():
    image, target, weight = _crop()
    big = [np.pad(a, ((0, 0), (20, 0), (30, 0))) for a in (image, target, weight)]
    clicks = CLICK + [0, 20, 30]
    seen = []

    def hook(arrays, crop_clicks, rng):
        seen.append((crop_clicks, arrays[1]))
        return _paste()(arrays, crop_clicks, rng)

    volume = CropVolume(big, name="v", centres=clicks, points=clicks, crop_augment=hook)
    sampler = CropSampler([volume], (12, 24, 24), seed=0, point_fraction=1.0, flip_axes=())
    _, targets, _ = sampler.sample(8)
    assert len(seen) == 8
    for (crop_clicks, crop_target), out in zip(seen, targets, strict=True):
        at = tuple(np.rint(crop_clicks[0]).astype(int))
        assert crop_target[at] == 1.0  # the click's own target peak: crop coordinates
        assert int((out == 1.0).sum()) in (1, 2)  # 2 where the copy fits in the crop
    assert sum(int((out == 1.0).sum()) == 2 for out in targets) >= 2


def test_train_detector_records_and_uses_the_pair_augmentation(tmp_path):
    from test_train_detector import TINY_DICT, _make_sample

    from fewlabel.detection.density.training import train_detector
    from fewlabel.models.store import load_model

    train, val = _make_sample(tmp_path, "a", 1), _make_sample(tmp_path, "b", 2)
    runs = {"plain": TINY_DICT, "pairs": {**TINY_DICT, "pair_augment": {"probability": 1.0}}}
    for name, params in runs.items():
        cfg = DetectorTrainConfig.model_validate(params)
        train_detector([train], [val], tmp_path / name, params=cfg, seed=5, threads=1)
    recorded = load_model(tmp_path / "pairs", expect="dmdetnet3d").training["params"]
    assert recorded["pair_augment"] == {"probability": 1.0, "distance_um": [0.4, 0.8]}
    curves = [(tmp_path / n / "curve.tsv").read_text().splitlines()[1:] for n in runs]
    assert curves[0] != curves[1]  # the pasted pairs changed the training losses
