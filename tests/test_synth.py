"""Synthetic data: determinism, PTC SNR, ground-truth consistency, demo files, CLI."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from fewlabel import synth
from fewlabel.cli import main
from fewlabel.config import DemoParams, parse
from fewlabel.errors import ConfigError
from fewlabel.io import open_input_volume, read_image, read_points_csv

DEMO_SPLITS = ("train", "val", "test")


def _demo_names() -> list[str]:
    names = ["manifest.json"]
    for split in DEMO_SPLITS:
        names += [
            f"spots_{split}.tif",
            f"spots_{split}.csv",
            f"spots_{split}_all.csv",
            f"nuclei_{split}_labelfree.tif",
            f"nuclei_{split}_fluo.tif",
            f"nuclei_{split}_labels.tif",
            f"nuclei_{split}.csv",
        ]
    return sorted([*names, "spots_val_region.csv"])


# --------------------------------------------------------------------------- determinism
def test_spots_deterministic_by_seed():
    a = synth.spot_volume((8, 48, 48), seed=3)
    b = synth.spot_volume((8, 48, 48), seed=3)
    c = synth.spot_volume((8, 48, 48), seed=4)
    assert a.image.dtype == np.float32 and a.image.shape == (8, 48, 48)
    np.testing.assert_array_equal(a.image, b.image)
    pd.testing.assert_frame_equal(a.points, b.points)
    assert not np.array_equal(a.image, c.image)
    assert not a.points.equals(c.points)


def test_centrioles_and_nuclei_deterministic_by_seed():
    c1 = synth.centriole_volume((16, 64, 64), n_particles=3, seed=1)
    c2 = synth.centriole_volume((16, 64, 64), n_particles=3, seed=1)
    c3 = synth.centriole_volume((16, 64, 64), n_particles=3, seed=2)
    np.testing.assert_array_equal(c1.image, c2.image)
    assert not np.array_equal(c1.image, c3.image)
    n1 = synth.nuclei_pair(seed=5)
    n2 = synth.nuclei_pair(seed=5)
    n3 = synth.nuclei_pair(seed=6)
    for name in ("labels", "fluorescence", "label_free"):
        np.testing.assert_array_equal(getattr(n1, name), getattr(n2, name))
        assert not np.array_equal(getattr(n1, name), getattr(n3, name))


# --------------------------------------------------------------------------- spots
def test_spot_count_follows_density_and_points_inside():
    for density, expected in (("low", 16), ("medium", 45), ("high", 98)):
        s = synth.spot_volume((10, 128, 128), density=density, seed=0)
        assert len(s.points) == expected
        coords = s.points[["z", "y", "x"]].to_numpy()
        assert (coords >= 0).all() and (coords <= np.array([9, 127, 127])).all()
        # sub-voxel positions
        assert np.abs(coords - np.rint(coords)).max() > 0.1
        # minimum separation (in PSF sigmas)
        scaled = coords / np.array(s.meta["sigma_zyx"])
        d, _ = cKDTree(scaled).query(scaled, k=2)
        assert d[:, 1].min() >= s.meta["min_separation"] - 1e-9


@pytest.mark.parametrize("snr", [2.0, 4.0, 7.0])
def test_measured_ptc_snr_matches_request(snr):
    """SNR = (I_obj - I_bg)/sigma_obj at the true points; sigma_obj measured, not assumed."""
    s = synth.spot_volume((16, 128, 128), snr=snr, density="high", clutter=False, seed=11)
    img = s.image.astype(float)
    sigma = np.array(s.meta["sigma_zyx"])
    pts = s.points[["z", "y", "x"]].to_numpy()
    nearest = np.clip(np.rint(pts).astype(int), 0, np.array(img.shape) - 1)
    falloff = np.exp(-(((nearest - pts) / sigma) ** 2).sum(axis=1) / 2)
    grid = np.indices(img.shape).reshape(3, -1).T
    dist, _ = cKDTree(pts / sigma).query(grid / sigma)
    i_bg = np.median(img.ravel()[dist > 5])
    peak = img[tuple(nearest.T)]
    i_obj = np.mean(i_bg + (peak - i_bg) / falloff)  # peak intensity at the sub-voxel centre
    expected = s.clean[tuple(nearest.T)].astype(float)
    sigma_obj = np.std((peak - expected) * np.sqrt(i_obj / expected))  # noise s.d. at I_obj
    measured = (i_obj - i_bg) / sigma_obj
    assert measured == pytest.approx(snr, rel=0.2)
    assert i_bg == pytest.approx(s.meta["background"], rel=0.1)
    assert i_obj == pytest.approx(s.meta["peak_intensity"], rel=0.1)


def test_snr_holds_on_uneven_background_with_clutter():
    s = synth.spot_volume((16, 128, 128), snr=4.0, density="high", clutter=True, seed=2)
    img = s.image.astype(float)
    assert np.ptp(ndi.gaussian_filter(s.clean, 8)) > 1.0  # the background is uneven
    sigma = np.array(s.meta["sigma_zyx"])
    pts = s.points[["z", "y", "x"]].to_numpy()
    values = []
    for p in pts:
        v = tuple(np.clip(np.rint(p).astype(int), 0, np.array(img.shape) - 1))
        falloff = np.exp(-(((np.asarray(v) - p) / sigma) ** 2).sum() / 2)
        lo = np.maximum(np.floor(p - 7 * sigma).astype(int), 0)
        hi = np.minimum(np.ceil(p + 7 * sigma).astype(int) + 1, img.shape)
        window = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grid = np.indices(hi - lo).reshape(3, -1).T + lo
        d = np.sqrt((((grid - p) / sigma) ** 2).sum(axis=1))
        ring = (d > 4) & (d < 7)
        i_bg = img[window].ravel()[ring].mean()
        i_obj = i_bg + (img[v] - i_bg) / falloff
        values.append((i_obj - i_bg) / np.sqrt(i_obj))
    assert np.mean(values) == pytest.approx(4.0, rel=0.2)


def test_points_are_the_intensity_maxima_and_blobs_are_not_points():
    from skimage.feature import peak_local_max

    s = synth.spot_volume((10, 128, 128), snr=4.0, clutter=True, seed=7)
    pts = s.points[["z", "y", "x"]].to_numpy()
    blobs = np.array([b["centre"] for b in s.meta["clutter_blobs"]])
    assert len(blobs) >= 1
    # every point is a local maximum of the expected image (within one voxel)
    peaks = peak_local_max(
        s.clean, min_distance=1, threshold_abs=s.meta["background"] * 1.6, exclude_border=False
    )
    dist, _ = cKDTree(peaks).query(pts)
    assert dist.max() <= 1.0
    # blobs are bright maxima too, but far from every point (out of class)
    dist_blob, _ = cKDTree(pts).query(blobs)
    assert dist_blob.min() > 5.0
    blob_peaks = [
        np.unravel_index(
            np.argmax(
                s.clean
                * (np.linalg.norm(np.indices(s.clean.shape).transpose(1, 2, 3, 0) - b, axis=-1) < 3)
            ),
            s.clean.shape,
        )
        for b in blobs
    ]
    assert all(
        s.clean[p] > s.meta["background"] + 0.5 * min(s.meta["amplitudes"]) for p in blob_peaks
    )
    # in the noisy image, the brightest voxel near each point is (almost always) next to it
    high = synth.spot_volume((10, 128, 128), snr=12.0, clutter=False, seed=7)
    img = high.image
    hits = 0
    for p in high.points[["z", "y", "x"]].to_numpy():
        c = np.rint(p).astype(int)
        lo = np.maximum(c - [1, 3, 3], 0)
        hi = np.minimum(c + [2, 4, 4], img.shape)
        win = img[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        arg = np.array(np.unravel_index(np.argmax(win), win.shape)) + lo
        hits += np.abs(arg - p).max() <= 1.5
    assert hits >= 0.9 * len(high.points)


def test_bad_spot_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="density"):
        synth.spot_volume((4, 16, 16), density="dense")
    with pytest.raises(ConfigError, match="snr"):
        synth.spot_volume((4, 16, 16), snr=0)
    with pytest.raises(ConfigError, match="shape"):
        synth.spot_volume((16,))


def test_two_d_shape_becomes_single_plane():
    s = synth.spot_volume((64, 64), seed=0)
    assert s.image.shape == (1, 64, 64)
    assert (s.points["z"] == 0).all() and len(s.points) >= 1


# --------------------------------------------------------------------------- centrioles
def test_centriole_points_inside_and_on_particles():
    c = synth.centriole_volume(seed=0)
    pts = c.points[["z", "y", "x"]].to_numpy()
    assert len(pts) == 10
    assert (pts >= 0).all() and (pts <= np.array(c.image.shape) - 1).all()
    smooth = ndi.gaussian_filter(c.clean, 2.0)
    at_points = ndi.map_coordinates(smooth, pts.T, order=1)
    assert np.median(at_points) > np.median(smooth) + 10  # signal around every centre
    assert (at_points > np.percentile(smooth, 75)).all()
    kinds = {a["kind"] for a in c.meta["artefacts"]}
    assert kinds == {"speck", "blob"}


def test_clustered_centrioles_are_crowded_and_keep_their_separation():
    kw = dict(n_particles=60, voxel_size=(0.12, 0.06, 0.06), barrel_radius_um=0.1,
              barrel_length_um=0.25, n_specks=0, n_blobs=0)  # fmt: skip
    uniform = synth.centriole_volume((24, 160, 160), seed=3, **kw)
    clustered = synth.centriole_volume(
        (24, 160, 160), seed=3, n_clusters=2, cluster_sigma_um=0.6, min_separation_um=0.5, **kw
    )
    again = synth.centriole_volume(
        (24, 160, 160), seed=3, n_clusters=2, cluster_sigma_um=0.6, min_separation_um=0.5, **kw
    )
    np.testing.assert_array_equal(clustered.image, again.image)
    assert clustered.meta["n_clusters"] == 2 and uniform.meta["n_clusters"] == 0

    def nearest(s):  # distance (µm) of each particle to its nearest neighbour
        um = s.points[["z", "y", "x"]].to_numpy() * np.array([0.12, 0.06, 0.06])
        pair = np.sqrt(((um[:, None] - um[None]) ** 2).sum(-1)) + 1e9 * np.eye(len(um))
        return pair.min(1)

    assert len(clustered.points) > 40
    # the minimal separations hold (default: twice the particle extent)
    assert nearest(clustered).min() >= 0.5 - 1e-9
    assert nearest(uniform).min() >= 2 * (0.125 + 0.1 + 0.15) - 1e-9
    # crowding: clustered particles sit closer to their neighbours
    assert np.median(nearest(clustered)) < 0.8 * np.median(nearest(uniform))
    with pytest.raises(ConfigError, match="n_clusters"):
        synth.centriole_volume((16, 64, 64), n_clusters=-1)


# --------------------------------------------------------------------------- nuclei
def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= {tuple(sorted(p)) for p in zip(a[m].tolist(), b[m].tolist(), strict=True)}
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuclei_labels_unique_touching_and_centroids(seed):
    n = synth.nuclei_pair(seed=seed)
    labels = n.labels
    assert labels.dtype == np.uint32 and labels.shape == (24, 64, 64)
    ids = np.unique(labels)
    assert ids[0] == 0 and list(ids[1:]) == list(range(1, len(ids)))
    assert len(ids) - 1 == n.meta["n_nuclei"] >= 6
    for i in ids[1:]:
        _, count = ndi.label(labels == i)
        assert count == 1  # one connected object per id
        assert (labels == i).sum() > 100
    assert len(_touching_pairs(labels)) >= 1
    # centroids match the label image
    assert list(n.points["label"]) == list(ids[1:])
    com = np.array(ndi.center_of_mass(labels > 0, labels, ids[1:]))
    np.testing.assert_allclose(n.points[["z", "y", "x"]].to_numpy(), com, atol=1e-6)


def test_nuclei_channels_differ():
    n = synth.nuclei_pair(seed=0)
    assert n.fluorescence.dtype == np.float32 and n.label_free.dtype == np.float32
    assert not np.allclose(n.fluorescence, n.label_free)
    r = np.corrcoef(n.fluorescence.ravel(), n.label_free.ravel())[0, 1]
    assert abs(r) < 0.95
    # fluorescence is bright inside nuclei; label-free shows the cytoplasm, fluorescence not
    inside = n.labels > 0
    assert n.fluorescence[inside].mean() > 3 * n.fluorescence[~inside].mean()
    from skimage.segmentation import expand_labels

    shell = (expand_labels(n.labels, 3) > 0) & ~inside
    far = expand_labels(n.labels, 8) == 0
    lf = n.label_free
    assert abs(lf[shell].mean() - lf[far].mean()) / lf[far].std() > 0.5


def test_nuclei_anisotropy_flattens_in_z():
    iso = synth.nuclei_pair((24, 64, 64), anisotropy=1.0, seed=3)
    aniso = synth.nuclei_pair((24, 64, 64), anisotropy=2.0, seed=3)

    def mean_z_extent(labels: np.ndarray) -> float:
        return float(np.mean([sl[0].stop - sl[0].start for sl in ndi.find_objects(labels) if sl]))

    assert mean_z_extent(aniso.labels) < 0.8 * mean_z_extent(iso.labels)


# --------------------------------------------------------------------------- demo
def test_make_demo_writes_readable_files(tmp_path):
    """(No timed assertion: timing belongs to benchmarks, not to a shared CI machine.)"""
    rows = synth.make_demo(tmp_path / "demo", params=DemoParams(), seed=0)
    out = tmp_path / "demo"
    assert sorted(p.name for p in out.iterdir()) == _demo_names()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(n for n in _demo_names() if n != "manifest.json")
    assert manifest["samples"] == rows
    assert [r["sample"] for r in rows] == [
        f"{k}_{s}" for k in ("spots", "nuclei") for s in DEMO_SPLITS
    ]
    for row in rows:
        assert set(row) >= {
            "sample",
            "image",
            "channel",
            "voxel_size",
            "split",
            "points",
            "labels",
            "target",
        }
        vol = open_input_volume(row["image"], sample=row["sample"])
        expected_voxel = (0.3, 0.1, 0.1) if row["sample"].startswith("spots") else (0.5, 0.25, 0.25)
        expected_shape = (16, 128, 128) if row["sample"].startswith("spots") else (16, 96, 96)
        assert vol.shape == expected_shape
        np.testing.assert_allclose(vol.voxel_size, expected_voxel, rtol=1e-4)
        assert row["voxel_size"] == ",".join(f"{v:g}" for v in expected_voxel)
        vol.close()
        table = read_points_csv(row["points"], shape=expected_shape, sample=row["sample"])
        assert list(table.columns[:3]) == ["z", "y", "x"] and len(table) > 0
        if row["labels"]:
            labels = read_image(row["labels"])
            assert labels.dtype.kind == "u"
            assert len(np.unique(labels)) - 1 == len(table)
            target = read_image(row["target"])
            assert target.dtype == np.float32 and target.shape == expected_shape
    spots = read_image(out / "spots_train.tif")
    assert spots.dtype == np.uint16
    every = pd.read_csv(out / "spots_train_all.csv")
    assert 45 <= len(every) <= 80  # "medium" density
    # train: ~30 % of the spots clicked; val: its left half fully, the rest ~30 %; test: all
    clicked = pd.read_csv(out / "spots_train.csv")
    assert 0.15 * len(every) <= len(clicked) <= 0.45 * len(every)
    assert len(clicked.merge(every, on=["z", "y", "x"])) == len(clicked)
    val, val_all = pd.read_csv(out / "spots_val.csv"), pd.read_csv(out / "spots_val_all.csv")
    box = pd.read_csv(out / "spots_val_region.csv").iloc[0]
    assert (box["x1"], box["z1"]) == (64, 16)
    assert (val["x"] < 64).sum() == (val_all["x"] < 64).sum() > 0
    assert (val["x"] >= 64).sum() < 0.5 * (val_all["x"] >= 64).sum()
    assert len(pd.read_csv(out / "spots_test.csv")) == len(pd.read_csv(out / "spots_test_all.csv"))
    assert [r["annotated_region"] for r in rows if r["sample"].startswith("spots")] == [
        "",
        str(out / "spots_val_region.csv"),
        "",
    ]
    # different seeds per file
    assert not np.array_equal(
        read_image(out / "spots_train.tif"), read_image(out / "spots_val.tif")
    )
    # same seed -> identical files
    synth.make_demo(tmp_path / "again", seed=0)
    assert (
        json.loads((tmp_path / "again" / "manifest.json").read_text())["files"] == manifest["files"]
    )


def test_demo_params_model():
    p = DemoParams.model_validate(
        {"spots_shape": [8, 32, 32], "spots_snr": 2, "spots_density": 100, "nuclei_count": 3}
    )
    assert p.spots_shape == (8, 32, 32) and p.spots_snr == 2.0 and p.spots_density == 100
    assert p.nuclei_count == 3 and p.nuclei_shape == (16, 96, 96)
    assert DemoParams.model_validate({}) == DemoParams()
    # the named densities are the generator's
    assert set(
        typing.get_args(DemoParams.model_fields["spots_density"].annotation)[0].__args__
    ) == set(synth.DENSITIES)
    # the workflow's config.yaml demo.params section is accepted as is
    import yaml

    config_path = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
    if config_path.exists():
        config = yaml.safe_load(config_path.read_text())
        assert DemoParams.model_validate(config["demo"]["params"]) == DemoParams()
    with pytest.raises(ConfigError, match=r"'demo.params.spots_sigma': unknown key"):
        parse(DemoParams, {"spots_sigma": 2})
    with pytest.raises(ConfigError, match=r"'demo.params.nuclei_shape': needs 3 values"):
        parse(DemoParams, {"nuclei_shape": [16, 64]})
    with pytest.raises(ConfigError, match="spots_snr"):
        parse(DemoParams, {"spots_snr": "high"})
    with pytest.raises(ConfigError, match="spots_density"):
        parse(DemoParams, {"spots_density": "dense"})
    with pytest.raises(ConfigError, match="integer"):
        parse(DemoParams, {"nuclei_count": 2.5})


# --------------------------------------------------------------------------- CLI
def test_cli_make_demo_and_sheet(tmp_path):
    params = {"spots_shape": [6, 40, 40], "nuclei_shape": [10, 48, 48], "nuclei_count": 4}
    rc = main(
        [
            "make_demo_data",
            "--outdir",
            str(tmp_path / "d"),
            "--params",
            json.dumps(params),
            "--seed",
            "2",
            "--sheet",
            str(tmp_path / "samples.tsv"),
            "--log",
            str(tmp_path / "log.txt"),
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == _demo_names()
    sheet = pd.read_csv(tmp_path / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert len(sheet) == 6 and sheet["split"].tolist().count("train") == 2
    assert open_input_volume(sheet["image"][0]).shape == (6, 40, 40)
    assert (tmp_path / "log.txt").exists()
    rc = main(["make_demo_data", "--outdir", str(tmp_path / "e"), "--params", '{"bogus": 1}'])
    assert rc == 2
    assert not (tmp_path / "e" / "manifest.json").exists()


@pytest.mark.parametrize("kind", ["spots", "centrioles", "nuclei"])
def test_cli_synth(tmp_path, kind):
    prefix = tmp_path / "out" / kind
    argv = [
        "synth",
        "--kind",
        kind,
        "--out-prefix",
        str(prefix),
        "--shape",
        "[8, 40, 40]",
        "--seed",
        "1",
    ]
    if kind == "spots":
        argv += ["--snr", "3", "--density", "high", "--no-clutter"]
    elif kind == "centrioles":
        argv += ["--n-particles", "2", "--voxel-size", "[0.1, 0.05, 0.05]"]
    else:
        argv += ["--n-nuclei", "3", "--params", '{"radius_range": [4, 6]}']
    assert main(argv) == 0
    image = read_image(f"{prefix}.tif")
    assert image.shape == (8, 40, 40)
    points = read_points_csv(f"{prefix}.csv", shape=image.shape)
    assert len(points) >= 1
    if kind == "nuclei":
        labels = read_image(f"{prefix}_labels.tif")
        assert len(np.unique(labels)) - 1 == len(points)
        assert read_image(f"{prefix}_labelfree.tif").shape == (8, 40, 40)
        vol = open_input_volume(f"{prefix}.tif")
        np.testing.assert_allclose(vol.voxel_size, (0.5, 0.25, 0.25), rtol=1e-4)
        vol.close()
    if kind == "spots":
        assert len(points) == round(600 * 8 * 40 * 40 / 1e6)


def test_cli_synth_rejects_options_of_other_kinds(tmp_path):
    rc = main(["synth", "--kind", "nuclei", "--out-prefix", str(tmp_path / "x"), "--snr", "3"])
    assert rc == 2
    assert not Path(tmp_path / "x.tif").exists()
