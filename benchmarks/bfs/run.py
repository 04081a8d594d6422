"""BFS-Net ablation (Dehghani et al. Table 1 analogue) on CPU-sized data.

Rows per dataset: PRM pseudo-labels alone; S2 with L_class (λ_BF = 0); S2 with L_class + L_BF;
the fully supervised mask + distance segmenter trained on full masks (reference); a classical
baseline (Otsu + distance-transform watershed seeded by the clicks). Metrics from
:func:`fewlabel.metrics.segmentation.evaluate_segmentation`: fg_iou, seg, mucov (mean over
ground-truth objects), f1_50. See README.md for the command and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
WORK = HERE.parents[1] / "benchmarks" / "_work" / "bfs"
DATA = Path("/work/shared/data")
S1_ONLY = False  # --s1-only: train and predict S1, nothing else (warms the work folder)
sys.path.insert(0, str(HERE.parents[1] / "src"))

from fewlabel.config import (  # noqa: E402
    BfsCentresConfig,
    BfsPrmConfig,
    BfsS1Config,
    BfsS2Config,
    SegmentationPredictConfig,
    SegmenterTrainConfig,
)
from fewlabel.io import open_ome_zarr, write_ome_zarr  # noqa: E402
from fewlabel.metrics.segmentation import evaluate_segmentation  # noqa: E402
from fewlabel.segmentation.bfs.centres import make_centre_map  # noqa: E402
from fewlabel.segmentation.bfs.instances import assign_instances, merge_peaks  # noqa: E402
from fewlabel.segmentation.bfs.pseudo import pseudo_labels_of  # noqa: E402
from fewlabel.segmentation.bfs.s1 import s1_peaks, train_s1  # noqa: E402
from fewlabel.segmentation.bfs.s2 import train_s2  # noqa: E402
from fewlabel.segmentation.bfs.train import predict_probability  # noqa: E402

PAPER = [  # BBBC050, Table 1 of the paper (different data: for orientation only)
    ("paper BBBC050", "QCANet (full masks)", 0.746, 0.710, 0.721, None),
    ("paper BBBC050", "pseudo-labels", 0.506, 0.353, 0.399, None),
    ("paper BBBC050", "S2 + L_class", 0.603, 0.441, 0.506, None),
    ("paper BBBC050", "S2 + L_class + L_FL", 0.643, 0.530, 0.473, None),
]


# --------------------------------------------------------------------------- datasets
def _centroids(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels[labels > 0])
    return np.array(ndi.center_of_mass(labels > 0, labels, ids), dtype=float).reshape(-1, 3)


def datasets(names: list[str]) -> dict[str, dict]:
    """name -> {voxel, train: [(image, clicks, labels)], test: [(image, clicks, labels)], cfg}."""
    from fewlabel.synth.nuclei import nuclei_pair

    out = {}
    for name in names:
        if name == "qcanet":
            image = tifffile.imread(DATA / "qcanet_embryo_8cell/image.tif").astype(np.float32)
            labels = tifffile.imread(DATA / "qcanet_embryo_8cell/labels.tif").astype(np.uint32)
            clicks = pd.read_csv(DATA / "qcanet_embryo_8cell/points.csv")
            clicks.columns = [c.lower() for c in clicks.columns]
            vol = (image, clicks[["z", "y", "x"]].to_numpy(float), labels)
            out[name] = {
                "voxel": (1.744, 0.8, 0.8),  # z:y:x = 2.18:1:1
                "train": [vol],
                "test": [vol],  # transductive: the masks are only scored
                "transductive": True,
                "d_m": 8.0,
                "peak_um": 6.0,
                "crop": (16, 64, 64),
                "prm_crop": (32, 96, 96),
                "depth": 3,
                "guide": "gradient",
                "prior_bias": True,
            }
        elif name == "stardist":
            image = tifffile.imread(DATA / "stardist_nuclei/img3d.tif").astype(np.float32)
            labels = tifffile.imread(DATA / "stardist_nuclei/mask3d.tif").astype(np.uint32)
            vol = (image, _centroids(labels), labels)
            out[name] = {
                "voxel": (2.0, 1.0, 1.0),  # assumed (StarDist demo anisotropy 2:1:1)
                "train": [vol],
                "test": [vol],
                "transductive": True,
                "d_m": 3.0,
                "peak_um": 2.0,
                "crop": (16, 48, 48),
                "prm_crop": (16, 32, 32),
                "depth": 2,
                "guide": "gradient",
            }
        elif name in ("synth_fluo", "synth_lf"):
            vols = {}
            for split, seeds in (("train", (11, 12)), ("test", (21, 22))):
                vols[split] = []
                for seed in seeds:
                    s = nuclei_pair(
                        (24, 64, 64), n_nuclei=10, radius_range=(6, 9), anisotropy=2.0, seed=seed
                    )
                    img = s.fluorescence if name == "synth_fluo" else s.label_free
                    clicks = s.points[["z", "y", "x"]].to_numpy(float)
                    vols[split].append((img.astype(np.float32), clicks, s.labels.astype(np.uint32)))
            out[name] = {
                "voxel": (0.5, 0.25, 0.25),
                **vols,
                "d_m": 1.5,
                "peak_um": 1.0,
                "crop": (16, 48, 48),
                "prm_crop": (16, 48, 48),
                "depth": 2,
                "guide": "gradient" if name == "synth_fluo" else "log",
            }
    return out


# --------------------------------------------------------------------------- methods
def classical(image: np.ndarray, clicks: np.ndarray, voxel) -> np.ndarray:
    """Otsu foreground of the smoothed image, watershed of −EDT (µm) from the clicks."""
    smooth = ndi.gaussian_filter(image, [1.0 * voxel[2] / v for v in voxel])
    fg = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    dist = ndi.distance_transform_edt(fg, sampling=voxel)
    markers = np.zeros(image.shape, np.int32)
    idx = np.clip(np.rint(clicks).astype(int), 0, np.array(image.shape) - 1)
    markers[tuple(idx.T)] = np.arange(1, len(idx) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.uint32)


def score(gt, pred, voxel) -> dict:
    m = evaluate_segmentation(gt, pred, voxel_size=voxel)
    return {k: float(m[k]) for k in ("n_gt", "n_pred", "fg_iou", "seg", "mucov", "f1_50")}


def run_dataset(name: str, d: dict, epochs: int, steps: int) -> list[dict]:
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    voxel = d["voxel"]
    items = {}
    for split in ("train", "test"):
        items[split] = []
        for i, (img, clicks, lab) in enumerate(d[split]):
            stem = folder / f"{split}{i}"
            if not Path(f"{stem}_image.ome.zarr").exists():
                chunks = tuple(min(s, 64) for s in img.shape)
                write_ome_zarr(f"{stem}_image.ome.zarr", img, voxel, chunks=chunks)
                write_ome_zarr(f"{stem}_labels.ome.zarr", lab, voxel, chunks=chunks)
                pd.DataFrame(clicks, columns=["z", "y", "x"]).to_csv(f"{stem}.csv", index=False)
            items[split].append({"sample": f"{split}{i}", "stem": str(stem)})
    model_cfg = {"base_channels": 8, "depth": d["depth"]}
    train_cfg = {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "crop": d["crop"],
        "patience": 100,
    }
    bfs_cfg = {**train_cfg, "prior_bias": d.get("prior_bias", False)}
    predict = SegmentationPredictConfig(
        tile=tuple(min(t, s) for t, s in zip((32, 96, 96), d["train"][0][0].shape, strict=True)),
        overlap=(4, 16, 16),
        pad_to_tile=True,
    )
    times: dict[str, float] = {}
    # S1
    t0 = time.time()
    for it in items["train"]:
        s = it["stem"]
        if not Path(f"{s}_centres.ome.zarr").exists():
            make_centre_map(
                f"{s}_image.ome.zarr",
                f"{s}.csv",
                f"{s}_centres.ome.zarr",
                params=BfsCentresConfig(d_m=d["d_m"], k=2.0),
                sample=it["sample"],
            )
    s1_dir = folder / "s1"
    if not (s1_dir / "model.json").exists():
        train_s1(
            [
                {
                    "sample": i["sample"],
                    "image": f"{i['stem']}_image.ome.zarr",
                    "centres": f"{i['stem']}_centres.ome.zarr",
                }
                for i in items["train"]
            ],
            [],
            s1_dir,
            params=BfsS1Config(**bfs_cfg, model=model_cfg, peak_min_distance_um=d["peak_um"]),
        )
    for it in items["train"] + items["test"]:
        out = f"{it['stem']}_s1.ome.zarr"
        if not Path(out).exists():
            predict_probability(
                s1_dir,
                f"{it['stem']}_image.ome.zarr",
                out,
                expect="bfs_centres",
                params=predict,
                sample=it["sample"],
            )
    times["s1"] = time.time() - t0
    if S1_ONLY:
        return []
    # pseudo-labels (threshold tuned on each training volume's clicks)
    t0 = time.time()
    prm = BfsPrmConfig(crop=d["prm_crop"], batch_size=2)
    thresholds = []
    for it in items["train"]:
        s = it["stem"]
        if not Path(f"{s}_pseudo.ome.zarr").exists():
            clicks = pd.read_csv(f"{s}.csv").to_numpy(float)
            r = pseudo_labels_of(
                s1_dir,
                f"{s}_image.ome.zarr",
                f"{s}_s1.ome.zarr",
                params=prm,
                clicks=clicks,
                sample=it["sample"],
            )
            write_ome_zarr(
                f"{s}_pseudo.ome.zarr",
                r["labels"],
                voxel,
                chunks=(64, 64, 64),
                extra_attrs={"threshold": r["threshold"], "tuning": r["tuning"]},
            )
        thresholds.append(open_ome_zarr(f"{s}_pseudo.ome.zarr").attrs["fewlabel"]["threshold"])
    threshold = float(np.median(thresholds))
    times["prm"] = time.time() - t0
    rows = []
    gts = [d["test"][i][2] for i in range(len(items["test"]))]

    def add(method: str, preds: list[np.ndarray], secs: float) -> None:
        ms = [score(g, p, voxel) for g, p in zip(gts, preds, strict=True)]
        row = {"data": name, "method": method, **pd.DataFrame(ms).mean().to_dict()}
        rows.append({**row, "seconds": round(secs, 1)})
        print(rows[-1], flush=True)

    preds = []
    for index, it in enumerate(items["test"]):
        s = it["stem"]
        if d.get("transductive"):  # the scored volume is the training volume
            train_stem = items["train"][index]["stem"]
            preds.append(np.asarray(open_ome_zarr(f"{train_stem}_pseudo.ome.zarr").array[...]))
        else:
            r = pseudo_labels_of(
                s1_dir,
                f"{s}_image.ome.zarr",
                f"{s}_s1.ome.zarr",
                params=prm,
                threshold=threshold,
                sample=it["sample"],
            )
            preds.append(r["labels"])
    add("pseudo-labels (PRM)", preds, times["s1"] + times["prm"])
    # S2 ablation
    for label, lam in (("S2 + L_class", 0.0), ("S2 + L_class + L_BF", 1.0)):
        t0 = time.time()
        s2_dir = folder / f"s2_lambda{lam:g}"
        if not (s2_dir / "model.json").exists():
            train_s2(
                [
                    {
                        "sample": i["sample"],
                        "image": f"{i['stem']}_image.ome.zarr",
                        "pseudo": f"{i['stem']}_pseudo.ome.zarr",
                    }
                    for i in items["train"]
                ],
                [],
                s2_dir,
                params=BfsS2Config(**bfs_cfg, model=model_cfg, lambda_bf=lam, guide=d["guide"]),
            )
        preds = []
        for it in items["test"]:
            s = it["stem"]
            mask = f"{s}_s2_lambda{lam:g}.ome.zarr"
            if not Path(mask).exists():
                predict_probability(
                    s2_dir,
                    f"{s}_image.ome.zarr",
                    mask,
                    expect="bfs_segmenter",
                    params=predict,
                    sample=it["sample"],
                )
            lik = open_ome_zarr(f"{s}_s1.ome.zarr").array
            peaks = s1_peaks(lik, voxel, threshold=0.3, min_distance_um=d["peak_um"])
            merged = merge_peaks(peaks, d["peak_um"], voxel)
            out = np.zeros(lik.shape, np.uint32)
            thr = float(json.loads((s2_dir / "thresholds.json").read_text())["mask_threshold"])
            assign_instances(
                open_ome_zarr(mask).array,
                merged[["z", "y", "x"]].to_numpy(),
                out,
                voxel_size=voxel,
                mask_threshold=thr,
                merge_distance_um=d["peak_um"],
                halo=out.shape,
            )
            preds.append(out)
        add(label, preds, time.time() - t0 + times["s1"] + times["prm"])
    # fully supervised reference: mask + distance segmenter on the full masks
    t0 = time.time()
    preds = fully_supervised(folder, items, voxel, train_cfg, model_cfg, predict)
    add("distance segmenter (full masks)", preds, time.time() - t0)
    t0 = time.time()
    preds = [classical(img, clicks, voxel) for img, clicks, _ in d["test"]]
    add("Otsu + EDT watershed (clicks)", preds, time.time() - t0)
    return rows


def fully_supervised(folder, items, voxel, train_cfg, model_cfg, predict) -> list[np.ndarray]:
    from fewlabel.models.store import load_model
    from fewlabel.segmentation.distance.predict import predict_segmentation
    from fewlabel.segmentation.distance.segmenter import train_segmenter
    from fewlabel.segmentation.instances import split_instances

    model = folder / "distance"
    if not (model / "model.json").exists():
        train_segmenter(
            [
                {
                    "sample": i["sample"],
                    "image": f"{i['stem']}_image.ome.zarr",
                    "labels": f"{i['stem']}_labels.ome.zarr",
                }
                for i in items["train"]
            ],
            [],
            model,
            params=SegmenterTrainConfig(init="scratch", **train_cfg, model=model_cfg),
        )
    th = load_model(model, expect="segmenter").thresholds
    preds = []
    for it in items["test"]:
        out = Path(f"{it['stem']}_distance.ome.zarr")
        if not out.exists():
            predict_segmentation(
                model, f"{it['stem']}_image.ome.zarr", out, params=predict, sample=it["sample"]
            )
        pred = np.asarray(open_ome_zarr(out).array[...])
        preds.append(
            split_instances(
                pred[0], pred[1], mask_threshold=th["mask_threshold"], h=th.get("h") or 0.1
            )
        )
    return preds


def _cell(v: object, column: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if column in ("n_gt", "n_pred"):
        return f"{float(v):g}"
    if column == "seconds":
        return f"{float(v):.0f}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(rows: pd.DataFrame) -> str:
    cols = ["data", "method", "n_gt", "n_pred", "fg_iou", "seg", "mucov", "f1_50", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in rows.iterrows():
        cells = [_cell(r.get(c), c) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="synth_fluo,synth_lf,qcanet,stardist")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--prior-bias",
        action="store_true",
        help="force prior_bias on (rows and work folder named '<data>+prior')",
    )
    parser.add_argument("--work", default=None, help="work folder (default benchmarks/_work/bfs)")
    parser.add_argument(
        "--no-table", action="store_true", help="print the rows, do not update results.tsv/md"
    )
    parser.add_argument("--s1-only", action="store_true", help="stop after S1 (cache warm-up)")
    args = parser.parse_args()
    global WORK, S1_ONLY
    S1_ONLY = args.s1_only
    if args.work:
        WORK = Path(args.work).resolve()
    from fewlabel.logs import configure_logging

    configure_logging(WORK / "run.log")
    results = HERE / "results.tsv"
    old = pd.read_csv(results, sep="\t") if results.exists() else pd.DataFrame()
    names = args.data.split(",")
    rows = []
    for name, d in datasets(names).items():
        if args.prior_bias and not d.get("prior_bias"):
            d["prior_bias"] = True
            name = f"{name}+prior"
        rows += run_dataset(name, d, args.epochs, args.steps)
    names = sorted({r["data"] for r in rows})
    new = pd.DataFrame(rows)
    if args.no_table or S1_ONLY:
        print(markdown(new))
        return 0
    if not old.empty:
        old = old[~old["data"].isin(names + ["paper BBBC050"])]
    paper = pd.DataFrame(PAPER, columns=["data", "method", "fg_iou", "seg", "mucov", "f1_50"])
    table = pd.concat([new, old, paper], ignore_index=True)
    table.to_csv(results, sep="\t", index=False)
    (HERE / "results.md").write_text(markdown(table) + "\n")
    print(json.dumps({"written": str(results)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
