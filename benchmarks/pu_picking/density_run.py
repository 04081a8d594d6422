"""DM-DetNet3D on clicked spots for experiment 3 (no PU imports: also runs against a
fewlabel checkout without ``detection.pu``, e.g. main's partial-annotation mode)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VOXEL = (1.0, 1.0, 1.0)
GATE = 3.0


def evaluate(points: np.ndarray, gt: np.ndarray, voxel, gate_um: float) -> dict[str, float]:
    from fewlabel.metrics.detection import match_points

    r = match_points(gt, points, max_distance=gate_um, scale=voxel)
    return {
        "f1": r.f1, "precision": r.precision, "recall": r.recall, "tp": r.tp, "fp": r.fp,
        "fn": r.fn,
    }  # fmt: skip


DENSITY_TRAIN = {
    "epochs": 15,
    "steps_per_epoch": 12,
    "batch_size": 4,
    "crop": [8, 48, 48],
    "lr": 2e-3,
    "patience": 15,
    "point_fraction": 0.5,
    "model": {"base_channels": 8, "depth": 2},
    "gate": GATE,
}


def run_density(
    train: dict, test: dict, n_clicks: int, run_seed: int, targets: dict[str, Any] | None = None
) -> dict:
    """DM-DetNet3D on the clicked spots only (unclicked = background), threshold tuned on the
    same clicks; prediction by the tiled engine, peaks by extract_points."""
    import pandas as pd

    from fewlabel.config import (
        DensityTargetsConfig,
        DetectorTrainConfig,
        PeaksConfig,
        PredictConfig,
    )
    from fewlabel.detection.density.targets import make_density_targets
    from fewlabel.detection.density.training import train_detector
    from fewlabel.detection.peaks import extract_points
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import open_ome_zarr, write_ome_zarr, write_points_csv

    t0 = time.perf_counter()
    rng = np.random.default_rng(run_seed)
    pts = train["points"][rng.choice(len(train["points"]), n_clicks, replace=False)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        item = {k: str(root / f"train_{k}.ome.zarr") for k in ("image", "target", "weight")}
        item.update(sample="train", points=str(root / "train.csv"))
        write_ome_zarr(item["image"], train["image"], VOXEL, chunks=(10, 64, 64))
        write_points_csv(pd.DataFrame(pts, columns=["z", "y", "x"]), item["points"])
        make_density_targets(
            item["image"], item["points"], item["target"], item["weight"],
            params=DensityTargetsConfig.model_validate({"sigma": [1, 1.5, 1.5], **(targets or {})}),
            sample="train",
        )  # fmt: skip
        train_detector(
            [item], [item], root / "model",
            params=DetectorTrainConfig.model_validate(DENSITY_TRAIN),
            peaks=PeaksConfig(min_distance=(1, 2, 2), refine_radius=(1, 1, 1)),
            seed=run_seed, threads=1,
        )  # fmt: skip
        thr = json.loads((root / "model" / "thresholds.json").read_text())["detection_threshold"]
        write_ome_zarr(root / "test.ome.zarr", test["image"], VOXEL, chunks=(10, 64, 64))
        predict_volume(
            root / "model", root / "test.ome.zarr", root / "map.ome.zarr",
            params=PredictConfig(tile=(10, 128, 128), overlap=(4, 16, 16), batch_size=1),
            sample="test", device="cpu",
        )  # fmt: skip
        det = extract_points(
            open_ome_zarr(root / "map.ome.zarr").array, threshold=thr, min_distance=(1, 2, 2),
            refine_radius=1,
        )  # fmt: skip
    row = evaluate(det[["z", "y", "x"]].to_numpy(float), test["points"], VOXEL, GATE)
    return {**{f"{k}_full": v for k, v in row.items()}, "threshold": thr,
            "seconds": time.perf_counter() - t0}  # fmt: skip
