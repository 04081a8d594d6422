"""BFS-Net end to end (segmentation.method: bfs): a sheet whose training rows have only clicks
(`points`, no `labels`) gives instance labels, their evaluation and the report panels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fewlabel.io import open_ome_zarr
from tests.test_workflow import make_workdir, snakemake

pytestmark = pytest.mark.workflow

BFS_CONFIG = {
    "samples": "config/samples.tsv",
    "seed": 0,
    "demo": {
        "enabled": True,
        "output_dir": "demo_data",
        "params": {"spots_shape": [8, 32, 32], "nuclei_shape": [12, 48, 48], "nuclei_count": 5},
    },
    "ingest": {"chunks": [8, 32, 32]},
    "roi": {"enabled": False},
    "segmentation": {
        "method": "bfs",
        "predict": {"tile": [8, 32, 32], "overlap": [2, 8, 8]},
        "bfs": {
            "centres": {"d_m": 1.5},
            "s1": {
                "epochs": 8,
                "steps_per_epoch": 6,
                "crop": [8, 32, 32],
                "peak_min_distance_um": 1.0,
                "peak_threshold": 0.5,
            },
            "prm": {"crop": [8, 32, 32]},
            "s2": {"epochs": 6, "steps_per_epoch": 6, "crop": [8, 32, 32]},
            "instances": {"merge_distance_um": 1.0, "halo": [6, 16, 16]},
        },
    },
}

SHEET = (
    "sample\timage\tvoxel_size\tsplit\ttask\tpoints\tlabels\n"
    "nuclei_train\tdemo_data/nuclei_train_labelfree.tif\t0.5,0.25,0.25\ttrain\tsegment\t"
    "demo_data/nuclei_train.csv\t\n"
    "nuclei_val\tdemo_data/nuclei_val_labelfree.tif\t0.5,0.25,0.25\tval\tsegment\t"
    "demo_data/nuclei_val.csv\t\n"
    "nuclei_test\tdemo_data/nuclei_test_labelfree.tif\t0.5,0.25,0.25\ttest\tsegment\t\t"
    "demo_data/nuclei_test_labels.tif\n"
)


def test_bfs_from_clicks_only(tmp_path):
    workdir = make_workdir(tmp_path, BFS_CONFIG)
    (workdir / "config" / "samples.tsv").write_text(SHEET)
    snakemake(workdir, "--cores", "2")
    results = workdir / "results"
    # no instance labels of the training rows were ever ingested or read
    assert not (results / "ingest" / "nuclei_train" / "labels.ome.zarr").exists()
    centres = open_ome_zarr(results / "labels" / "nuclei_train" / "bfs_centres.ome.zarr")
    assert 0.5 < float(np.asarray(centres.array).max()) <= 1.0  # sub-voxel clicks: below 1
    pseudo = open_ome_zarr(results / "labels" / "nuclei_train" / "bfs_pseudo.ome.zarr")
    assert pseudo.attrs["fewlabel"]["n_objects"] >= 2
    labels = open_ome_zarr(results / "instances" / "nuclei_test" / "labels.ome.zarr")
    assert labels.attrs["fewlabel"]["method"] == "bfs"
    assert labels.array.dtype == np.uint32 and int(np.asarray(labels.array).max()) >= 1
    metrics = pd.read_csv(results / "evaluate" / "segmentation_summary.tsv", sep="\t")
    row = metrics.set_index("sample").loc["nuclei_test"]
    assert 0 < row["fg_iou"] <= 1 and {"seg", "mucov", "f1_50"} <= set(metrics.columns)
    html = (results / "report" / "report.html").read_text()
    for caption in ("BFS-Net maps", "pseudo-labels from peak response maps", "instance outlines"):
        assert caption in html
    provenance = json.loads((results / "provenance.json").read_text())
    assert {"bfs_centres", "segmenter"} <= set(provenance["models"])
    assert yaml.safe_load((results / "config.yaml").read_text())["segmentation"]["method"] == "bfs"


def test_bfs_sheet_needs_points_on_training_rows(tmp_path):
    workdir = make_workdir(tmp_path, BFS_CONFIG)
    sheet = SHEET.replace("demo_data/nuclei_train.csv", "")
    (workdir / "config" / "samples.tsv").write_text(sheet)
    result = snakemake(workdir, "-n", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "nuclei_train" in text and "points" in text and "bfs" in text
