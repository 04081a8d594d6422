"""Shared pieces of the PU picking benchmark: volumes, ROI, one training + evaluation run."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewlabel.config import RoiConfig
from fewlabel.config.pu import PUConfig, PUPostprocessConfig
from fewlabel.detection.pu.postprocess import postprocess, threshold_for_count
from fewlabel.detection.pu.sampling import PUVolume
from fewlabel.detection.pu.training import train_pu
from fewlabel.metrics.detection import match_points
from fewlabel.normalize import apply_range, percentile_range

HERE = Path(__file__).resolve().parent


def normalise(image: np.ndarray, percentiles=(1.0, 99.8)) -> np.ndarray:
    low, high = percentile_range(image, percentiles)
    return apply_range(image, low, high)


def roi_mask(
    image: np.ndarray, voxel: tuple[float, float, float], roi: RoiConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ROI stage (:func:`fewlabel.roi.segment_roi`) on an in-memory volume."""
    from fewlabel.io import open_ome_zarr, write_ome_zarr
    from fewlabel.roi import segment_roi

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "image.ome.zarr"
        write_ome_zarr(src, image.astype(np.float32), voxel, chunks=(16, 64, 64))
        segment_roi(
            src, Path(tmp) / "roi.ome.zarr", Path(tmp) / "roi.json", params=roi, sample="bench"
        )
        mask = np.asarray(open_ome_zarr(Path(tmp) / "roi.ome.zarr").array[...]) > 0
        info = json.loads((Path(tmp) / "roi.json").read_text())
    return mask, info


def volume_record(synth: Any, voxel: tuple[float, float, float], roi: RoiConfig, **extra) -> dict:
    """A synthetic volume as the drivers pass it around: image, percentile-normalised image,
    true centres (z, y, x voxels), voxel size, the ROI stage's mask and fraction, ``extra``."""
    mask, info = roi_mask(synth.image, voxel, roi)
    return {
        "image": synth.image,
        "norm": normalise(synth.image),
        "points": synth.points[["z", "y", "x"]].to_numpy(),
        "voxel": voxel,
        "roi": mask,
        "roi_fraction": info["roi_fraction"],
        **extra,
    }


def pu_params(base: dict[str, Any], *updates: dict[str, Any]) -> PUConfig:
    """``base`` updated by each of ``updates`` (a dict value updates the sub-section)."""
    merged = json.loads(json.dumps(base))
    for update in updates:
        for key, value in update.items():
            if isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return PUConfig.model_validate(merged)


def dense(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(image)[None, None])[0, 0].numpy()


def evaluate(points: np.ndarray, gt: np.ndarray, voxel, gate_um: float) -> dict[str, float]:
    r = match_points(gt, points, max_distance=gate_um, scale=voxel)
    return {
        "f1": r.f1,
        "precision": r.precision,
        "recall": r.recall,
        "tp": r.tp,
        "fp": r.fp,
        "fn": r.fn,
    }


def run_pu(
    train: dict[str, Any],
    test: dict[str, Any],
    *,
    n_clicks: int,
    run_seed: int,
    params: PUConfig,
    radius_um: float,
    gate_um: float,
) -> dict[str, Any]:
    """Train on ``n_clicks`` random particles of ``train``, evaluate on ``test``: F1 after NMS
    only and after the full post-processing chain (threshold from the expected count)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(run_seed)
    pts = train["points"]
    subset = pts[rng.choice(len(pts), size=min(n_clicks, len(pts)), replace=False)]
    vol = PUVolume("train", train["norm"], subset, train["voxel"], roi=train.get("roi"))
    model, summary, _ = train_pu(
        [vol], params, radius_um=radius_um, expected_particles=len(pts), seed=run_seed
    )
    t_train = time.perf_counter() - t0
    # the workflow's auto rule (fit.py): k detections after the averaging step (session pu2;
    # the section-1 rows in README.md were made before, with k NMS candidates)
    merge = PUPostprocessConfig().merge_factor * 2 * radius_um
    thr = threshold_for_count(
        [dense(model, train["norm"])], len(pts), radius_um, [train["voxel"]], merge_um=merge
    )
    score = dense(model, test["norm"])
    row: dict[str, Any] = {"threshold": thr, "train_s": t_train, "pi_u": summary["pi_unlabelled"]}
    chains = {
        "nms": PUPostprocessConfig(average=False, recentre=False, intensity_filter=False),
        "full": PUPostprocessConfig(clahe_kernel_um=test.get("clahe_um", (2.0, 2.0, 2.0))),
    }
    for name, post in chains.items():
        out, steps = postprocess(
            score,
            test["image"],
            threshold=thr,
            radius_um=radius_um,
            voxel_size=test["voxel"],
            params=post,
            roi=test.get("roi"),
        )
        metrics = evaluate(out[["z", "y", "x"]].to_numpy(), test["points"], test["voxel"], gate_um)
        row.update({f"{k}_{name}": v for k, v in metrics.items()})
        row[f"steps_{name}"] = json.dumps(steps)
    row["seconds"] = time.perf_counter() - t0
    return row
