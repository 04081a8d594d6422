"""predict_volume: model folder + OME-Zarr in → OME-Zarr out; slab jobs; CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from fewlabel.blocks import block_grid
from fewlabel.cli import main
from fewlabel.config import (
    DetectionPredictConfig,
    PredictConfig,
    SegmentationPredictConfig,
    parse,
)
from fewlabel.errors import ConfigError, FewlabelError, InputDataError
from fewlabel.inference.engine import (
    predict_volume,
    predict_with_module,
)
from fewlabel.inference.model_info import uses_instance_norm
from fewlabel.inference.slabs import (
    create_prediction_array,
    finalize_prediction,
    partial_path,
    plan_slabs,
    slab_blocks,
    slab_marker_path,
)
from fewlabel.io import open_ome_zarr, write_ome_zarr
from fewlabel.models.store import register_architecture, save_model
from fewlabel.normalize import apply_range, percentile_range

ARCH = "test_predict_tinyconv"
# float32: these tests compare with exact whole-volume inference (precision auto may be bf16)
PARAMS = PredictConfig(
    tile=(8, 16, 16), overlap=(4, 4, 4), batch_size=3, cache_tiles=8, precision="float32"
)
VOXEL = (2.0, 0.5, 0.5)


class TinyConv(torch.nn.Module):
    """Two 3×3×3 convolutions: receptive field 5 (or the declared ``rf``)."""

    def __init__(self, mid: int = 3, rf: int = 5) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv3d(1, mid, 3, padding=1)
        self.c2 = torch.nn.Conv3d(mid, 1, 3, padding=1)
        self.rf = rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))

    def receptive_field(self) -> tuple[int, int, int]:
        return (self.rf,) * 3


register_architecture(ARCH, TinyConv, replace=True)


@pytest.fixture
def image(tmp_path, rng):
    volume = (rng.gamma(2.0, 40.0, size=(13, 40, 36)) + 100).astype(np.uint16)
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(path, volume, VOXEL, chunks=(4, 16, 16))
    return path, volume


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    module = TinyConv()
    return save_model(
        tmp_path / "model",
        module,
        arch={"name": ARCH, "kwargs": {"mid": 3}},
        training={},
        normalization={"percentiles": [1, 99.8]},
    ), module.eval()


def reference(module: torch.nn.Module, volume: np.ndarray) -> np.ndarray:
    low, high = percentile_range(volume, (1, 99.8))
    with torch.inference_mode():
        x = torch.from_numpy(apply_range(volume, low, high))[None, None]
        return module(x).numpy()[0, 0]


# --------------------------------------------------------------------------- params
def test_predict_params_defaults_and_unknown_keys():
    params = PredictConfig.model_validate({})
    assert params.model_dump(mode="json") == {
        "tile": [16, 128, 128],
        "overlap": [8, 48, 48],
        "batch_size": 4,
        "cache_tiles": 64,
        "out_chunks": None,
        "pad_to_tile": False,
        "precision": "auto",
    }
    assert PredictConfig.model_validate(params.model_dump(mode="json")) == params
    # segmentation.predict: the same block with its own tile/overlap defaults
    seg = SegmentationPredictConfig()
    assert (seg.tile, seg.overlap, seg.cache_tiles) == ((16, 96, 96), (8, 44, 44), 64)
    # detection.predict: the same block plus model_grid (on by default)
    assert DetectionPredictConfig().model_dump(mode="json") == {
        **params.model_dump(mode="json"),
        "model_grid": True,
    }
    with pytest.raises(ConfigError, match=r"config key 'detection.predict.tiles': unknown key"):
        parse(DetectionPredictConfig, {"tiles": [8, 8, 8]})


@pytest.mark.parametrize(
    "bad",
    [
        {"tile": [8, 8]},
        {"overlap": [8, 4, 4], "tile": [8, 16, 16]},
        {"batch_size": 0},
        {"cache_tiles": 2.5},
        {"out_chunks": [0, 8, 8]},
        {"pad_to_tile": "maybe"},
        {"model_grid": "sometimes"},
    ],
)
def test_predict_params_reject_bad_values(bad):
    with pytest.raises(ConfigError, match=r"config key 'detection.predict"):
        parse(DetectionPredictConfig, bad)


def test_slab_blocks_partition_the_grid_in_contiguous_runs():
    shape, block = (13, 40, 36), (4, 16, 16)
    grid = [tuple((s.start, s.stop) for s in b) for b in block_grid(shape, block)]
    parts = [
        [tuple((s.start, s.stop) for s in b) for b in slab_blocks(shape, block, i, 5)]
        for i in range(5)
    ]
    assert [len(p) for p in parts] == [8, 7, 7, 7, 7]
    assert sum(parts, []) == grid  # every block exactly once, in grid order
    thin = [slab_blocks((10, 64, 64), (10, 32, 32), i, 2) for i in range(2)]
    assert [len(p) for p in thin] == [2, 2]  # one z-row of blocks still splits
    assert slab_blocks(shape, block, 39, 40) == []  # more slabs than blocks: empty slab


def test_plan_slabs_auto_follows_volume_size_and_never_plans_empty_jobs():
    shape, block = (13, 40, 36), (4, 16, 16)  # 18720 voxels, 36 chunks
    assert plan_slabs(shape, block, 3) == 3
    assert plan_slabs(shape, block, "auto", slab_voxels=10**9) == 1
    assert plan_slabs(shape, block, "auto", slab_voxels=5000) == 4  # ceil(18720 / 5000)
    assert plan_slabs(shape, block, "auto", slab_voxels=1) == 36  # at most one per chunk
    for bad in (0, -1, 2.5, "many", True):
        with pytest.raises(ConfigError):
            plan_slabs(shape, block, bad)
    with pytest.raises(ConfigError, match="slab_voxels"):
        plan_slabs(shape, block, "auto", slab_voxels=0)


def test_cli_predict_init_auto_writes_the_plan(image, model_dir, tmp_path):
    path, volume = image
    folder, _ = model_dir
    out, plan = tmp_path / "pred.ome.zarr", tmp_path / "plan.json"
    params = json.dumps(PARAMS.model_dump(mode="json"))
    assert (
        main(
            [
                "init_prediction_slabs",
                "--sample",
                "s1",
                "--model-dir",
                str(folder),
                "--image",
                str(path),
                "--output",
                str(out),
                "--n-slabs",
                "auto",
                "--slab-voxels",
                "5000",
                "--plan",
                str(plan),
                "--params",
                params,
            ]
        )
        == 0
    )
    written = json.loads(plan.read_text())
    assert written["n_slabs"] == 4 and written["requested"] == "auto"
    for slab in range(4):
        assert (
            main(
                [
                    "predict_volume_slab",
                    "--sample",
                    "s1",
                    "--model-dir",
                    str(folder),
                    "--image",
                    str(path),
                    "--output",
                    str(out),
                    "--slab",
                    str(slab),
                    "--n-slabs",
                    "4",
                    "--params",
                    params,
                ]
            )
            == 0
        )
    assert main(["finalize_prediction", "--sample", "s1", "--output", str(out)]) == 0
    result = open_ome_zarr(out)
    assert result.attrs["fewlabel"]["run_id"] == written["run_id"]
    assert result.attrs["fewlabel"]["complete"] is True


# --------------------------------------------------------------------------- one job
def test_predict_volume_writes_ome_zarr_equal_to_whole_volume_inference(
    image, model_dir, tmp_path, caplog
):
    path, volume = image
    folder, module = model_dir
    out = tmp_path / "pred.ome.zarr"
    with caplog.at_level(logging.WARNING):
        summary = predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu")
    assert "receptive field" not in caplog.text  # overlap 4 >= RF 5 - 1
    result = open_ome_zarr(out)
    assert result.voxel_size == VOXEL
    assert result.array.dtype == np.float32 and result.array.shape == volume.shape
    assert tuple(result.array.chunks) == (4, 16, 16)
    assert result.attrs["fewlabel"]["complete"] is True
    assert summary["margin"] == [2, 2, 2]
    np.testing.assert_allclose(result.array[...], reference(module, volume), atol=1e-5)
    assert not list(tmp_path.glob(".pred.ome.zarr.tmp-*"))  # atomic: no leftovers


def test_small_overlap_warns_and_uses_plain_gaussian_blending(image, tmp_path, caplog):
    path, volume = image
    module = TinyConv(rf=11).eval()
    with caplog.at_level(logging.WARNING):
        summary = predict_with_module(
            module,
            path,
            tmp_path / "p.ome.zarr",
            params=PARAMS,
            sample="s1",
            normalization={"range": [0, 1000]},
            device="cpu",
        )
    assert "smaller than the model's receptive field" in caplog.text
    assert summary["margin"] == [0, 0, 0]


def test_volume_smaller_than_one_tile_is_a_clear_error_unless_padding(
    image, model_dir, tmp_path, caplog
):
    path, volume = image  # (13, 40, 36)
    folder, module = model_dir
    big = PredictConfig(tile=(16, 32, 48), overlap=(4, 4, 4), precision="float32")
    out = tmp_path / "pred.ome.zarr"
    with pytest.raises(InputDataError) as err:
        predict_volume(folder, path, out, params=big, sample="s1", device="cpu")
    text = str(err.value)
    assert "s1" in text and "img.ome.zarr" in text and "smaller than one tile" in text
    assert "z: 13 < 16" in text and "x: 36 < 48" in text and "y:" not in text
    assert "pad_to_tile" in text and "[13, 32, 36]" in text  # the fix names a tile that fits
    assert not out.exists()
    with pytest.raises(InputDataError, match="smaller than one tile"):
        create_prediction_array(folder, path, out, params=big, sample="s1", n_slabs=2)
    # opted in: mirror-padded tiles, prediction cropped back, still whole-volume inference
    # wherever the padding is further than the receptive field from the voxel
    padded = big.model_copy(update={"pad_to_tile": True})
    with caplog.at_level(logging.WARNING):
        predict_volume(folder, path, out, params=padded, sample="s1", device="cpu")
    result = open_ome_zarr(out).array[...]
    assert result.shape == volume.shape
    np.testing.assert_allclose(
        result[:-2, :, :-2], reference(module, volume)[:-2, :, :-2], atol=1e-5
    )


def test_receptive_field_note_for_instance_norm_models_is_info_not_warning(image, tmp_path, caplog):
    path, volume = image
    module = TinyConv(rf=11)
    module.norm = torch.nn.InstanceNorm3d(1)  # registered submodule: an instance-norm model
    assert uses_instance_norm(module) and not uses_instance_norm(TinyConv())
    with caplog.at_level(logging.INFO):
        predict_with_module(
            module.eval(),
            path,
            tmp_path / "p.ome.zarr",
            params=PARAMS,
            sample="s1",
            normalization={"range": [0, 1000]},
            device="cpu",
        )
    notes = [r for r in caplog.records if "receptive-field bound" in r.getMessage()]
    assert notes and all(r.levelno == logging.INFO for r in notes)
    assert "instance normalisation" in notes[0].getMessage()


def test_dmdetnet3d_model_folder_predicts_density_in_unit_range(image, tmp_path):
    from fewlabel.detection.density.detnet import DMDetNet3D

    path, volume = image
    torch.manual_seed(0)
    net = DMDetNet3D(base_channels=2, depth=1)
    folder = save_model(
        tmp_path / "det",
        net,
        arch={"name": "dmdetnet3d", "kwargs": {"base_channels": 2, "depth": 1}},
        training={},
        normalization={"percentiles": [1, 99.8]},
    )
    out = tmp_path / "density.ome.zarr"
    params = PredictConfig(tile=(8, 16, 16), overlap=(4, 8, 8))
    predict_volume(folder, path, out, params=params, sample="s1", device="cpu")
    density = open_ome_zarr(out).array[...]
    assert density.shape == volume.shape
    assert np.isfinite(density).all() and density.min() >= 0 and density.max() <= 1


# --------------------------------------------------------------------------- slab jobs
def test_slab_jobs_and_finalize_equal_one_job_bitexact(image, model_dir, tmp_path):
    path, _ = image
    folder, _ = model_dir
    one = tmp_path / "one.ome.zarr"
    predict_volume(folder, path, one, params=PARAMS, sample="s1", device="cpu")

    out = tmp_path / "slabs.ome.zarr"
    partial = create_prediction_array(
        folder, path, out, params=PARAMS, sample="s1", n_slabs=3, device="cpu"
    )
    assert partial == partial_path(out) and partial.exists()
    for slab in (2, 0):  # any order, separate "jobs"
        predict_volume(
            folder, path, out, params=PARAMS, sample="s1", device="cpu", slab=slab, n_slabs=3
        )
    with pytest.raises(InputDataError, match=r"\[1\]"):
        finalize_prediction(out, sample="s1")
    assert not out.exists()  # incomplete runs never carry the final name
    predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu", slab=1, n_slabs=3)
    finalize_prediction(out, sample="s1")
    assert out.exists() and not partial.exists()
    result = open_ome_zarr(out)
    assert result.attrs["fewlabel"]["complete"] is True
    np.testing.assert_array_equal(result.array[...], open_ome_zarr(one).array[...])


def test_interrupted_slab_and_stale_markers_never_look_complete(image, model_dir, tmp_path):
    path, _ = image
    folder, module = model_dir
    out = tmp_path / "p.ome.zarr"
    create_prediction_array(folder, path, out, params=PARAMS, sample="s1", n_slabs=2, device="cpu")
    predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu", slab=0, n_slabs=2)

    class Crash(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("node died")

    with pytest.raises(RuntimeError, match="node died"):
        predict_with_module(
            Crash(),
            path,
            out,
            params=PARAMS,
            sample="s1",
            normalization={},
            device="cpu",
            slab=1,
            n_slabs=2,
        )
    assert not slab_marker_path(out, 1, 2).exists()
    with pytest.raises(InputDataError, match="not finished"):
        finalize_prediction(out)
    # a fresh partial array (new run) does not accept the markers of the previous run
    predict_volume(folder, path, out, params=PARAMS, sample="s1", device="cpu", slab=1, n_slabs=2)
    create_prediction_array(folder, path, out, params=PARAMS, sample="s1", n_slabs=2, device="cpu")
    with pytest.raises(InputDataError, match=r"\[0, 1\]"):
        finalize_prediction(out)
    # slab jobs with other parameters than the partial array are refused
    with pytest.raises(ConfigError, match="differ"):
        predict_volume(
            folder,
            path,
            out,
            params=PARAMS.model_copy(update={"batch_size": 2}),
            sample="s1",
            device="cpu",
            slab=0,
            n_slabs=2,
        )


# --------------------------------------------------------------------------- CLI
def test_cli_predict_one_job_and_slabs(image, model_dir, tmp_path):
    path, _ = image
    folder, _ = model_dir
    params = '{"tile": [8, 16, 16], "overlap": [4, 4, 4], "batch_size": 3, "cache_tiles": 8}'
    common = [
        "--sample",
        "s1",
        "--model-dir",
        str(folder),
        "--image",
        str(path),
        "--params",
        params,
        "--threads",
        "1",
        "--seed",
        "0",
    ]
    log = tmp_path / "logs" / "predict.log"
    assert (
        main(
            ["predict_volume", *common, "--output", str(tmp_path / "a.ome.zarr"), "--log", str(log)]
        )
        == 0
    )
    assert "recompute factor" in log.read_text()
    b = str(tmp_path / "b.ome.zarr")
    assert main(["init_prediction_slabs", *common, "--output", b, "--n-slabs", "2"]) == 0
    for slab in ("0", "1"):
        assert (
            main(["predict_volume_slab", *common, "--output", b, "--slab", slab, "--n-slabs", "2"])
            == 0
        )
    assert main(["finalize_prediction", "--sample", "s1", "--output", b]) == 0
    np.testing.assert_array_equal(
        open_ome_zarr(b).array[...], open_ome_zarr(tmp_path / "a.ome.zarr").array[...]
    )
    bad = [
        "predict_volume",
        "--sample",
        "s1",
        "--model-dir",
        str(folder),
        "--image",
        str(path),
        "--params",
        '{"tile": [8, 16, 16], "bogus": 1}',
        "--output",
        str(tmp_path / "c.ome.zarr"),
    ]
    assert main(bad) == 2
    assert (
        main(["finalize_prediction", "--sample", "s1", "--output", str(tmp_path / "none.ome.zarr")])
        == 2
    )


def test_errors_are_fewlabel_errors(image, tmp_path):
    path, _ = image
    with pytest.raises(FewlabelError, match="model folder not found"):
        predict_volume(
            tmp_path / "missing",
            path,
            tmp_path / "x.ome.zarr",
            params=PARAMS,
            sample="s1",
            device="cpu",
        )
    with pytest.raises(InputDataError, match="init_prediction_slabs"):
        predict_with_module(
            TinyConv(),
            path,
            tmp_path / "x.ome.zarr",
            params=PARAMS,
            sample="s1",
            normalization={},
            device="cpu",
            slab=0,
            n_slabs=2,
        )
