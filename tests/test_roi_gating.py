"""ROI gating of tiled prediction: skipped tiles, ROI voxels equal to ungated prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tiny_nets import TinyConv

from fewlabel.cli import main
from fewlabel.config import PredictConfig
from fewlabel.errors import InputDataError
from fewlabel.inference.engine import predict_volume
from fewlabel.inference.gating import tile_activity
from fewlabel.inference.geometry import tile_starts
from fewlabel.inference.slabs import create_prediction_array, finalize_prediction
from fewlabel.inference.tiling import predict_tiled
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.models.store import save_model

TILE = (4, 12, 10)
OVERLAP = (2, 4, 3)
SHAPE = (11, 37, 29)


def brute_activity(roi: np.ndarray, tile, overlap) -> np.ndarray:
    starts = [tile_starts(n, t, o) for n, t, o in zip(roi.shape, tile, overlap, strict=True)]
    out = np.zeros([len(s) for s in starts], dtype=bool)
    for idx in itertools.product(*(range(len(s)) for s in starts)):
        window = tuple(slice(starts[a][i], starts[a][i] + tile[a]) for a, i in enumerate(idx))
        out[idx] = roi[window].any()
    return out


@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 1.0])
def test_tile_activity_equals_brute_force(rng, density):
    roi = (rng.random(SHAPE) < density).astype(np.uint8)
    starts = [tile_starts(n, t, o) for n, t, o in zip(SHAPE, TILE, OVERLAP, strict=True)]
    got = tile_activity(roi, starts, TILE, max_read_voxels=3 * SHAPE[1] * SHAPE[2])
    np.testing.assert_array_equal(got, brute_activity(roi, TILE, OVERLAP))


class CountingModel:
    """A smooth nonlinear numpy 'model' that counts the tiles it is given."""

    def __init__(self) -> None:
        self.tiles = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.tiles += batch.shape[0]
        return np.tanh(batch * 0.5) + 0.1 * batch.mean(axis=(2, 3, 4), keepdims=True)


def blob_roi(shape, boxes) -> np.ndarray:
    roi = np.zeros(shape, dtype=np.uint8)
    for box in boxes:
        roi[box] = 1
    return roi


def run(volume, roi, **kw):
    model = CountingModel()
    out = np.full(volume.shape, np.nan, dtype=np.float32)
    stats = predict_tiled(
        model, volume, out, tile=TILE, overlap=OVERLAP, batch_size=3, cache_tiles=6, roi=roi, **kw
    )
    return out, stats, model.tiles


def test_gated_prediction_equals_ungated_inside_roi_bitwise(rng):
    volume = rng.normal(size=SHAPE).astype(np.float32)
    roi = blob_roi(SHAPE, [np.s_[2:5, 3:9, 4:8], np.s_[9:11, 30:37, 20:29]])
    full, full_stats, full_tiles = run(volume, None)
    gated, stats, tiles = run(volume, roi)
    inside = roi > 0
    np.testing.assert_array_equal(gated[inside], full[inside])  # bit for bit
    # every voxel is either the ungated value or background 0
    assert np.isfinite(gated).all()
    same = gated == full
    assert (same | (gated == 0)).all()
    assert (gated == 0).mean() > 0.5
    # skipped tiles are not computed and are reported
    assert stats.tiles_skipped > 0 and full_stats.tiles_skipped == 0
    assert stats.tiles_needed == full_stats.tiles_needed
    assert stats.tiles_needed - stats.tiles_skipped == brute_activity(roi, TILE, OVERLAP).sum()
    assert tiles == stats.tiles_computed < full_tiles
    assert stats.recompute_factor >= 1.0


def test_empty_roi_computes_nothing_and_full_roi_changes_nothing(rng):
    volume = rng.normal(size=SHAPE).astype(np.float32)
    empty, stats, tiles = run(volume, np.zeros(SHAPE, np.uint8))
    assert tiles == 0 and stats.batches == 0 and (empty == 0).all()
    full, _, _ = run(volume, None)
    same, stats, _ = run(volume, np.ones(SHAPE, bool))
    np.testing.assert_array_equal(same, full)
    assert stats.tiles_skipped == 0


def test_gating_is_the_same_with_and_without_prefetch_and_per_block_subset(rng):
    volume = rng.normal(size=SHAPE).astype(np.float32)
    roi = blob_roi(SHAPE, [np.s_[0:3, 10:20, 0:5]])
    a, _, _ = run(volume, roi)
    b, _, _ = run(volume, roi, prefetch=False)
    np.testing.assert_array_equal(a, b)


@pytest.fixture
def files(tmp_path, rng):
    from fewlabel.models.store import register_architecture

    register_architecture("test_roi_tiny", TinyConv, replace=True)
    volume = (rng.gamma(2.0, 40.0, size=(12, 40, 36)) + 100).astype(np.uint16)
    image = tmp_path / "img.ome.zarr"
    write_ome_zarr(image, volume, (2.0, 0.5, 0.5), chunks=(4, 16, 16))
    roi = np.zeros(volume.shape, np.uint8)
    roi[4:7, 20:30, 2:9] = 1
    roi_path = tmp_path / "roi.ome.zarr"
    write_ome_zarr(roi_path, roi, (2.0, 0.5, 0.5), chunks=(4, 16, 16))
    torch.manual_seed(0)
    model = save_model(
        tmp_path / "model",
        TinyConv(3),
        arch={"name": "test_roi_tiny", "kwargs": {"mid": 3}},
        training={},
        normalization={"percentiles": [1, 99.8]},
    )
    return image, roi_path, roi > 0, model


PARAMS = PredictConfig(
    tile=(8, 16, 16), overlap=(4, 4, 4), batch_size=2, cache_tiles=4, precision="float32"
)


def test_predict_volume_with_roi_path_and_slabs(files, tmp_path):
    image, roi_path, inside, model = files
    full = tmp_path / "full.ome.zarr"
    gated = tmp_path / "gated.ome.zarr"
    predict_volume(model, image, full, params=PARAMS, sample="s", device="cpu")
    summary = predict_volume(
        model, image, gated, params=PARAMS, sample="s", device="cpu", roi=roi_path
    )
    a, b = open_ome_zarr(full).array[...], open_ome_zarr(gated).array[...]
    # torch convolutions of a smaller batch (only the brick's active tiles) may round
    # differently in the last bit; batch-invariant models are bit-exact (tests above)
    np.testing.assert_allclose(b[inside], a[inside], rtol=1e-6, atol=1e-7)
    assert (b[~inside] == 0).any() and summary["stats"]["tiles_skipped"] > 0
    assert open_ome_zarr(gated).attrs["fewlabel"]["roi"] == str(roi_path)
    # slab jobs with the same ROI equal one gated job bit for bit
    slabs = tmp_path / "slabs.ome.zarr"
    create_prediction_array(model, image, slabs, params=PARAMS, sample="s", n_slabs=2)
    for slab in (1, 0):
        predict_volume(
            model, image, slabs, params=PARAMS, sample="s", slab=slab, n_slabs=2, roi=roi_path
        )
    finalize_prediction(slabs, sample="s")
    np.testing.assert_array_equal(open_ome_zarr(slabs).array[...], b)


def test_cli_roi_option_and_shape_mismatch(files, tmp_path):
    image, roi_path, inside, model = files
    params = PARAMS.model_dump_json()
    out = tmp_path / "cli.ome.zarr"
    base = ["predict_volume", "--sample", "s", "--model-dir", str(model), "--image", str(image)]
    assert main([*base, "--output", str(out), "--params", params, f"--roi={roi_path}"]) == 0
    gated = open_ome_zarr(out).array[...]
    plain = tmp_path / "plain.ome.zarr"
    assert main([*base, "--output", str(plain), "--params", params, "--roi="]) == 0
    np.testing.assert_allclose(
        gated[inside], open_ome_zarr(plain).array[...][inside], rtol=1e-6, atol=1e-7
    )
    wrong = tmp_path / "wrong.ome.zarr"
    write_ome_zarr(wrong, np.ones((12, 40, 35), np.uint8), (2.0, 0.5, 0.5), chunks=(4, 16, 16))
    with pytest.raises(InputDataError, match="ROI mask has shape"):
        predict_volume(model, image, tmp_path / "x.ome.zarr", params=PARAMS, sample="s", roi=wrong)


def test_plan_gates_detection_only_when_configured():
    import pandas as pd

    from fewlabel.config import FewlabelConfig
    from fewlabel.plan import Plan

    sheet = pd.DataFrame({"image": ["a.tif"], "split": ["test"]}, index=pd.Index(["a"]))
    cfg = FewlabelConfig().model_dump(mode="json")
    assert Plan(sheet, cfg).prediction_roi("a") == "results/roi/a/roi.ome.zarr"  # default: gated
    cfg["roi"]["gate_prediction"] = False
    assert Plan(sheet, cfg).prediction_roi("a") == ""
    cfg["roi"]["gate_prediction"] = True
    cfg["roi"]["enabled"] = False
    assert Plan(sheet, cfg).prediction_roi("a") == ""
