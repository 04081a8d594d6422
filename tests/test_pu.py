"""detection/pu: GE-binomial loss, class prior, multitask weights, classifier (dense ==
windowed, through the tiled engine), post-processing steps and bad inputs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy import stats

from fewlabel.config import PredictConfig, RoiConfig
from fewlabel.config.pu import PUConfig, PUPostprocessConfig
from fewlabel.detection.pu.classifier import ARCH_NAME, PUClassifier, parameter_count
from fewlabel.detection.pu.fit import resolve_prior
from fewlabel.detection.pu.loss import MultiTaskLoss, ge_binomial_loss, log_binomial, pn_loss
from fewlabel.detection.pu.postprocess import (
    average_overlapping,
    intensity_keep,
    postprocess,
    recentre_point,
    threshold_for_count,
)
from fewlabel.detection.pu.sampling import (
    PUVolume,
    ball_offsets,
    check_radius,
    check_volumes,
    class_prior_voxels,
    unlabelled_prior,
)
from fewlabel.detection.pu.training import train_pu
from fewlabel.errors import ConfigError

TINY = {"width": 4, "channels": [4, 8], "expand": 2, "head_channels": 8}


# ----------------------------------------------------------------------------- loss
def _ge_numpy(pos: np.ndarray, unl: np.ndarray, pi: float, slack: float) -> float:
    """Paper eq. 1 / Topaz GE_binomial evaluated directly (float64, scipy's binomial)."""
    p_pos = 1 / (1 + np.exp(-pos))
    bce = -np.mean(np.log(p_pos))
    p = 1 / (1 + np.exp(-unl))
    n = len(unl)
    mu, var = p.sum(), (p * (1 - p)).sum()
    k = np.arange(n + 1)
    logits = -((mu - k) ** 2) / (2 * var)
    q = np.exp(logits - logits.max())
    q /= q.sum()
    return bce - slack * float(np.sum(q * stats.binom.logpmf(k, n, pi)))


@pytest.mark.parametrize(
    ("n_pos", "n_unl", "pi", "slack"), [(1, 3, 0.2, 1.0), (4, 10, 0.05, 0.5), (2, 40, 0.3, 2.0)]
)
def test_ge_binomial_matches_numpy(n_pos, n_unl, pi, slack):
    rng = np.random.default_rng(n_unl)
    pos, unl = rng.normal(0, 2, n_pos), rng.normal(-1, 2, n_unl)
    got = ge_binomial_loss(torch.tensor(pos), torch.tensor(unl), pi=pi, slack=slack)
    assert float(got) == pytest.approx(_ge_numpy(pos, unl, pi, slack), rel=1e-4, abs=1e-5)


def test_log_binomial_is_stable_for_large_n():
    ref = stats.binom.logpmf(np.arange(2001), 2000, 0.01)
    got = log_binomial(2000, 0.01).numpy()
    assert np.all(np.isfinite(got))
    assert np.allclose(got[:200], ref[:200], rtol=1e-4)


def test_ge_penalty_prefers_the_prior_count():
    """Unlabelled scores whose expected positive count matches Nπ cost less than all-negative
    or all-positive ones."""
    n, pi = 50, 0.1
    matched = torch.full((n,), math.log(pi / (1 - pi)))
    costs = [
        float(ge_binomial_loss(torch.zeros(0), s, pi=pi))
        for s in (matched, torch.full((n,), -8.0), torch.full((n,), 8.0))
    ]
    assert costs[0] < costs[1] and costs[0] < costs[2]


def test_pn_loss_is_bce_with_unlabelled_negative():
    pos, unl = torch.tensor([2.0]), torch.tensor([-1.0, 0.5])
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.5))])
    assert float(pn_loss(pos, unl)) == pytest.approx(expected, rel=1e-6)


def test_multitask_weights_are_trainable():
    mtl = MultiTaskLoss(2)
    assert all(p.requires_grad for p in mtl.parameters())
    opt = torch.optim.SGD(mtl.parameters(), lr=0.1)
    before = mtl.log_vars.detach().clone()
    loss = mtl(torch.tensor(5.0), torch.tensor(0.1))
    assert float(loss.detach()) == pytest.approx(5.1)  # s = 0: plain sum
    loss.backward()
    opt.step()
    # d/ds (e^-s L + s) = 1 - L: the large loss's log-variance grows (its weight shrinks)
    assert mtl.log_vars[0] > before[0] and mtl.log_vars[1] < before[1]


