"""Where does BFS-Net lose? Scores each stage of a finished ``run.py`` work folder against the
ground truth (diagnosis only: nothing here feeds back into training or tuning).

Per dataset: S1 peaks vs clicks; pseudo-labels (foreground IoU, SEG, clicks inside their own
mask, size ratio); S2 foreground IoU at its (click-free) threshold; instances from S2's mask;
instances from the GT foreground seeded by the merged S1 peaks (assignment alone); Otsu.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))

from run import classical, datasets, score  # noqa: E402

from fewlabel.io import open_ome_zarr  # noqa: E402
from fewlabel.segmentation.bfs.instances import assign_instances, merge_peaks  # noqa: E402
from fewlabel.segmentation.bfs.s1 import s1_peaks  # noqa: E402


def fg_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def instances_in(mask: np.ndarray, centres: np.ndarray, voxel, merge_um: float) -> np.ndarray:
    out = np.zeros(mask.shape, np.uint32)
    assign_instances(
        mask.astype(np.float32),
        centres,
        out,
        voxel_size=voxel,
        mask_threshold=0.5,
        merge_distance_um=merge_um,
        halo=out.shape,
    )
    return out


def diagnose(name: str, d: dict, folder: Path) -> dict:
    voxel = d["voxel"]
    img, clicks, gt = d["train"][0]
    stem = folder / "train0"
    out: dict = {"data": name, "gt_fg_fraction": float((gt > 0).mean())}
    lik = open_ome_zarr(f"{stem}_s1.ome.zarr").array
    peaks = s1_peaks(lik, voxel, threshold=0.3, min_distance_um=d["peak_um"])
    merged = merge_peaks(peaks, d["peak_um"], voxel)
    centres = merged[["z", "y", "x"]].to_numpy()
    idx = np.clip(np.rint(centres).astype(int), 0, np.array(gt.shape) - 1)
    hit = gt[tuple(idx.T)]
    out["s1"] = {
        "n_clicks": len(clicks),
        "n_peaks": len(peaks),
        "n_merged": len(merged),
        "cells_with_one_peak": int(
            (np.bincount(hit[hit > 0], minlength=gt.max() + 1)[1:] == 1).sum()
        ),
        "peaks_in_background": int((hit == 0).sum()),
    }
    pseudo_path = Path(f"{stem}_pseudo.ome.zarr")
    if pseudo_path.exists():
        pseudo = np.asarray(open_ome_zarr(pseudo_path).array[...])
        ci = np.clip(np.rint(clicks).astype(int), 0, np.array(gt.shape) - 1)
        gt_sizes = np.bincount(gt.ravel())[1:]
        ps_sizes = np.bincount(pseudo.ravel())[1:]
        out["pseudo"] = {
            "fg_iou": fg_iou(pseudo, gt),
            "fg_fraction": float((pseudo > 0).mean()),
            "precision": float(((pseudo > 0) & (gt > 0)).sum() / max((pseudo > 0).sum(), 1)),
            "recall": float(((pseudo > 0) & (gt > 0)).sum() / max((gt > 0).sum(), 1)),
            "clicks_in_a_mask": int((pseudo[tuple(ci.T)] > 0).sum()),
            "median_size_ratio": float(
                np.median(ps_sizes[ps_sizes > 0]) / np.median(gt_sizes[gt_sizes > 0])
            ),
            **{f"score_{k}": v for k, v in score(gt, pseudo, voxel).items()},
        }
    for lam in ("0", "1"):
        prob_path = folder / f"test0_s2_lambda{lam}.ome.zarr"  # transductive: the same volume
        if not prob_path.exists() or not (folder / f"s2_lambda{lam}" / "thresholds.json").exists():
            continue
        prob = np.asarray(open_ome_zarr(prob_path).array[...])
        thr = float(
            json.loads((folder / f"s2_lambda{lam}" / "thresholds.json").read_text())[
                "mask_threshold"
            ]
        )
        fg = prob > thr
        grid = np.linspace(0.05, 0.95, 19)
        ious = [fg_iou(prob > t, gt) for t in grid]
        out[f"s2_lambda{lam}"] = {
            "threshold": thr,
            "fg_iou": fg_iou(fg, gt),
            "fg_fraction": float(fg.mean()),
            "oracle_threshold": float(grid[int(np.argmax(ious))]),
            "oracle_fg_iou": float(max(ious)),
            "inst_s1": score(gt, instances_in(fg, centres, voxel, d["peak_um"]), voxel),
            "inst_clicks": score(gt, instances_in(fg, clicks, voxel, d["peak_um"]), voxel),
        }
    out["gt_fg_with_s1_peaks"] = score(
        gt, instances_in(gt > 0, centres, voxel, d["peak_um"]), voxel
    )
    otsu = classical(img, clicks, voxel)
    out["otsu"] = {
        "fg_iou": fg_iou(otsu, gt),
        "fg_fraction": float((otsu > 0).mean()),
        **score(gt, otsu, voxel),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="qcanet,stardist")
    parser.add_argument("--work", required=True)
    parser.add_argument("--suffix", default="", help="work sub-folder suffix, e.g. +prior")
    args = parser.parse_args()
    for name, d in datasets(args.data.split(",")).items():
        folder = Path(args.work) / (name + (args.suffix if not d.get("prior_bias") else ""))
        print(json.dumps(diagnose(name, d, folder), default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
