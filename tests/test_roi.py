"""ROI segmentation (fewlabel.roi): particles kept, compactness, chunked == whole volume, π."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest

from fewlabel import roi
from fewlabel.cli import main as cli_main
from fewlabel.config import RoiConfig, parse
from fewlabel.errors import ConfigError, FewlabelError, InputDataError
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.roi import (
    class_prior,
    erode_dilate,
    fit_gmm_1d,
    prior_warnings,
    segment_roi,
)
from fewlabel.synth import spot_volume

log = logging.getLogger(__name__)

# PTC-like spots (SNR 4, Poisson, uneven background + bright clutter blobs), 1.0 x 0.2 x 0.2 µm
# voxels: a widefield / spinning-disk stack with 1 µm steps; spots have σ = 0.7 x 0.2 x 0.2 µm.
VOXEL = (1.0, 0.2, 0.2)
SHAPE = (16, 96, 96)
# This synthetic's background varies by only ±40%, which a 2 µm CLAHE with a clip limit of
# 0.005 leaves almost as it is (the regions hold 200 voxels, so every histogram bin is
# clipped to one count); the test checks the rest of the chain at that setting.
SPOT_PARAMS = {"clahe_clip_limit": 0.005}


def _spots(tmp_path, seed: int, voxel=VOXEL, chunks=(8, 48, 48)):
    s = spot_volume(SHAPE, snr=4.0, density="medium", clutter=True, seed=seed)
    path = tmp_path / f"spots{seed}.ome.zarr"
    write_ome_zarr(path, np.round(s.image).astype(np.uint16), voxel, chunks=chunks)
    return path, s.points[["z", "y", "x"]].to_numpy()


def _mask(path) -> np.ndarray:
    return np.asarray(open_ome_zarr(path).array[...])


@pytest.mark.parametrize("seed", [0, 1])
def test_roi_keeps_particles_and_is_compact(tmp_path, seed):
    image, points = _spots(tmp_path, seed)
    params = RoiConfig.model_validate(SPOT_PARAMS)
    summary = segment_roi(
        image,
        tmp_path / "roi.ome.zarr",
        tmp_path / "roi.json",
        params=params,
        sample=f"spots{seed}",
        seed=0,
    )
    mask = _mask(tmp_path / "roi.ome.zarr")
    centres = np.clip(np.round(points).astype(int), 0, np.array(SHAPE) - 1)
    kept = float(mask[tuple(centres.T)].mean())
    fraction = float(mask.mean())
    message = (
        f"ROI seed {seed}: kept {kept:.3f} of {len(centres)} particles, covers "
        f"{fraction:.3f} of the volume; GMM weights {summary['gmm']['weights']}"
    )
    print(message)
    log.info(message)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert summary["roi_voxels"] == int(mask.sum())
    assert summary["total_voxels"] == mask.size
    assert summary["roi_fraction"] == pytest.approx(fraction)
    assert kept >= 0.99
    assert fraction <= 0.25
    on_disk = json.loads((tmp_path / "roi.json").read_text())
    assert on_disk["roi_voxels"] == summary["roi_voxels"]
    assert on_disk["warnings"] == [] and on_disk["pi"] is None
    assert not list(tmp_path.glob(".*"))  # no staging or temporary output left behind


def test_chunked_roi_equals_whole_volume(tmp_path):
    # CLAHE strong enough to matter, active erosion, subsampled fit (random chunks)
    image, _ = _spots(tmp_path, 3, voxel=(0.5, 0.2, 0.2), chunks=(8, 32, 32))
    params = RoiConfig.model_validate(
        {
            "clahe_clip_limit": 0.03,
            "erosion_radius_um": 0.2,
            "extend_radius_um": 0.6,
            "max_fit_voxels": 20000,
        }
    )
    chunked = segment_roi(
        image,
        tmp_path / "c.ome.zarr",
        tmp_path / "c.json",
        params=params,
        sample="s",
        workers=2,
        seed=5,
    )
    whole = segment_roi(
        image,
        tmp_path / "w.ome.zarr",
        tmp_path / "w.json",
        params=params,
        sample="s",
        workers=1,
        seed=5,
        block_shape=SHAPE,
    )
    a, b = _mask(tmp_path / "c.ome.zarr"), _mask(tmp_path / "w.ome.zarr")
    agreement = float((a == b).mean())
    print(
        f"chunked vs whole-volume ROI agreement {agreement:.6f}, ROI fraction "
        f"{a.mean():.3f} / {b.mean():.3f}"
    )
    assert 0.02 < a.mean() < 0.98  # a non-trivial mask
    assert chunked["gmm"] == whole["gmm"]
    assert agreement == 1.0  # block-wise views and the CLAHE core are exact
    assert open_ome_zarr(tmp_path / "c.ome.zarr").array.chunks == (8, 32, 32)
    assert open_ome_zarr(tmp_path / "c.ome.zarr").voxel_size == (0.5, 0.2, 0.2)


def test_corrected_view_blocks_equal_whole(rng):
    image = rng.poisson(50, size=(12, 40, 44)).astype(np.float32)
    image[:, :, 20:] += 40  # a step in the background
    kernel = (3, 7, 9)
    smoothed = roi.SmoothedView(image, (0.6, 1.2, 1.2))
    whole = roi.CorrectedView(smoothed, 40.0, 110.0, kernel, 0.05)[...]
    view = roi.CorrectedView(smoothed, 40.0, 110.0, kernel, 0.05)
    tiled = roi.CorrectedView(smoothed, 40.0, 110.0, kernel, 0.05)
    tiled.max_tile_bytes = 600_000  # forces recursive splitting (whole context: 12x40x44)
    for z, y, x in itertools.product((0, 5, 9), (0, 13, 31), (0, 17, 30)):
        block = (slice(z, z + 3), slice(y, y + 9), slice(x, x + 14))
        np.testing.assert_array_equal(view[block], whole[block])
    np.testing.assert_array_equal(tiled[...], whole)


def test_class_prior_known_numbers():
    roi_um3 = 10 * (4.0 / 3.0) * math.pi * 1.0**3 / 0.1  # 10 unit balls fill 10%
    pi, batch = class_prior(10, 1.0, roi_um3)
    assert pi == pytest.approx(0.1)
    assert batch == 10
    assert prior_warnings(pi) == []
    assert class_prior(3, 0.5, 100.0)[1] == math.ceil(100.0 / (3 * (4 / 3) * math.pi * 0.125))


def test_pi_in_summary_and_implausible_warnings(tmp_path, caplog):
    image, _ = _spots(tmp_path, 0)
    base = dict(SPOT_PARAMS, particle_radius_um=0.3)
    good = segment_roi(
        image,
        tmp_path / "a.ome.zarr",
        tmp_path / "a.json",
        sample="s",
        params=RoiConfig.model_validate(dict(base, expected_particles=41)),
    )
    expected = 41 * (4 / 3) * math.pi * 0.3**3 / (good["roi_voxels"] * 0.04)
    assert good["roi_volume_um3"] == pytest.approx(good["roi_voxels"] * 0.04)
    assert good["pi"] == pytest.approx(expected)
    assert good["min_batch_size"] == math.ceil(1 / expected)
    assert good["warnings"] == []
    print(f"pi={good['pi']:.4f}, min batch {good['min_batch_size']}")

    with caplog.at_level(logging.WARNING, logger="fewlabel.roi"):
        high = segment_roi(
            image,
            tmp_path / "b.ome.zarr",
            tmp_path / "b.json",
            sample="s",
            params=RoiConfig.model_validate(dict(base, expected_particles=100000)),
        )
    assert high["pi"] > 0.5 and len(high["warnings"]) == 1 and "> 0.5" in high["warnings"][0]
    assert any("pi=" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert json.loads((tmp_path / "b.json").read_text())["warnings"] == high["warnings"]
    low = segment_roi(
        image,
        tmp_path / "c.ome.zarr",
        tmp_path / "c.json",
        sample="s",
        params=RoiConfig.model_validate(
            dict(SPOT_PARAMS, expected_particles=1, particle_radius_um=0.01)
        ),
    )
    assert low["pi"] < 1e-4 and "< 0.0001" in low["warnings"][0]


def test_single_plane_volume(tmp_path):
    s = spot_volume((1, 96, 96), snr=6.0, density=2000, clutter=False, seed=2)
    path = tmp_path / "plane.ome.zarr"
    write_ome_zarr(path, np.round(s.image).astype(np.uint16), (1.0, 0.2, 0.2), chunks=(1, 48, 48))
    summary = segment_roi(
        path,
        tmp_path / "m.ome.zarr",
        tmp_path / "m.json",
        sample="plane",
        params=RoiConfig(),
        workers=2,
    )
    mask = _mask(tmp_path / "m.ome.zarr")
    centres = np.round(s.points[["z", "y", "x"]].to_numpy()).astype(int)
    assert mask.shape == (1, 96, 96) and 0 < summary["roi_fraction"] < 1
    assert mask[tuple(centres.T)].mean() >= 0.9


def test_constant_volume_is_a_clear_error(tmp_path):
    path = tmp_path / "flat.ome.zarr"
    write_ome_zarr(path, np.full((8, 32, 32), 7, np.uint16), VOXEL, chunks=(4, 16, 16))
    with pytest.raises(FewlabelError, match="sample 'flatvol'.*constant"):
        segment_roi(
            path, tmp_path / "m.ome.zarr", tmp_path / "m.json", params=RoiConfig(), sample="flatvol"
        )
    assert not (tmp_path / "m.ome.zarr").exists() and not (tmp_path / "m.json").exists()


def test_gmm_recovers_a_known_mixture(rng):
    values = np.concatenate([rng.normal(0.3, 0.05, 70000), rng.normal(0.7, 0.08, 30000)])
    gmm = fit_gmm_1d(values)
    assert gmm.means == pytest.approx((0.3, 0.7), abs=0.005)
    assert np.sqrt(gmm.variances) == pytest.approx((0.05, 0.08), abs=0.005)
    assert gmm.weights == pytest.approx((0.7, 0.3), abs=0.01)
    assert gmm.converged
    post = gmm.posterior_bright(np.array([0.2, 0.5, 0.9]))
    assert post[0] < 0.01 and post[2] > 0.99


def test_gmm_finds_a_sparse_bright_tail(rng):
    values = np.concatenate([rng.normal(0.5, 0.1, 98000), rng.normal(0.95, 0.02, 2000)])
    gmm = fit_gmm_1d(np.clip(values, 0, 1))
    assert gmm.means[1] == pytest.approx(0.95, abs=0.01)
    assert gmm.weights[1] == pytest.approx(0.02, abs=0.005)


def test_gmm_degenerate_inputs_raise():
    with pytest.raises(InputDataError, match="sample 'x'.*constant"):
        fit_gmm_1d(np.full(1000, 0.4), sample="x")
    with pytest.raises(InputDataError, match="degenerate"):
        fit_gmm_1d(np.r_[np.zeros(10**6), 1.0], sample="x")


def test_ball_morphology_is_exact():
    voxel = (0.5, 0.2, 0.2)
    mask = np.zeros((15, 31, 31), bool)
    mask[7, 15, 15] = True
    grown = erode_dilate(mask, voxel, 0.0, 1.0)
    d = np.array(list(itertools.product(range(-7, 8), range(-15, 16), range(-15, 16))))
    expected = int(((d * voxel) ** 2).sum(axis=1).__le__(1.0 + 1e-9).sum())
    assert int(grown.sum()) == expected
    assert not erode_dilate(mask, voxel, 0.2, 0.0).any()  # a lone voxel is eroded away
    cube = np.zeros_like(mask)
    cube[5:10, 10:21, 10:21] = True
    assert erode_dilate(cube, voxel, 0.2, 0.0).sum() == 5 * 9 * 9  # xy cross, no z reach


def test_params_validation():
    assert RoiConfig.model_validate({}) == RoiConfig()
    assert RoiConfig(clahe_kernel_voxels=[2, 8, 8]).clahe_kernel_voxels == (2, 8, 8)
    with pytest.raises(ConfigError, match=r"config key 'roi.posterior': unknown key"):
        parse(RoiConfig, {"posterior": 0.5})
    with pytest.raises(ConfigError, match=r"config key 'roi.posterior_threshold'"):
        parse(RoiConfig, {"posterior_threshold": 1.5})
    with pytest.raises(ConfigError, match="together"):
        parse(RoiConfig, {"expected_particles": 10})
    with pytest.raises(ConfigError, match="clip_percentiles"):
        parse(RoiConfig, {"clip_percentiles": [99, 1]})


def test_cli_segment_roi(tmp_path):
    image, _ = _spots(tmp_path, 0)
    mask, out = tmp_path / "r" / "roi.ome.zarr", tmp_path / "r" / "roi.json"
    code = cli_main(
        [
            "segment_roi",
            "--sample",
            "spots0",
            "--image",
            str(image),
            "--mask-out",
            str(mask),
            "--json-out",
            str(out),
            "--params",
            json.dumps(dict(SPOT_PARAMS, expected_particles=41, particle_radius_um=0.3)),
            "--threads",
            "2",
            "--seed",
            "1",
            "--log",
            str(tmp_path / "roi.log"),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    assert {
        "roi_fraction",
        "roi_voxels",
        "total_voxels",
        "gmm",
        "threshold",
        "pi",
        "min_batch_size",
        "warnings",
    } <= set(summary)
    assert set(summary["gmm"]) >= {"means", "variances", "weights"}
    assert open_ome_zarr(mask).array.dtype == np.uint8
    assert "ROI" in (tmp_path / "roi.log").read_text()
    bad = cli_main(
        [
            "segment_roi",
            "--sample",
            "spots0",
            "--image",
            str(image),
            "--mask-out",
            str(tmp_path / "x.ome.zarr"),
            "--json-out",
            str(tmp_path / "x.json"),
            "--params",
            '{"nonsense": 1}',
            "--log",
            str(tmp_path / "bad.log"),
        ]
    )
    assert bad == 2
    assert "config key 'roi.nonsense': unknown key" in (tmp_path / "bad.log").read_text()


def test_voxel_size_in_metres_fails_fast(tmp_path):
    # a voxel size in metres (3e-7) made the 0.15 µm smoothing a σ of 5e5 voxels: >17 min
    path = tmp_path / "metres.ome.zarr"
    image = np.random.default_rng(0).poisson(20, size=(8, 64, 64)).astype(np.uint16)
    write_ome_zarr(path, image, (1e-6, 3e-7, 3e-7), chunks=(8, 32, 32))
    with pytest.raises(ConfigError) as info:  # raised before any filtering, not after 17 min
        segment_roi(
            path, tmp_path / "m.ome.zarr", tmp_path / "m.json", params=RoiConfig(), sample="metres"
        )
    message = str(info.value)
    for part in (
        "sample 'metres'",
        "config key 'roi.smooth_sigma_um' = 0.15 µm",
        "voxel size (1e-06, 3e-07, 3e-07) µm",
        "(1.5e+05, 5e+05, 5e+05) voxels",
        "more than 256",
        "metres",
    ):
        assert part in message, (part, message)
    assert not (tmp_path / "m.ome.zarr").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "key, changes",
    [
        ("roi.clahe_kernel_um", {"smooth_sigma_um": 0.0}),
        ("roi.erosion_radius_um", {"smooth_sigma_um": 0.0, "clahe_kernel_voxels": [2, 8, 8]}),
        (
            "roi.extend_radius_um",
            {"smooth_sigma_um": 0.0, "clahe_kernel_voxels": [2, 8, 8], "erosion_radius_um": 0.0},
        ),
    ],
)
def test_every_um_kernel_is_bounded(tmp_path, key, changes):
    path = tmp_path / "metres.ome.zarr"
    write_ome_zarr(
        path,
        np.arange(8 * 32 * 32, dtype=np.uint16).reshape(8, 32, 32),
        (1e-6, 3e-7, 3e-7),
        chunks=(8, 32, 32),
    )
    with pytest.raises(ConfigError, match=rf"config key '{key}' = .* µm at voxel size"):
        segment_roi(
            path,
            tmp_path / "m.ome.zarr",
            tmp_path / "m.json",
            sample="s",
            params=RoiConfig.model_validate(changes),
        )


def test_kernel_limit_is_the_larger_of_the_cap_and_the_volume():
    assert roi.MAX_KERNEL_VOXELS == 256
    assert roi.kernel_voxels("k", 1.0, (0.5, 0.25, 0.25), (8, 64, 64)) == (2.0, 4.0, 4.0)
    assert max(roi.kernel_voxels("k", 51.2, (0.2, 0.2, 0.2), (8, 64, 64))) == 256.0
    with pytest.raises(ConfigError, match=r"'k' = 60.0 µm .* \(600, 600, 600\) voxels"):
        roi.kernel_voxels("k", 60.0, (0.1, 0.1, 0.1), (8, 64, 64))
    # a side larger than the cap raises the limit to that side
    assert max(roi.kernel_voxels("k", 60.0, (0.1, 0.1, 0.1), (8, 700, 700))) == 600.0
    with pytest.raises(ConfigError, match="more than 700"):
        roi.kernel_voxels("k", (1.0, 80.0, 80.0), (0.1, 0.1, 0.1), (8, 700, 700))
    # explicit CLAHE voxels are not a µm conversion (and are clipped to the shape)
    params = RoiConfig(clahe_kernel_voxels=[4, 1000, 1000])
    assert roi.clahe_kernel_voxels(params, (1e-6, 3e-7, 3e-7), (8, 64, 64)) == (4, 64, 64)
    with pytest.raises(ConfigError, match="roi.clahe_kernel_um"):
        roi.clahe_kernel_voxels(RoiConfig(), (1e-6, 3e-7, 3e-7), (8, 64, 64))


def _cells(tmp_path, shape=(20, 120, 120), voxel=(5.0, 2.0, 2.0), count=20, seed=0):
    """Cell-like blobs (σ 4 µm) on Poisson background, coarse voxels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    image = rng.poisson(100, shape).astype(np.float32)
    for c in rng.uniform((0, 0, 0), shape, size=(count, 3)):
        r2 = ((z - c[0]) * voxel[0]) ** 2 + ((y - c[1]) * voxel[1]) ** 2
        image += 300 * np.exp(-(r2 + ((x - c[2]) * voxel[2]) ** 2) / (2 * 4.0**2))
    path = tmp_path / "cells.ome.zarr"
    write_ome_zarr(path, image.astype(np.uint16), voxel, chunks=(shape[0], 64, 64))
    return path


