"""``detection.method: pu`` end to end on tiny demo data: ROI → windows → GE-binomial training
with SWA → dense tiled prediction → post-processing → evaluation → report."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from test_workflow import TINY_CONFIG, make_workdir, snakemake

from fewlabel.io import open_ome_zarr

pytestmark = pytest.mark.workflow

PU_CONFIG = copy.deepcopy(TINY_CONFIG)
PU_CONFIG["segmentation"] = {"enabled": False}
PU_CONFIG["detection"] = {
    "method": "pu",
    "pu": {
        # demo spots: PSF sigma 1 voxel in y, x at 0.3 x 0.1 x 0.1 µm
        "radius_um": 0.15,
        "expected_particles": 10,
        "window": [5, 9, 9],
        "batch_size": 16,
        "steps": 30,
        "model": {"width": 8, "channels": [8, 16], "head_channels": 16},
        "averaging": {"mode": "swa", "start": 0.5, "cycle_steps": 5},
        "predict": {"tile": [8, 32, 32], "overlap": [4, 8, 8]},
        "postprocess": {"clahe_kernel_um": [2.0, 1.6, 1.6]},
    },
}


def test_pu_chain_end_to_end(tmp_path):
    workdir = make_workdir(tmp_path, PU_CONFIG)
    snakemake(workdir, "--cores", "2")
    results = workdir / "results"
    model = results / "models" / "detector"
    arch = json.loads((model / "model.json").read_text())
    assert arch["name"] == "pu_effnet3d"
    record = json.loads((model / "training.json").read_text())
    assert record["stage"] == "train_pu" and record["voxel_size_um"] == [0.3, 0.1, 0.1]
    assert record["provenance"]["versions"]["torch"].startswith("2.13")
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["models"]["detector"]["stage"] == "train_pu"  # versions that trained it
    assert provenance["models"]["detector"]["versions"]["torch"].startswith("2.13")
    training = record["summary"]
    assert training["averaging"] == "swa" and training["averaged_models"] == 3
    assert 0 < training["pi_unlabelled"] < training["pi"]
    thresholds = json.loads((model / "thresholds.json").read_text())
    assert 0 < thresholds["detection_threshold"] < 1 and thresholds["radius_um"] == 0.15
    score = open_ome_zarr(results / "predict" / "spots_test" / "detection.ome.zarr")
    image = open_ome_zarr(results / "ingest" / "spots_test" / "image.ome.zarr")
    assert score.shape == image.shape
    assert score.attrs["fewlabel"]["receptive_field"] == [5, 9, 9]
    assert score.attrs["fewlabel"]["margin"] == [2, 4, 4]  # seam-free blending
    log = (workdir / "logs" / "postprocess_pu" / "spots_test.log").read_text()
    for step in ("threshold+nms", "average", "recentre", "intensity_filter", "roi_filter"):
        assert f"{step}:" in log
    points = pd.read_csv(results / "points" / "spots_test" / "points.csv")
    assert list(points.columns) == ["z", "y", "x", "z_um", "y_um", "x_um", "score"]
    summary = pd.read_csv(results / "evaluate" / "detection_summary.tsv", sep="\t")
    row = summary.set_index("sample").loc["spots_test"]
    assert row["n_pred"] == len(points)
    assert (results / "report" / "report.html").stat().st_size > 0
    assert not (workdir / "logs" / "extract_points").exists()
