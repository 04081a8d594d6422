"""NGFF done right: every kind of OME-Zarr output validates as NGFF 0.5 (ome-zarr-models) and
reads with ome_zarr.reader; label images carry ``image-label`` (napari opens them as labels);
large outputs get a multiscale pyramid built chunk by chunk, equal to whole-array downsampling.

The outputs come from the real stages (``python -m fewlabel <stage>`` in-process) on small
synthetic data, with pyramid settings small enough for levels (given to ingest_volume only:
the other stages follow what the ingested image recorded).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel
from scipy import ndimage as ndi

from fewlabel.cli import main
from fewlabel.io import (
    atomic_path,
    build_pyramid,
    create_ome_zarr,
    open_ome_zarr,
    pyramid_settings,
    write_ome_zarr,
)
from fewlabel.io.pyramid import (
    DEFAULT_PYRAMID_MIN_VOXELS,
    downsample,
    downsample_array,
    plan_pyramid,
)
from fewlabel.models.store import register_architecture, save_model
from fewlabel.synth import spot_volume

VOXEL = (1.0, 0.2, 0.2)
SHAPE = (16, 96, 96)
CHUNKS = (8, 32, 32)
MAX_SIDE = 12  # levels (16, 48, 48) -> (16, 24, 24) -> (8, 12, 12): z joins at level 3
EXPECTED_SHAPES = [(16, 96, 96), (16, 48, 48), (16, 24, 24), (8, 12, 12)]
EXPECTED_SCALES = [(1.0, 0.2, 0.2), (1.0, 0.4, 0.4), (1.0, 0.8, 0.8), (2.0, 1.6, 1.6)]
ARCH = "test_ngff_pointwise"
PREDICT = {"tile": [8, 32, 32], "overlap": [2, 8, 8], "batch_size": 2}


class Pointwise(torch.nn.Module):
    """One 1×1×1 convolution: a real model folder for the prediction stages."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))

    def receptive_field(self) -> tuple[int, int, int]:
        return (1, 1, 1)


register_architecture(ARCH, Pointwise, replace=True)


def run(*argv: str) -> None:
    assert main([*argv]) == 0, argv


