"""Experiment 4 (qualitative): PU picking on real data, the cellfinder test crop
(/work/shared/data/cellfinder_brain_cells: serial two-photon mouse brain, 30 x 510 x 667
voxels of 5 x 2 x 2 µm; its 56 points are cellfinder's own output, not manual annotation).

10 of cellfinder's points are the clicks; the ROI stage, PU+SWA training, dense prediction by
the tiled engine (model folder → :func:`fewlabel.inference.engine.predict_volume`) and the
full post-processing run on the volume; the agreement with all 56 cellfinder points is
reported and a max-projection picture written (results/cellfinder.png).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pu_picking/cellfinder.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, evaluate, normalise, roi_mask

from fewlabel.config import PredictConfig, RoiConfig
from fewlabel.config.pu import PUConfig, PUPostprocessConfig
from fewlabel.detection.pu.classifier import ARCH_NAME
from fewlabel.detection.pu.postprocess import postprocess, threshold_for_count
from fewlabel.detection.pu.sampling import PUVolume
from fewlabel.detection.pu.training import model_kwargs, train_pu

DATA = Path("/work/shared/data/cellfinder_brain_cells")
VOXEL = (5.0, 2.0, 2.0)
RADIUS = 6.0  # µm, soma radius
GATE = 10.0  # µm
CLICKS = 10
ROI = RoiConfig(
    clahe_kernel_um=(50.0, 100.0, 100.0),
    smooth_sigma_um=2.0,
    erosion_radius_um=2.0,
    extend_radius_um=12.0,
)
PU = PUConfig.model_validate(
    {
        "window": [5, 11, 11],
        "batch_size": 48,
        "steps": 200,
        "model": {"width": 8, "channels": [8, 16, 24], "expand": 3, "head_channels": 32},
        "averaging": {"mode": "swa", "start": 0.5, "cycle_steps": 10},
    }
)
POST = PUPostprocessConfig(clahe_kernel_um=(50.0, 100.0, 100.0))


def main() -> None:
    import argparse

    from fewlabel.inference.engine import predict_volume

    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--expected", type=int, default=None,
        help="k, expected cells in the crop (default: cellfinder's 56 points)",
    )  # fmt: skip
    args = ap.parse_args()
    from fewlabel.io import open_ome_zarr, write_ome_zarr
    from fewlabel.models.store import save_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    image = tifffile.imread(DATA / "signal_zyx.tif").astype(np.float32)
    cf = pd.read_csv(DATA / "cell_classification_points_zyx.csv")
    points = cf[["z", "y", "x"]].to_numpy(float)
    rng = np.random.default_rng(0)
    clicked = rng.choice(len(points), CLICKS, replace=False)
    roi, info = roi_mask(image, VOXEL, ROI)
    k = args.expected or len(points)
    tag = "" if args.expected is None else f"_k{k}"
    vol = PUVolume("cellfinder", normalise(image), points[clicked], VOXEL, roi=roi)
    model, summary, _ = train_pu([vol], PU, radius_um=RADIUS, expected_particles=k, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_model(
            root / "model", model, arch={"name": ARCH_NAME, "kwargs": model_kwargs(PU)},
            training={}, normalization={"percentiles": list(PU.percentiles)},
        )  # fmt: skip
        write_ome_zarr(root / "image.ome.zarr", image, VOXEL, chunks=(30, 128, 128))
        predict_volume(
            root / "model", root / "image.ome.zarr", root / "map.ome.zarr",
            params=PredictConfig(tile=(30, 128, 128), overlap=(4, 10, 10), batch_size=1),
            sample="cellfinder", device="cpu",
        )  # fmt: skip
        score = np.asarray(open_ome_zarr(root / "map.ome.zarr").array[...])
    merge = POST.merge_factor * 2 * RADIUS  # the workflow's auto rule (fit.py, session pu2)
    threshold = threshold_for_count([np.where(roi, score, 0)], k, RADIUS, [VOXEL], merge_um=merge)
    table, steps = postprocess(
        score, image, threshold=threshold, radius_um=RADIUS, voxel_size=VOXEL, params=POST,
        roi=roi, sample="cellfinder",
    )  # fmt: skip
    det = table[["z", "y", "x"]].to_numpy(float)
    agree = evaluate(det, points, VOXEL, GATE)
    result = {
        "expected_particles": k,
        "roi_fraction": info["roi_fraction"],
        "pi": summary["pi"],
        "pi_unlabelled": summary["pi_unlabelled"],
        "threshold": threshold,
        "detections": len(det),
        "cellfinder_points": len(points),
        "agreement_with_cellfinder": agree,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }
    (HERE / "results" / f"cellfinder{tag}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    _picture(image, points, clicked, det, tag)


def _picture(image, points, clicked, det, tag) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mip = image.max(axis=0)
    lo, hi = np.percentile(mip, [1, 99.7])
    fig, ax = plt.subplots(figsize=(10, 7.8))
    ax.imshow(mip, cmap="gray", vmin=lo, vmax=hi)
    ax.scatter(points[:, 2], points[:, 1], s=110, facecolors="none", edgecolors="cyan",
               lw=1, label="cellfinder output (56)")  # fmt: skip
    ax.scatter(points[clicked, 2], points[clicked, 1], s=110, c="yellow", marker="o", alpha=0.5,
               label="clicks used (10)")  # fmt: skip
    ax.scatter(det[:, 2], det[:, 1], s=40, c="red", marker="+", lw=1.2,
               label=f"PU+SWA detections ({len(det)})")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"cellfinder crop, max projection over z: PU picking from 10 clicks{tag}")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(HERE / "results" / f"cellfinder{tag}.png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