def test_coarse_voxels_raise_kernels_to_a_minimum(tmp_path, caplog):
    # 5 x 2 x 2 µm voxels: the default 2 µm CLAHE region was 1 voxel (491 s, 3 GB on 20 MB:
    # one 256-bin histogram per voxel) and the 0.15 µm smoothing 0.03-0.075 voxel (no-op)
    path = _cells(tmp_path)
    with caplog.at_level(logging.WARNING):
        summary = segment_roi(
            path, tmp_path / "m.ome.zarr", tmp_path / "m.json", params=RoiConfig(), sample="brain"
        )
    assert summary["clahe_kernel_voxels"] == [8, 8, 8]  # not 1 voxel: the cause of the 491 s
    assert summary["smooth_sigma_voxels"] == [0.5, 0.5, 0.5]
    on_disk = json.loads((tmp_path / "m.json").read_text())
    clahe = on_disk["adjusted"]["roi.clahe_kernel_um"]
    assert clahe["requested"] == [1, 1, 1] and clahe["used"] == [8, 8, 8]
    assert on_disk["adjusted"]["roi.smooth_sigma_um"]["used"] == [0.5, 0.5, 0.5]
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for part in ("sample brain", "(1, 1, 1) voxels", "using (8, 8, 8) voxels", "Fix:"):
        assert part in text, (part, text)
    assert any("no smoothing at all" in w for w in on_disk["warnings"])
    # explicit voxels are checked too; a sane region is left alone without a warning
    fixed, adjustment = roi.checked_clahe_kernel(
        RoiConfig(clahe_kernel_voxels=[1, 2, 2]), (5.0, 2.0, 2.0), (20, 120, 120)
    )
    assert fixed == (8, 8, 8) and adjustment["key"] == "roi.clahe_kernel_voxels"
    assert roi.checked_clahe_kernel(RoiConfig(), VOXEL, SHAPE) == ((2, 10, 10), None)
    assert roi.checked_clahe_kernel(RoiConfig(), (1.0, 0.2, 0.2), (1, 96, 96))[1] is None
    # CLAHE tiles are split by their histogram memory, not only their voxel count
    assert roi.clahe_tile_bytes((40, 128, 128), (1, 1, 1)) > 4e9
    assert roi.clahe_tile_bytes((40, 128, 128), (8, 8, 8)) < 1e8