# --------------------------------------------------------------------------- every output
@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """One of every kind of OME-Zarr output, written by the stages."""
    root = tmp_path_factory.mktemp("ngff")
    spots = spot_volume(SHAPE, snr=4.0, density="medium", clutter=True, seed=0)
    tifffile.imwrite(root / "image.tif", np.round(spots.image).astype(np.uint16))
    labels, _ = ndi.label(spots.image > np.percentile(spots.image, 97))
    tifffile.imwrite(root / "labels.tif", labels.astype(np.uint16))
    spots.points[["z", "y", "x"]].to_csv(root / "points.csv", index=False)
    results = root / "results"
    out = {
        "image": results / "ingest" / "s" / "image.ome.zarr",
        "labels": results / "ingest" / "s" / "labels.ome.zarr",
        "roi": results / "roi" / "s" / "roi.ome.zarr",
        "density_target": results / "targets" / "s" / "density.ome.zarr",
        "weight_map": results / "targets" / "s" / "weight.ome.zarr",
        "prediction": results / "predict" / "s" / "detection.ome.zarr",
        "prediction_slabs": results / "predict" / "s" / "slabs.ome.zarr",
        "instances": results / "instances" / "s" / "labels.ome.zarr",
    }
    pyramid = ["--pyramid-min-voxels", "0", "--pyramid-max-side", str(MAX_SIDE)]
    ingest = ["ingest_volume", "--sample", "s", "--voxel-size", json.dumps(VOXEL)]
    ingest += ["--chunks", json.dumps(CHUNKS), *pyramid]
    run(*ingest, "--input", str(root / "image.tif"), "--output", str(out["image"]))
    run(
        *ingest,
        "--input",
        str(root / "labels.tif"),
        "--output",
        str(out["labels"]),
        "--kind",
        "labels",
        "--reference",
        str(out["image"]),
    )
    image = str(out["image"])
    run(
        "segment_roi",
        "--sample",
        "s",
        "--image",
        image,
        "--mask-out",
        str(out["roi"]),
        "--json-out",
        str(root / "roi.json"),
        "--params",
        json.dumps({"clahe_clip_limit": 0.005}),
        "--threads",
        "2",
    )
    points = root / "points_checked.csv"
    run(
        "ingest_points",
        "--sample",
        "s",
        "--points",
        str(root / "points.csv"),
        "--volume",
        image,
        "--output",
        str(points),
    )
    run(
        "make_density_targets",
        "--sample",
        "s",
        "--image",
        image,
        "--points",
        str(points),
        "--target",
        str(out["density_target"]),
        "--weight",
        str(out["weight_map"]),
    )
    torch.manual_seed(0)
    model = save_model(
        root / "model",
        Pointwise(),
        arch={"name": ARCH, "kwargs": {}},
        training={},
        normalization={"percentiles": [1, 99.8]},
    )
    common = ["--sample", "s", "--model-dir", str(model), "--image", image]
    common += ["--params", json.dumps(PREDICT)]
    run("predict_volume", *common, "--output", str(out["prediction"]))
    slabs = str(out["prediction_slabs"])
    run("init_prediction_slabs", *common, "--output", slabs, "--n-slabs", "2")
    for slab in ("1", "0"):
        run("predict_volume_slab", *common, "--output", slabs, "--slab", slab, "--n-slabs", "2")
    run("finalize_prediction", "--sample", "s", "--output", slabs)
    # a mask + distance prediction of the labels (as predict_segmentation writes it)
    segmentation = results / "predict" / "s" / "segmentation.ome.zarr"
    fg = labels > 0
    maps = np.stack([fg.astype(np.float32), ndi.distance_transform_edt(fg).astype(np.float32)])
    with pyramid_settings(like=out["image"]), atomic_path(segmentation) as tmp:
        arr = create_ome_zarr(
            tmp,
            maps.shape,
            np.float32,
            (1, *CHUNKS),
            VOXEL,
            extra_attrs={"kind": "prediction", "image": image, "complete": True},
        )
        arr[...] = maps
    run(
        "split_instances",
        "--sample",
        "s",
        "--prediction",
        str(segmentation),
        "--output",
        str(out["instances"]),
        "--params",
        json.dumps({"mask_threshold": 0.5, "h": 0.5, "halo": [4, 8, 8]}),
        "--threads",
        "2",
    )
    out["segmentation"] = segmentation
    return out


def test_outputs_are_valid_ngff_05_images(outputs):
    """ome-zarr-models validates every output, label images as ImageLabel."""
    for kind, path in outputs.items():
        group = zarr.open_group(str(path), mode="r")
        ome = group.attrs["ome"]
        assert ome["version"] == "0.5", kind
        model = (ImageLabel if "image-label" in ome else Image).from_zarr(group)
        assert model.attributes.ome.version == "0.5"
        assert (kind in ("labels", "instances")) == ("image-label" in ome), kind


def test_label_images_are_labels_for_ome_zarr_reader_and_napari(outputs):
    """ome_zarr.reader (what napari-ome-zarr runs) yields the label image as a Label node with
    every level (napari: a multiscale labels layer) and loads its source image, hidden."""
    for kind in ("labels", "instances"):
        path = outputs[kind]
        group = zarr.open_group(str(path), mode="r")
        label = group.attrs["ome"]["image-label"]
        assert label["version"] == "0.5"
        source = (path / label["source"]["image"]).resolve()
        assert source == outputs["image"].resolve(), kind
        nodes = list(Reader(parse_url(str(path)))())
        labels_node = next(n for n in nodes if Path(n.zarr.path).resolve() == path.resolve())
        assert labels_node.load(Label) is not None and labels_node.load(Multiscales) is not None
        assert [tuple(d.shape) for d in labels_node.data] == EXPECTED_SHAPES
        assert np.issubdtype(labels_node.data[0].dtype, np.integer)
        image_node = next(n for n in nodes if n is not labels_node)
        assert Path(image_node.zarr.path).resolve() == source and not image_node.visible
        assert image_node.load(Label) is None
    for kind in ("image", "roi", "prediction", "density_target"):  # images stay images
        nodes = list(Reader(parse_url(str(outputs[kind])))())
        assert len(nodes) == 1 and nodes[0].load(Label) is None
        assert nodes[0].load(Multiscales) is not None