# ----------------------------------------------------------------------------- prior
def test_class_prior_counts_the_anisotropic_ball():
    # r = 0.35 µm at 0.3 x 0.1 x 0.1 µm: z = 0 disk y² + x² <= 12.25 (37 voxels), z = ±1 disk
    # y² + x² <= 3.25 (9 voxels each): 55
    assert len(ball_offsets(0.35, (0.3, 0.1, 0.1))) == 55
    pi, batch = class_prior_voxels(10, 0.35, (0.3, 0.1, 0.1), 100_000)
    assert pi == pytest.approx(0.0055)
    assert batch == 182


def test_unlabelled_prior_subtracts_the_labelled_fraction():
    assert unlabelled_prior(0.1, 0.04) == pytest.approx(0.06 / 0.96)


def test_pi_not_above_labelled_fraction_is_an_error():
    with pytest.raises(ConfigError, match="spots_train.*expected_particles"):
        unlabelled_prior(0.01, 0.02, sample="spots_train")


# ----------------------------------------------------------------------------- classifier
def test_classifier_is_registered_and_small():
    from fewlabel.models.store import build_model

    module = build_model({"name": ARCH_NAME, "kwargs": {"window": [12, 24, 24]}})
    assert module.receptive_field() == (12, 24, 24)
    assert parameter_count(module, include_decoder=False) < 100_000


