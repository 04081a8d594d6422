"""PU+SWA entry of the real-spots benchmark, end to end through the library: the model folder
by :func:`fewlabel.detection.pu.fit.train_to_folder` (``detection.pu.normalisation`` applied to
the training windows and recorded in normalization.json; auto threshold by the fixed rule: k
detections per training volume counted after the averaging step), the dense score map by the
tiled engine (:func:`fewlabel.inference.engine.predict_volume`, which repeats the recipe), then
the full post-processing chain (:func:`fewlabel.detection.pu.postprocess.postprocess`).

CPU-scaled setting of ``benchmarks/pu_picking/spots.py`` (window 5 x 11 x 11 voxels, stem 8,
blocks [8, 16, 24], expansion 3, head 32, 160 SGD steps, batch 48 with 6 positive windows,
SWA from step 80 in 10-step cycles; tiles 10 x 64 x 64, float32), radius r = 0.25 µm, seed 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import data
import numpy as np
import pandas as pd

RADIUS_UM = 0.25  # ≈ 1.5 x the spot's xy sigma (1.5 voxels x 0.11 µm); 2r = the 0.5 µm gate
CLICKED_SHARE = 19 / 64  # clicks / spots in img2's fully annotated box (validation, not test)
LOWEST = 0.02  # the chain is run at min(auto threshold, LOWEST); sweeps keep score > t


def params(expected: int, mode: str | None = None, intensity: dict | None = None):
    """The CPU-scaled :class:`~fewlabel.config.pu.PUConfig`; ``mode`` None: the library's
    default ``detection.pu.normalisation.mode``; ``intensity``: detection.pu.augment.intensity."""
    from fewlabel.config.pu import PUConfig

    settings = {
        "window": [5, 11, 11],
        "radius_um": RADIUS_UM,
        "expected_particles": int(expected),
        "batch_size": 48,
        "steps": 160,
        "model": {"width": 8, "channels": [8, 16, 24], "expand": 3, "head_channels": 32},
        "averaging": {"mode": "swa", "start": 0.5, "cycle_steps": 10},
        "predict": {"tile": [10, 64, 64], "overlap": [4, 10, 10], "precision": "float32"},
    }
    if mode is not None:
        settings["normalisation"] = {"mode": mode}
    if intensity:
        settings["augment"] = {"intensity": intensity}
    return PUConfig.model_validate(settings)


def item(vol: data.Volume, workdir: Path, clicks: np.ndarray, ignore: np.ndarray | None) -> dict:
    """A train_pu item ``{sample, image, points, roi}`` written under ``workdir``; ``ignore``:
    voxels held out of training (the ROI is its complement: no unlabelled window centre there;
    clicks there must already be removed)."""
    from fewlabel.io import write_ome_zarr, write_points_csv

    root = workdir / vol.name
    root.mkdir(parents=True, exist_ok=True)
    out = {"sample": vol.name, "image": str(root / "image.ome.zarr"), "roi": ""}
    if not Path(out["image"]).exists():
        write_ome_zarr(out["image"], vol.image, vol.voxel_size, chunks=(10, 100, 100))
    out["points"] = str(root / f"pu_points_{len(clicks)}.csv")
    write_points_csv(pd.DataFrame(clicks, columns=["z", "y", "x"]), out["points"])
    if ignore is not None:
        out["roi"] = str(root / "pu_roi.ome.zarr")
        if not Path(out["roi"]).exists():
            roi = (~ignore).astype(np.uint8)
            write_ome_zarr(out["roi"], roi, vol.voxel_size, chunks=(10, 100, 100))
    return out


def train(
    items: list[dict], workdir: Path, expected: int, mode: str | None, intensity: dict | None = None
) -> tuple:
    """Train into ``workdir/model``; returns (model folder, PUConfig, auto threshold, note)."""
    from fewlabel.detection.pu.fit import train_to_folder

    cfg = params(expected, mode, intensity)
    model = workdir / "model"
    summary = train_to_folder(items, model, params=cfg, seed=0)
    thr = float(json.loads((model / "thresholds.json").read_text())["detection_threshold"])
    norm = json.loads((model / "normalization.json").read_text())
    note = (
        f"k={expected}, r={RADIUS_UM} um, pi_U={summary['pi_unlabelled']:.4g}, "
        f"auto threshold {thr:.4g} (after averaging), normalisation {norm.get('method')}"
    )
    return model, cfg, thr, note


def peaks(model: Path, cfg, auto: float, vol: data.Volume, workdir: Path) -> pd.DataFrame:
    """Engine score map of ``vol`` → post-processing chain at min(auto, LOWEST)."""
    from fewlabel.config.pu import PUPostprocessConfig
    from fewlabel.detection.pu.postprocess import postprocess
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import open_ome_zarr, write_ome_zarr

    root = workdir / vol.name
    root.mkdir(parents=True, exist_ok=True)
    image = root / "image.ome.zarr"
    if not image.exists():
        write_ome_zarr(image, vol.image, vol.voxel_size, chunks=(10, 100, 100))
    score_path = workdir / f"score_{vol.name}.ome.zarr"
    if not score_path.exists():
        predict_volume(model, image, score_path, params=cfg.predict, sample=vol.name, device="cpu")
    score = np.asarray(open_ome_zarr(score_path).array[...], dtype=np.float32)
    table, _ = postprocess(
        score,
        vol.image.astype(np.float32),
        threshold=min(auto, LOWEST),
        radius_um=RADIUS_UM,
        voxel_size=vol.voxel_size,
        params=PUPostprocessConfig(),
    )
    return table