def test_instance_labels_keep_ids_and_record_objects(outputs):
    labels = open_ome_zarr(outputs["instances"])
    data = np.asarray(labels.array[...])
    assert labels.array.dtype == np.uint32 and labels.shape == SHAPE
    assert labels.attrs["fewlabel"]["n_objects"] == int(data.max()) > 0


def _levels(path: Path) -> tuple[list[dict], list[np.ndarray]]:
    group = zarr.open_group(str(path), mode="r")
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    return datasets, [np.asarray(group[d["path"]][...]) for d in datasets]


def _transform(dataset: dict, kind: str) -> list[float] | None:
    for transform in dataset["coordinateTransformations"]:
        if transform["type"] == kind:
            return transform[kind]
    return None


def test_every_output_has_the_pyramid_recorded_at_ingest(outputs):
    """Shapes and scales per level; mean levels are shifted to their window centres, nearest
    levels are not; the settings given to ingest_volume reached every later stage."""
    for kind, path in outputs.items():
        volume = open_ome_zarr(path)
        assert volume.voxel_size == VOXEL and volume.shape[-3:] == SHAPE, kind  # level 0
        datasets, levels = _levels(path)
        lead = levels[0].ndim - 3
        assert [d["path"] for d in datasets] == ["0", "1", "2", "3"], kind
        assert [a.shape[lead:] for a in levels] == EXPECTED_SHAPES, kind
        for dataset, expected in zip(datasets, EXPECTED_SCALES):
            scale = _transform(dataset, "scale")
            assert scale[lead:] == pytest.approx(expected) and scale[:lead] == [1.0] * lead
        record = volume.attrs["fewlabel"]["pyramid"]
        assert record["min_voxels"] == 0 and record["max_side"] == MAX_SIDE, kind
        assert record["levels"] == 4
        nearest = kind in ("labels", "roi", "instances")
        assert record["method"] == ("nearest" if nearest else "mean"), kind
        for dataset, scale in zip(datasets[1:], EXPECTED_SCALES[1:]):
            shift = _transform(dataset, "translation")
            if nearest:
                assert shift is None, kind
            else:  # (voxel_k - voxel_0) / 2
                expected = [(s - v) / 2 for s, v in zip(scale, VOXEL)]
                assert shift[lead:] == pytest.approx(expected), kind
        for level in levels[1:]:
            assert level.dtype == levels[0].dtype


def _factors(finer: np.ndarray, coarser: np.ndarray) -> tuple[int, ...]:
    return tuple(1 if a == b else 2 for a, b in zip(finer.shape, coarser.shape))