def test_dense_map_through_the_engine_equals_window_classification(tmp_path):
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import open_ome_zarr, write_ome_zarr
    from fewlabel.models.store import save_model

    torch.manual_seed(0)
    window = (5, 9, 9)
    module = PUClassifier(window, **TINY, drop_connect=0.0).eval()
    for m in module.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    save_model(
        tmp_path / "model",
        module,
        arch={"name": ARCH_NAME, "kwargs": {"window": list(window), **TINY, "drop_connect": 0.0}},
        training={},
        normalization={"range": [0.0, 1.0]},
    )
    image = np.random.default_rng(0).random((14, 40, 44)).astype(np.float32)
    write_ome_zarr(tmp_path / "image.ome.zarr", image, (0.3, 0.1, 0.1), chunks=(7, 20, 22))
    params = PredictConfig(tile=(8, 24, 24), overlap=(4, 8, 8))
    predict_volume(
        tmp_path / "model", tmp_path / "image.ome.zarr", tmp_path / "map.ome.zarr",
        params=params, sample="s", device="cpu",
    )  # fmt: skip
    dense = np.asarray(open_ome_zarr(tmp_path / "map.ome.zarr").array[...])
    rng = np.random.default_rng(1)
    centres = np.stack(
        [rng.integers(w // 2, n - (w - w // 2) + 1, 25) for w, n in zip(window, image.shape)], 1
    )
    windows = np.stack(
        [
            image[tuple(slice(c - w // 2, c - w // 2 + w) for c, w in zip(ctr, window))]
            for ctr in centres
        ]
    )
    with torch.inference_mode():
        logits, _ = module.classify(torch.from_numpy(windows[:, None]))
    expected = torch.sigmoid(logits).numpy()
    assert np.allclose(dense[tuple(centres.T)], expected, atol=2e-5)


def test_pu_predicts_on_the_image_grid_and_warns_off_its_training_grid(tmp_path, capsys):
    """A PU folder records its training grid (z 0.4 µm) but predict_pu never resamples to it
    (detection.pu.predict has no model_grid; resampling measured worse for PU): a 0.3 µm
    volume keeps its shape, and postprocess_pu warns that the grids differ (not on 0.4 µm)."""
    import json

    from fewlabel.cli import main
    from fewlabel.io import open_ome_zarr, write_ome_zarr
    from fewlabel.models.store import save_model

    torch.manual_seed(0)
    window = (5, 9, 9)
    module = PUClassifier(window, **TINY, drop_connect=0.0).eval()
    save_model(
        tmp_path / "model",
        module,
        arch={"name": ARCH_NAME, "kwargs": {"window": list(window), **TINY, "drop_connect": 0.0}},
        training={"stage": "train_pu", "voxel_size_um": [0.4, 0.1, 0.1]},
        thresholds={"detection_threshold": 0.5, "radius_um": 0.15, "expected_particles": 5},
        normalization={"range": [0.0, 1.0]},
    )
    predict = PUConfig().predict.model_dump(mode="json")
    predict.update(tile=[8, 24, 24], overlap=[4, 8, 8])
    image = np.random.default_rng(0).random((14, 40, 44)).astype(np.float32)
    for name, voxel, warned in (("own", (0.3, 0.1, 0.1), True), ("grid", (0.4, 0.1, 0.1), False)):
        path = tmp_path / f"{name}.ome.zarr"
        write_ome_zarr(path, image, voxel, chunks=(7, 20, 22))
        score = tmp_path / f"{name}_score.ome.zarr"
        common = ["--sample", "s", "--model-dir", str(tmp_path / "model"), "--image", str(path)]
        assert main(["predict_pu", *common, "--output", str(score),
                     "--params", json.dumps(predict)]) == 0  # fmt: skip
        assert open_ome_zarr(score).shape == image.shape  # the image's own grid
        capsys.readouterr()
        assert main(["postprocess_pu", *common, "--score-map", str(score),
                     "--output", str(tmp_path / f"{name}.csv")]) == 0  # fmt: skip
        said = capsys.readouterr().err
        assert ("WARNING" in said and "training grid [0.4, 0.1, 0.1]" in said) == warned, said
        assert ("add clicks on a volume of this voxel size" in said) == warned


# ----------------------------------------------------------------------------- post-processing
def test_two_overlapping_detections_are_averaged():
    pts = np.array([[5.0, 10.0, 10.0], [5.0, 10.0, 12.0], [5.0, 40.0, 40.0]])
    out, scores = average_overlapping(pts, np.array([0.9, 0.7, 0.8]), (0.3, 0.1, 0.1), 0.3)
    order = np.argsort(out[:, 1])
    assert np.allclose(out[order], [[5.0, 10.0, 11.0], [5.0, 40.0, 40.0]])
    assert np.allclose(scores[order], [0.9, 0.8])


def test_recentring_converges_to_the_blob_centre():
    centre = np.array([10.3, 20.6, 19.4])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (24, 40, 40)], indexing="ij"), -1)
    image = 5 + 100 * np.exp(-(((grid - centre) / np.array([1.5, 2.0, 2.0])) ** 2).sum(-1) / 2)
    got, iterations = recentre_point(image, centre + [1.0, 2.0, -2.0], (4, 6, 6), tol=0.1)
    assert np.linalg.norm(got - centre) < 0.1
    assert 1 < iterations < 20


def test_otsu_filter_drops_a_candidate_on_background():
    rng = np.random.default_rng(0)
    image = rng.normal(10, 1, (16, 64, 64))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1)
    blobs = np.array([[8, 16, 16], [8, 48, 20], [8, 30, 50]])
    for b in blobs:
        image += 60 * np.exp(-(((grid - b) / np.array([1.5, 2.5, 2.5])) ** 2).sum(-1) / 2)
    candidates = np.vstack([blobs, [[8, 56, 56]]]).astype(float)
    keep, threshold = intensity_keep(
        image.astype(np.float32),
        candidates,
        (0.3, 0.1, 0.1),
        PUPostprocessConfig(clahe_kernel_um=(4.8, 3.2, 3.2)),
        (1, 2, 2),
    )
    assert keep.tolist() == [True, True, True, False]


def test_postprocess_counts_each_step_and_keeps_the_csv_columns():
    score = np.zeros((12, 48, 48), np.float32)
    image = np.full(score.shape, 10.0, np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in score.shape], indexing="ij"), -1)
    for c in ([6, 12, 12], [6, 12, 15], [6, 36, 36]):  # two overlapping maxima + one
        g = np.exp(-(((grid - c) / np.array([1.0, 1.5, 1.5])) ** 2).sum(-1) / 2)
        score = np.maximum(score, 0.9 * g.astype(np.float32))
        image += 50 * g
    table, steps = postprocess(
        score, image, threshold=0.5, radius_um=0.2, voxel_size=(0.3, 0.1, 0.1),
        params=PUPostprocessConfig(clahe_kernel_um=(3.6, 2.4, 2.4), edge_margin_um=0.3),
    )  # fmt: skip
    assert [s["step"] for s in steps] == [
        "threshold+nms", "average", "recentre", "intensity_filter", "edge_margin",
    ]  # fmt: skip
    assert [(s["in"], s["out"]) for s in steps][:2] == [(3, 3), (3, 2)]
    assert list(table.columns) == ["z", "y", "x", "z_um", "y_um", "x_um", "score"]
    assert len(table) == 2
    assert table["y_um"].to_numpy() == pytest.approx(table["y"].to_numpy() * 0.1)