def test_degenerate_mixture_falls_back_and_says_so(tmp_path, monkeypatch, rng):
    values = np.r_[rng.normal(0.5, 0.1, 10**6), np.full(50, 1.0)]
    gmm = fit_gmm_1d(values, strict=False)  # 50 outliers: a component of < 0.1% weight
    assert "fewer than 0.1%" in roi.mixture_degeneracy(gmm)
    overlapping = roi.GaussianMixture2((0.5, 0.52), (0.01, 0.01), (0.5, 0.5), 0.0, 3, True)
    assert "not separated" in roi.mixture_degeneracy(overlapping)
    assert roi.otsu_threshold(np.r_[rng.normal(0.2, 0.02, 5000), rng.normal(0.8, 0.02, 5000)]) == (
        pytest.approx(0.5, abs=0.1)
    )
    # segment_roi: a degenerate fit (weights 0.9999 / 0.0001) no longer gives a silent ROI
    degenerate = roi.GaussianMixture2((0.3, 0.99), (0.01, 1e-4), (0.9999, 1e-4), 0.0, 5, True)
    monkeypatch.setattr("fewlabel.roi.segment.fit_gmm_1d", lambda *a, **k: degenerate)
    image, points = _spots(tmp_path, 0)
    summary = segment_roi(
        image, tmp_path / "m.ome.zarr", tmp_path / "m.json", params=RoiConfig(), sample="s0"
    )
    fallback = json.loads((tmp_path / "m.json").read_text())["fallback"]
    assert fallback["method"] in ("otsu", "whole_volume") and "0.01%" in fallback["reason"]
    assert any("degenerate intensity mixture" in w for w in summary["warnings"])
    assert 0 < summary["roi_fraction"] <= 1