def _reference_mean(data: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Window means by padding with NaN and reshaping (independent of fewlabel's code)."""
    out_shape = [math.ceil(n / f) for n, f in zip(data.shape, factors)]
    padded = np.full([m * f for m, f in zip(out_shape, factors)], np.nan)
    padded[tuple(slice(0, n) for n in data.shape)] = data
    shape = [v for m, f in zip(out_shape, factors) for v in (m, f)]
    return np.nanmean(padded.reshape(shape), axis=tuple(range(1, 2 * data.ndim, 2)))


def test_pyramid_levels_equal_whole_array_downsampling(outputs):
    """Each level (computed chunk by chunk, slab output in the finalizing job) equals the
    whole-array downsampling of the level above: bit for bit with fewlabel's function, and
    to rounding with an independent reference."""
    for kind, path in outputs.items():
        group = zarr.open_group(str(path), mode="r")
        method = group.attrs["fewlabel"]["pyramid"]["method"]
        _, levels = _levels(path)
        for finer, coarser in zip(levels, levels[1:]):
            factors = _factors(finer, coarser)
            np.testing.assert_array_equal(coarser, downsample(finer, factors, method), kind)
            if method == "nearest":
                expected = finer[tuple(slice(None, None, f) for f in factors)]
                np.testing.assert_array_equal(coarser, expected, kind)
            else:
                expected = _reference_mean(finer.astype(np.float64), factors)
                if finer.dtype.kind in "iu":
                    assert np.abs(coarser - expected).max() <= 0.5 + 1e-9, kind
                else:
                    np.testing.assert_allclose(coarser, expected, rtol=1e-6, atol=1e-7)


def test_slab_prediction_pyramid_equals_one_job(outputs):
    one, slabs = _levels(outputs["prediction"]), _levels(outputs["prediction_slabs"])
    assert one[0] == slabs[0]
    for a, b in zip(one[1], slabs[1]):
        np.testing.assert_array_equal(a, b)
    assert open_ome_zarr(outputs["prediction_slabs"]).attrs["fewlabel"]["complete"] is True


# --------------------------------------------------------------------------- thresholds, plan
def test_no_pyramid_below_the_threshold(tmp_path, rng):
    data = rng.random((4, 300, 20)).astype(np.float32)  # a side > 256, 24000 voxels
    write_ome_zarr(tmp_path / "default.ome.zarr", data, VOXEL, chunks=(4, 64, 20))
    with pyramid_settings(min_voxels=data.size + 1):
        write_ome_zarr(tmp_path / "below.ome.zarr", data, VOXEL, chunks=(4, 64, 20))
    with pyramid_settings(min_voxels=data.size):
        write_ome_zarr(tmp_path / "at.ome.zarr", data, VOXEL, chunks=(4, 64, 20))
    for name, n_levels in (("default", 1), ("below", 1), ("at", 2)):
        datasets, levels = _levels(tmp_path / f"{name}.ome.zarr")
        assert len(datasets) == n_levels, name
        assert sorted(zarr.open_group(str(tmp_path / f"{name}.ome.zarr")).array_keys()) == [
            str(i) for i in range(n_levels)
        ]
    assert data.size < DEFAULT_PYRAMID_MIN_VOXELS
    assert levels[1].shape == (4, 150, 10)  # z kept: 1.0 µm > the new 0.4 µm in-plane voxel
    Image.from_zarr(zarr.open_group(str(tmp_path / "below.ome.zarr"), mode="r"))


@pytest.mark.parametrize(
    ("shape", "voxel", "expected"),
    [
        # isotropic: z halves with y, x
        ((300, 300, 300), (1.0, 1.0, 1.0), [(150, 150, 150)]),
        # anisotropic 5x: z waits until the in-plane voxel is within 2x of it
        (
            (100, 2000, 1000),
            (0.5, 0.1, 0.1),
            [(100, 1000, 500), (100, 500, 250), (50, 250, 125)],
        ),
        # 2D (Z = 1): only y, x
        ((1, 600, 700), (1.0, 0.1, 0.1), [(1, 300, 350), (1, 150, 175)]),
        # small enough already
        ((64, 256, 256), (1.0, 1.0, 1.0), []),
        # y, x reach 1 and z may not shrink: stops instead of looping
        ((1000, 2, 2), (100.0, 1.0, 1.0), [(1000, 1, 1)]),
    ],
)
def test_plan_pyramid(shape, voxel, expected):
    levels = plan_pyramid(shape, voxel, min_voxels=0, max_side=256)
    assert [level.shape for level in levels] == expected


def test_plan_pyramid_threshold_and_scales():
    assert plan_pyramid((8, 4096, 4096), (1, 1, 1), min_voxels=8 * 4096 * 4096 + 1) == []
    levels = plan_pyramid((40, 1024, 1024), (0.4, 0.1, 0.1), min_voxels=0, max_side=256)
    assert [lv.factors for lv in levels] == [(1, 2, 2), (2, 2, 2)]
    assert [lv.scale for lv in levels] == [(0.4, 0.2, 0.2), (0.8, 0.4, 0.4)]
    assert [lv.translation for lv in levels] == [(0.0, 0.05, 0.05), (0.2, 0.15, 0.15)]
    nearest = plan_pyramid((40, 1024, 1024), (0.4, 0.1, 0.1), method="nearest", min_voxels=0)
    assert all(lv.translation == (0.0, 0.0, 0.0) for lv in nearest)


# --------------------------------------------------------------------------- chunked, bounded
class RecordingArray:
    """A source array that records the size of every read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        block = self.data[key]
        self.reads.append(block.size)
        return block


@pytest.mark.parametrize("method", ["mean", "nearest"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.uint32])
def test_chunked_downsampling_equals_whole_and_reads_bounded_blocks(tmp_path, rng, method, dtype):
    data = (rng.random((13, 70, 45)) * 1000).astype(dtype)
    factors = (2, 2, 2)
    whole = downsample(data, factors, method)
    assert whole.shape == (7, 35, 23) and whole.dtype == data.dtype
    target = zarr.create_array(
        str(tmp_path / "t.zarr"), shape=whole.shape, chunks=(3, 8, 8), dtype=dtype
    )
    source = RecordingArray(data)
    downsample_array(source, target, factors, method, workers=2)
    np.testing.assert_array_equal(target[...], whole)
    assert max(source.reads) <= 8 * 3 * 8 * 8  # one target chunk's window, never the volume


def test_mean_of_integers_rounds_and_border_windows_average_what_they_have():
    data = np.array([[[1, 2, 4]]], dtype=np.uint8)
    np.testing.assert_array_equal(downsample(data, (1, 1, 2), "mean"), [[[2, 4]]])  # 1.5 -> 2
    floats = np.array([[[1.0, 2.0, 4.0]]], dtype=np.float32)
    np.testing.assert_array_equal(downsample(floats, (1, 1, 2), "mean"), [[[1.5, 4.0]]])
    labels = np.array([[[7, 0, 3]]], dtype=np.uint32)
    np.testing.assert_array_equal(downsample(labels, (1, 1, 2), "nearest"), [[[7, 3]]])


# --------------------------------------------------------------------------- atomic, idempotent
def test_failed_pyramid_leaves_no_output(tmp_path, rng, monkeypatch):
    import fewlabel.io.pyramid as pyramid

    def boom(*args, **kwargs):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(pyramid, "downsample_array", boom)
    final = tmp_path / "out.ome.zarr"
    data = rng.random((4, 600, 20)).astype(np.float32)
    with pytest.raises(RuntimeError, match="disk went away"), pyramid_settings(min_voxels=0):
        write_ome_zarr(final, data, VOXEL, chunks=(4, 64, 20))
    assert not final.exists() and not list(tmp_path.iterdir())


def test_build_pyramid_is_idempotent_and_replaces_stale_levels(tmp_path, rng):
    path = tmp_path / "p.ome.zarr"
    data = rng.random((4, 600, 20)).astype(np.float32)
    with pyramid_settings(min_voxels=0, max_side=100):
        write_ome_zarr(path, data, VOXEL, chunks=(4, 64, 20))
    before = _levels(path)
    group = zarr.open_group(str(path), mode="r+")
    group["1"][...] = -1.0  # a level left half-written by a failed earlier attempt
    group.create_array("7", shape=(1,), dtype="f4")  # and one the metadata does not list
    assert build_pyramid(path) == len(before[0]) - 1 == 3
    after = _levels(path)
    assert sorted(zarr.open_group(str(path)).array_keys()) == ["0", "1", "2", "3"]
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)
    assert open_ome_zarr(path).shape == data.shape


def test_open_ome_zarr_reads_level_0_of_a_pyramid(tmp_path, rng):
    """open_ome_zarr (every fewlabel reader) uses level 0 even with levels present."""
    path = tmp_path / "p.ome.zarr"
    data = rng.random((2, 600, 30)).astype(np.float32)
    with pyramid_settings(min_voxels=0):
        write_ome_zarr(path, data, VOXEL, chunks=(2, 128, 30))
    volume = open_ome_zarr(path)
    assert volume.shape == data.shape and volume.voxel_size == VOXEL
    np.testing.assert_array_equal(volume.array[...], data)