def _paired_maxima_map() -> np.ndarray:
    """Six particles, each two score maxima 3 voxels apart (two barrels): both survive the
    NMS (radius 2 voxels), the averaging (distance 2r = 4) merges them."""
    score = np.zeros((8, 40, 64), np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in score.shape], indexing="ij"), -1)
    for i in range(6):
        for dx, amp in ((0, 0.9), (3, 0.85)):
            c = np.array([4, 8 + 12 * (i % 3), 10 + 30 * (i // 3) + dx])
            g = np.exp(-(((grid - c) / 0.8) ** 2).sum(-1) / 2)
            score = np.maximum(score, (amp - 0.1 * i) * g.astype(np.float32))
    return score


def test_count_threshold_counts_particles_after_averaging():
    score = _paired_maxima_map()
    post = PUPostprocessConfig(recentre=False, intensity_filter=False)
    merge = post.merge_factor * 2 * 2.0
    kept = {}
    for name, merge_um in (("nms", None), ("merged", merge)):
        t = threshold_for_count([score], 6, 2.0, [(1.0, 1.0, 1.0)], merge_um=merge_um)
        table, steps = postprocess(
            score, score, threshold=t, radius_um=2.0, voxel_size=(1, 1, 1), params=post
        )
        kept[name] = (len(table), steps[0]["out"])
    # the NMS count reaches k = 6 with three particles (two maxima each): recall capped at 1/2
    assert kept["nms"] == (3, 6)
    # counting after the averaging step keeps the six particles (eleven NMS candidates: the
    # weakest particle's second maximum lies below its group's score)
    assert kept["merged"] == (6, 11)


# ----------------------------------------------------------------------------- bad input
def _volume(clicks, roi=None, sample="vol1"):
    image = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    vol = PUVolume(sample, image, np.asarray(clicks, float), (0.3, 0.1, 0.1), roi=roi)
    vol.prepare(0.2)
    return vol


def test_radius_larger_than_the_window_is_an_error():
    with pytest.raises(ConfigError, match="window"):
        check_radius(1.0, (0.3, 0.1, 0.1), (5, 9, 9))


def test_fewer_clicks_than_batch_positives_and_clicks_outside_roi_warn(caplog):
    roi = np.zeros((8, 32, 32), bool)
    roi[:, :16] = True
    vol = _volume([[4, 8, 8], [4, 24, 24]], roi=roi)
    with caplog.at_level(logging.WARNING):
        check_volumes([vol], n_positive=4, radius_um=0.2, window=(5, 9, 9))
    text = caplog.text
    assert "vol1: 1 of 2 clicks lie outside the ROI" in text
    assert "2 clicks but 4 positive windows per batch" in text and "positive_share" in text


def test_missing_radius_or_count_is_an_error():
    with pytest.raises(ConfigError, match="radius_um"):
        resolve_prior(PUConfig(), RoiConfig())
    assert resolve_prior(PUConfig(radius_um=0.2), RoiConfig(expected_particles=5,
                         particle_radius_um=0.3)) == (0.2, 5.0)  # fmt: skip


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("mode", ["swa", "ema"])
def test_training_averages_and_is_deterministic(mode):
    params = PUConfig(
        window=(5, 9, 9),
        batch_size=8,
        steps=8,
        model=TINY,
        averaging={"mode": mode, "start": 0.5, "cycle_steps": 2},
    )
    states, summaries = [], []
    for _ in range(2):
        vol = _volume([[4, 8, 8], [4, 20, 20]])
        module, summary, curve = train_pu(
            [vol], params, radius_um=0.2, expected_particles=6, seed=3
        )
        states.append(module.state_dict())
        summaries.append(summary)
    assert summaries[0]["averaged_models"] == 2
    assert not module.training and len(curve) >= 1
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_training_score_map_equals_the_whole_volume_map():
    """The auto threshold's score map (tiled, bounded memory) equals the module applied to
    the whole volume, inside the ROI, and is zero outside it."""
    from fewlabel.detection.pu.fit import score_map

    torch.manual_seed(0)
    params = PUConfig(
        window=(5, 9, 9), model=TINY, predict={"tile": [8, 24, 24], "overlap": [4, 8, 8]}
    )
    module = PUClassifier((5, 9, 9), **TINY).eval()
    roi = np.zeros((8, 32, 32), bool)
    roi[:, 4:28, 4:28] = True
    vol = _volume([[4, 8, 8]], roi=roi)
    got = score_map(module, vol, params, "cpu")
    with torch.inference_mode():
        whole = module(torch.from_numpy(vol.image)[None, None])[0, 0].numpy()
    assert np.allclose(got[roi], whole[roi], atol=2e-5)
    assert not got[~roi].any()
