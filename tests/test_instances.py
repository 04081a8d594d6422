"""Instance splitting: h-maxima + watershed, chunk-safe stitching, CLI stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from fewlabel.config import InstancesConfig, parse
from fewlabel.errors import ConfigError
from fewlabel.io import create_ome_zarr, open_ome_zarr
from fewlabel.segmentation.instances import split_instances
from fewlabel.segmentation.instances_chunked import split_instances_chunked

CHUNK_TEST_HALO = (8, 12, 12)


def touching_ellipsoids(shape=(40, 96, 96), spacing=(6, 8, 8), seed=0):
    """Labels of touching ellipsoids on a jittered grid (nearest-centre split), their EDT."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(
        *[np.arange(s // 2 + 1, n - s // 2, s) for s, n in zip(spacing, shape)], indexing="ij"
    )
    centres = np.stack([g.ravel() for g in grid], axis=1).astype(float)
    centres += rng.uniform(-1.5, 1.5, centres.shape)
    radii = np.stack(
        [
            rng.uniform(2.6, 3.5, len(centres)),
            rng.uniform(4.0, 5.2, len(centres)),
            rng.uniform(4.0, 5.2, len(centres)),
        ],
        axis=1,
    )
    keep = rng.random(len(centres)) > 0.15  # some gaps
    centres, radii = centres[keep], radii[keep]
    best = np.full(shape, np.inf)
    labels = np.zeros(shape, np.uint32)
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = np.ogrid[sl]
        rho = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
        take = (rho <= 1.0) & (rho < best[sl])
        labels[sl][take] = i
        best[sl][take] = rho[take]
    distance = np.zeros(shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        obj = labels[sl] == i
        distance[sl][obj] = ndi.distance_transform_edt(obj)[obj]
    mask = np.where(labels > 0, 0.9, 0.1).astype(np.float32)
    return labels, mask, distance


@pytest.fixture(scope="module")
def volume():
    return touching_ellipsoids()


def assert_same_partition(a: np.ndarray, b: np.ndarray) -> None:
    """Identical background and a bijection between the label ids of ``a`` and ``b``."""
    assert a.shape == b.shape
    assert np.array_equal(a == 0, b == 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    pairs = pairs[:, pairs[0] > 0]
    assert len(np.unique(pairs[0])) == pairs.shape[1], "an id of a maps to several ids of b"
    assert len(np.unique(pairs[1])) == pairs.shape[1], "an id of b maps to several ids of a"


def test_whole_volume_recovers_touching_objects(volume):
    gt, mask, distance = volume
    labels = split_instances(mask, distance, h=1.0)
    assert labels.dtype == np.uint32
    n_gt = len(np.unique(gt)) - 1
    assert labels.max() == len(np.unique(labels)) - 1  # consecutive ids
    assert abs(int(labels.max()) - n_gt) <= 2
    # most GT objects are recovered as one predicted object covering > 90% of them
    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    pair, pc = np.unique(np.stack([gt[gt > 0], labels[gt > 0]]), axis=1, return_counts=True)
    best = np.zeros(ids.max() + 1)
    np.maximum.at(best, pair[0], pc)
    frac = best[ids] / counts
    assert (frac > 0.9).mean() > 0.9


@pytest.mark.parametrize(
    "chunks, workers, extra",
    [
        ((16, 32, 32), 1, {}),
        ((20, 40, 36), 2, {"min_size": 200, "fill_holes": True}),
        ((40, 96, 96), 1, {}),
    ],
    ids=["16x32x32", "20x40x36-threads-minsize-holes", "one-block"],
)
def test_chunked_equals_whole_volume(tmp_path, volume, chunks, workers, extra):
    gt, mask, distance = volume
    if extra.get("fill_holes"):  # punch enclosed holes into every third object's core
        mask = np.where((distance >= 2.5) & (gt % 3 == 0), 0.2, mask).astype(np.float32)
        assert (split_instances(mask, distance, h=1.0)[(mask < 0.5) & (gt > 0)] == 0).all()
    params = {"mask_threshold": 0.5, "h": 1.0, **extra}
    whole = split_instances(mask, distance, **params)
    out = zarr.open_array(
        str(tmp_path / "labels.zarr"),
        mode="w",
        shape=mask.shape,
        chunks=chunks,
        dtype=np.uint32,
        zarr_format=3,
    )
    n = split_instances_chunked(
        mask, distance, out, halo=CHUNK_TEST_HALO, workers=workers, **params
    )
    chunked = out[...]
    assert n == int(whole.max())
    assert_same_partition(chunked, whole)
    assert np.array_equal(chunked, whole)  # same id order too (raster order of markers)
    if extra.get("fill_holes"):
        assert (whole[(mask < 0.5) & (gt > 0)] > 0).mean() > 0.5  # holes were filled
    # the test is meaningful: many objects are cut by chunk borders
    cut = 0
    for sl in ndi.find_objects(whole):
        if sl is not None and any(s.start // c != (s.stop - 1) // c for s, c in zip(sl, chunks)):
            cut += 1
    if chunks != mask.shape:
        assert cut >= 10


def test_chunked_with_too_small_halo_warns_and_ids_stay_unique(tmp_path, volume, caplog):
    gt, mask, distance = volume
    out = zarr.open_array(
        str(tmp_path / "l.zarr"),
        mode="w",
        shape=mask.shape,
        chunks=(16, 32, 32),
        dtype=np.uint32,
        zarr_format=3,
    )
    n = split_instances_chunked(mask, distance, out, halo=0, h=1.0)
    labels = out[...]
    assert set(np.unique(labels)) <= set(range(n + 1))
    assert not (labels[mask <= 0.5]).any()
    assert "increase 'halo'" in caplog.text


def test_two_touching_spheres_split_and_threshold():
    zz, yy, xx = np.indices((20, 30, 40))
    a = (zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 12) ** 2 <= 36
    b = (zz - 10) ** 2 + (yy - 15) ** 2 + (xx - 23) ** 2 <= 36
    fg = a | b
    dist = ndi.distance_transform_edt(a & ~(xx >= 18)) + ndi.distance_transform_edt(b & (xx >= 18))
    labels = split_instances(fg.astype(np.float32), dist, h=1.0)
    assert labels.max() == 2
    assert (labels[a & (xx < 17)] == 1).all() and (labels[b & (xx > 18)] == 2).all()
    # a merged (single-peak) distance map gives one object; higher h merges too
    assert split_instances(fg * 1.0, ndi.distance_transform_edt(fg), h=1.0).max() <= 2
    assert split_instances(fg * 1.0, dist, h=10.0).max() == 1  # one marker per component
    # threshold: probabilities 0.4 are background at 0.5
    assert split_instances(fg * 0.4, dist, h=1.0).max() == 0


def test_fill_holes_and_min_size():
    zz, yy, xx = np.indices((16, 24, 24))
    r2 = (zz - 8) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2
    shell = (r2 <= 36) & (r2 > 4)  # hollow sphere
    blob = (zz - 2) ** 2 + (yy - 2) ** 2 + (xx - 2) ** 2 <= 1  # 7 voxels
    fg = shell | blob
    dist = ndi.distance_transform_edt(fg)
    plain = split_instances(fg * 1.0, dist, h=0.5)
    assert plain.max() == 2 and (plain[r2 <= 4] == 0).all()
    filled = split_instances(fg * 1.0, dist, h=0.5, fill_holes=True)
    assert (filled[r2 <= 4] == filled[8, 12, 6]).all() and filled[8, 12, 6] > 0
    small = split_instances(fg * 1.0, dist, h=0.5, min_size=8)
    assert small.max() == 1 and (small[blob] == 0).all() and (small[shell] == 1).all()


def test_fill_holes_2d_ring():
    yy, xx = np.indices((1, 20, 20))[1:]
    r2 = (yy - 10) ** 2 + (xx - 10) ** 2
    ring = (r2 <= 49) & (r2 > 4)  # (1, 20, 20)
    dist = ndi.distance_transform_edt(ring)
    labels = split_instances(ring * 1.0, dist, h=3.0, fill_holes=True)
    assert labels.max() == 1 and labels[0, 10, 10] == 1


def test_empty_foreground_and_bad_params():
    zeros = np.zeros((4, 8, 8), np.float32)
    assert split_instances(zeros, zeros).max() == 0
    with pytest.raises(ConfigError, match=r"config key 'segmentation.instances.h'"):
        split_instances(zeros, zeros, h=0)
    with pytest.raises(ConfigError, match="resolved"):
        split_instances(zeros, zeros, mask_threshold="auto")
    with pytest.raises(ConfigError, match=r"'segmentation.instances.nope': unknown key"):
        parse(InstancesConfig, {"h": 0.1, "nope": 1})
    assert InstancesConfig().mask_threshold == "auto" and InstancesConfig().h == "auto"
    assert InstancesConfig(halo=[5, 5, 5]).halo == (5, 5, 5)


def test_cli_split_instances(tmp_path):
    from fewlabel.cli import main

    gt, mask, distance = touching_ellipsoids(shape=(20, 48, 48), seed=3)
    pred = tmp_path / "pred.ome.zarr"
    arr = create_ome_zarr(pred, (2, *mask.shape), np.float32, (1, 10, 24, 24), (2.0, 0.5, 0.5))
    arr[0] = mask
    arr[1] = distance
    out = tmp_path / "labels.ome.zarr"
    params = {"mask_threshold": 0.5, "h": 1.0, "halo": list(CHUNK_TEST_HALO), "min_size": 5}
    rc = main(
        [
            "split_instances",
            "--sample",
            "s1",
            "--prediction",
            str(pred),
            "--output",
            str(out),
            "--params",
            json.dumps(params),
            "--threads",
            "2",
            "--log",
            str(tmp_path / "log.txt"),
        ]
    )
    assert rc == 0
    vol = open_ome_zarr(out)
    assert vol.array.dtype == np.uint32 and vol.voxel_size == (2.0, 0.5, 0.5)
    expected = split_instances(mask, distance, h=1.0, min_size=5)
    assert np.array_equal(vol.array[...], expected)
    assert vol.attrs["fewlabel"]["n_objects"] == int(expected.max())
    assert not list(tmp_path.glob(".*tmp*"))
    # a 1-channel prediction is a user error (exit code 2, no output)
    bad = tmp_path / "bad.ome.zarr"
    create_ome_zarr(bad, (1, *mask.shape), np.float32, (1, 10, 24, 24), (1, 1, 1))
    rc = main(
        [
            "split_instances",
            "--sample",
            "s1",
            "--prediction",
            str(bad),
            "--output",
            str(tmp_path / "x.ome.zarr"),
            "--params",
            json.dumps(params),
            "--log",
            str(tmp_path / "bad.txt"),
        ]
    )
    assert rc == 2 and not (tmp_path / "x.ome.zarr").exists()
    assert "expected CZYX with 2 channels" in (tmp_path / "bad.txt").read_text()


def test_cli_mask_threshold_auto_uses_the_segmenters_tuned_value(tmp_path, capsys):
    from fewlabel.cli import main

    gt, mask, distance = touching_ellipsoids(shape=(20, 48, 48), seed=3)
    prob = (0.3 + 0.5 * mask).astype(np.float32)  # foreground 0.8, background 0.3
    pred = tmp_path / "pred.ome.zarr"
    arr = create_ome_zarr(pred, (2, *mask.shape), np.float32, (1, 10, 24, 24), (2.0, 0.5, 0.5))
    arr[0], arr[1] = prob, distance
    model = tmp_path / "segmenter"
    model.mkdir()
    params = json.dumps({"mask_threshold": "auto", "h": 1.0, "halo": list(CHUNK_TEST_HALO)})
    cmd = ["split_instances", "--sample", "s1", "--prediction", str(pred), "--params", params]
    # no model folder / no thresholds.json: clear errors, nothing written
    assert main([*cmd, "--output", str(tmp_path / "a.ome.zarr")]) == 2
    assert "needs the segmenter model folder" in capsys.readouterr().err
    assert main([*cmd, "--model-dir", str(model), "--output", str(tmp_path / "a.ome.zarr")]) == 2
    assert "thresholds.json" in capsys.readouterr().err
    assert not (tmp_path / "a.ome.zarr").exists()
    # the tuned 0.25 keeps the 0.3 background as foreground: one region; 0.5 splits objects
    (model / "thresholds.json").write_text(json.dumps({"mask_threshold": 0.25}))
    assert main([*cmd, "--model-dir", str(model), "--output", str(tmp_path / "a.ome.zarr")]) == 0
    vol = open_ome_zarr(tmp_path / "a.ome.zarr")
    assert vol.attrs["fewlabel"]["params"]["mask_threshold"] == 0.25
    assert vol.attrs["fewlabel"]["mask_threshold_from"].endswith("thresholds.json")
    assert (vol.array[...] > 0).all()  # 0.25 < 0.3: every voxel is foreground
    fixed = json.dumps({"mask_threshold": 0.5, "h": 1.0, "halo": list(CHUNK_TEST_HALO)})
    assert (
        main(
            [
                "split_instances",
                "--sample",
                "s1",
                "--prediction",
                str(pred),
                "--params",
                fixed,
                "--output",
                str(tmp_path / "b.ome.zarr"),
            ]
        )
        == 0
    )
    fixed_labels = open_ome_zarr(tmp_path / "b.ome.zarr")
    assert fixed_labels.attrs["fewlabel"]["mask_threshold_from"] == "config"
    assert (fixed_labels.array[...] == 0).any()
    # both 'auto': mask_threshold and h come from the model; same values -> same labels
    (model / "thresholds.json").write_text(json.dumps({"mask_threshold": 0.5, "h": 1.0}))
    both = json.dumps({"mask_threshold": "auto", "h": "auto", "halo": list(CHUNK_TEST_HALO)})
    assert (
        main(
            [
                "split_instances",
                "--sample",
                "s1",
                "--prediction",
                str(pred),
                "--params",
                both,
                "--model-dir",
                str(model),
                "--output",
                str(tmp_path / "c.ome.zarr"),
            ]
        )
        == 0
    )
    auto_labels = open_ome_zarr(tmp_path / "c.ome.zarr")
    assert auto_labels.attrs["fewlabel"]["h_from"].endswith("thresholds.json")
    assert np.array_equal(auto_labels.array[...], fixed_labels.array[...])
    # a model without a tuned h (no whole validation image): h falls back to 0.1, said so
    (model / "thresholds.json").write_text(json.dumps({"mask_threshold": 0.5, "h": None}))
    assert (
        main(
            [
                "split_instances",
                "--sample",
                "s1",
                "--prediction",
                str(pred),
                "--params",
                both,
                "--model-dir",
                str(model),
                "--output",
                str(tmp_path / "d.ome.zarr"),
            ]
        )
        == 0
    )
    fallback = open_ome_zarr(tmp_path / "d.ome.zarr").attrs["fewlabel"]
    assert fallback["params"]["h"] == 0.1 and fallback["h_from"].startswith("default")


def test_auto_parameters_come_from_the_segmenters_thresholds(tmp_path, caplog):
    import logging

    from fewlabel.segmentation.instances import FALLBACK_H, resolve_auto_parameters

    fixed = InstancesConfig(mask_threshold=0.4, h=0.2)
    assert resolve_auto_parameters(fixed, None) == (
        fixed,
        {"mask_threshold": "config", "h": "config"},
    )
    auto = InstancesConfig(mask_threshold="auto", h="auto")
    with pytest.raises(ConfigError, match="mask_threshold and h 'auto' needs"):
        resolve_auto_parameters(auto, None, sample="s1")
    (tmp_path / "thresholds.json").write_text(json.dumps({"mask_threshold": 0.35}))
    with caplog.at_level(logging.WARNING, logger="fewlabel.segmentation.instances"):
        params, sources = resolve_auto_parameters(auto, tmp_path, sample="s1")
    assert (params.mask_threshold, params.h) == (0.35, FALLBACK_H)
    assert sources["mask_threshold"].endswith("thresholds.json")
    assert sources["h"] == "default (no tuned value)" and "no tuned h" in caplog.text
    (tmp_path / "thresholds.json").write_text(json.dumps({"mask_threshold": 0.35, "h": 0.7}))
    params, sources = resolve_auto_parameters(auto, tmp_path)
    assert params.h == 0.7 and sources["h"].endswith("thresholds.json")
