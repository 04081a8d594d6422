"""ISL pretraining and few-label fine-tuning benchmark (seed Fig. 7 analogue), CPU-scaled.

(a) ISL PCC on held-out data: synthetic nuclei (label_free -> fluorescence) and, if present,
    the real phase z-stack -> DAPI pair (2D, planes as channels, rows 768-1023 held out).
(b) segmentation with N annotated training volumes, ISL-pretrained vs scratch, several seeds,
    on held-out synthetic volumes (fg IoU, AP@0.5:0.95, F1@0.5) + fig7.png.

    .venv/bin/python benchmarks/isl_finetune/run.py [--parts a,b] [--seeds 0,1,2] [--ns 1,2]

Work dir: benchmarks/_work/isl_finetune (gitignored). One torch thread, fixed seeds.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / "_work" / "isl_finetune"

SHAPE = (16, 64, 64)
SYN = dict(n_nuclei=10, radius_range=(6.0, 10.0), anisotropy=1.0)
VOXEL = (1.0, 1.0, 1.0)
ISL_SEEDS = [1000, 1001, 1002, 1003]  # unlabelled pairs for pretraining (no masks used)
ISL_VAL_SEED = 1100
TRAIN_SEEDS = list(range(2000, 2010))  # annotated pool, first N used
TEST_SEEDS = [3000, 3001, 3002]  # held out for evaluation
ISL_PARAMS = {
    "epochs": 25,
    "steps_per_epoch": 8,
    "batch_size": 2,
    "crop": [8, 48, 48],
    "patience": 25,
    "model": {"base_channels": 8, "depth": 2},
}
SEG_PARAMS = {
    "epochs": 25,
    "steps_per_epoch": 8,
    "batch_size": 2,
    "crop": [8, 48, 48],
    "patience": 25,
    "model": {"base_channels": 8, "depth": 2},
}
SPLIT_H = 0.2


def mean_sd(table, column: str) -> str:
    """``mean ± sd`` of a result column over seeds (sd 0 for one seed)."""
    values = table[column]
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def synth(seed: int, folder: Path) -> dict:
    from fewlabel.io import write_ome_zarr
    from fewlabel.synth import nuclei_pair

    out = {"sample": f"s{seed}"}
    paths = {k: folder / f"s{seed}_{k}.ome.zarr" for k in ("lf", "fl", "lab")}
    if not paths["lab"].exists():
        s = nuclei_pair(SHAPE, seed=seed, **SYN)
        write_ome_zarr(paths["lf"], s.label_free.astype(np.float32), VOXEL, chunks=SHAPE)
        write_ome_zarr(paths["fl"], s.fluorescence.astype(np.float32), VOXEL, chunks=SHAPE)
        write_ome_zarr(paths["lab"], s.labels.astype(np.uint32), VOXEL, chunks=SHAPE)
    out.update(image=str(paths["lf"]), target=str(paths["fl"]), labels=str(paths["lab"]))
    return out


def isl_item(s: dict) -> dict:
    return {k: s[k] for k in ("sample", "image", "target")}


def seg_item(s: dict) -> dict:
    return {k: s[k] for k in ("sample", "image", "labels")}


def read(path: str) -> np.ndarray:
    from fewlabel.io import open_ome_zarr

    return np.asarray(open_ome_zarr(path).array[...])


def pretrain_synthetic() -> tuple[Path, list[dict]]:
    """Pretrain ISL on unlabelled synthetic pairs; PCC on held-out test volumes."""
    from fewlabel.metrics.segmentation import pcc
    from fewlabel.segmentation.distance.isl import pretrain_isl
    from fewlabel.segmentation.distance.predict import predict_isl

    data = WORK / "data"
    data.mkdir(parents=True, exist_ok=True)
    model = WORK / "isl_synth"
    rows = []
    t0 = time.time()
    if not (model / "model.json").exists():
        pretrain_isl(
            [isl_item(synth(s, data)) for s in ISL_SEEDS],
            [isl_item(synth(ISL_VAL_SEED, data))],
            model,
            params=ISL_PARAMS,
            seed=0,
            threads=1,
        )
    train_s = time.time() - t0
    for s in TEST_SEEDS:
        item = synth(s, data)
        out = WORK / "isl_pred" / f"s{s}.ome.zarr"
        if not out.exists():
            predict_isl(model, item["image"], out, sample=item["sample"])
        pred, tgt, lf = read(str(out)), read(item["target"]), read(item["image"])
        rows.append(
            {
                "part": "a_synth",
                "sample": item["sample"],
                "pcc_isl": pcc(pred, tgt),
                "pcc_labelfree_baseline": pcc(lf, tgt),
                "train_s": round(train_s, 1),
            }
        )
    return model, rows


def pretrain_real() -> list[dict]:
    """2D ISL on the phase z-stack -> DAPI pair; train rows 0-767, test rows 768-1023 (2x down)."""
    import tifffile

    from fewlabel.io import write_ome_zarr
    from fewlabel.metrics.segmentation import pcc
    from fewlabel.segmentation.distance.isl import pretrain_isl
    from fewlabel.segmentation.distance.predict import predict_isl

    src = Path("/work/shared/data/isl_phase_to_fluo_neurons")
    if not (src / "phase_zstack.tif").exists():
        return [{"part": "a_real", "sample": "skipped (data folder absent)"}]
    phase = tifffile.imread(src / "phase_zstack.tif").astype(np.float32)
    dapi = tifffile.imread(src / "dapi_maxproj.tif").astype(np.float32)[None]

    def down(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean((2, 4))

    phase, dapi = down(phase), down(dapi)  # (13,512,320), (1,512,320)
    split = 384  # = row 768 at full resolution
    folder = WORK / "real"
    folder.mkdir(parents=True, exist_ok=True)
    items = {}
    for name, sl in (
        ("train", slice(0, split - 32)),
        ("val", slice(split - 32, split)),
        ("test", slice(split, None)),
    ):
        lf, fl = folder / f"{name}_phase.ome.zarr", folder / f"{name}_dapi.ome.zarr"
        if not fl.exists():
            write_ome_zarr(
                lf, np.ascontiguousarray(phase[:, sl]), (1.0, 0.65, 0.65), chunks=(13, 64, 64)
            )
            write_ome_zarr(
                fl, np.ascontiguousarray(dapi[:, sl]), (1.0, 0.65, 0.65), chunks=(1, 64, 64)
            )
        items[name] = {"sample": name, "image": str(lf), "target": str(fl)}
    model = WORK / "isl_real"
    t0 = time.time()
    params = {
        **ISL_PARAMS,
        "dims": 2,
        "epochs": 30,
        "batch_size": 4,
        "crop": [1, 96, 96],
        "model": {"base_channels": 8, "depth": 3},
    }
    if not (model / "model.json").exists():
        pretrain_isl([items["train"]], [items["val"]], model, params=params, seed=0, threads=1)
    train_s = time.time() - t0
    out = folder / "test_pred.ome.zarr"
    if not out.exists():
        predict_isl(model, items["test"]["image"], out, sample="test")
    pred, tgt = read(str(out)), read(items["test"]["target"])
    lf = read(items["test"]["image"])
    return [
        {
            "part": "a_real",
            "sample": "rows768-1023_2xdown",
            "pcc_isl": pcc(pred, tgt),
            "pcc_labelfree_baseline": max(abs(pcc(lf[k : k + 1], tgt)) for k in range(13)),
            "train_s": round(train_s, 1),
        }
    ]


def train_eval(
    n: int,
    init: str,
    seed: int,
    isl_model: Path | None,
    *,
    loss: str | None = None,
    loss_params: dict | None = None,
    tag: str = "",
) -> dict:
    """Train a segmenter on the first n annotated volumes; metrics averaged over TEST_SEEDS."""
    from fewlabel.metrics.segmentation import evaluate_segmentation
    from fewlabel.models.store import load_model
    from fewlabel.segmentation.distance.predict import predict_segmentation
    from fewlabel.segmentation.distance.segmenter import train_segmenter
    from fewlabel.segmentation.instances import split_instances

    data = WORK / "data"
    data.mkdir(parents=True, exist_ok=True)
    name = f"seg_{tag}{init}_n{n}_s{seed}"
    folder = WORK / "runs" / name
    params = {**SEG_PARAMS, "init": init}
    if loss is not None:
        params["loss"] = loss
        params["loss_params"] = loss_params or {}
    t0 = time.time()
    train = [seg_item(synth(s, data)) for s in TRAIN_SEEDS[:n]]
    if not (folder / "model.json").exists():
        train_segmenter(
            train,
            [],
            folder,
            params=params,
            init_from=str(isl_model) if init == "isl" else "",
            seed=seed,
            threads=1,
        )
    secs = time.time() - t0
    thr = load_model(folder, expect="segmenter").thresholds["mask_threshold"]
    metrics = []
    for s in TEST_SEEDS:
        item = synth(s, data)
        out = folder / f"pred_s{s}.ome.zarr"
        if not out.exists():
            predict_segmentation(folder, item["image"], out, sample=item["sample"])
        pred = read(str(out))
        labels = split_instances(pred[0], pred[1], mask_threshold=thr, h=SPLIT_H)
        metrics.append(evaluate_segmentation(read(item["labels"]), labels, voxel_size=VOXEL))
    m = pd.DataFrame(metrics).mean(numeric_only=True)
    return {
        "n_train": n,
        "init": init,
        "seed": seed,
        "loss": loss or "mask_distance",
        "fg_iou": m["fg_iou"],
        "ap_mean": m["ap_mean"],
        "ap_50": m["ap_50"],
        "f1_50": m["f1_50"],
        "mask_threshold": thr,
        "train_s": round(secs, 1),
    }


def qcanet(seed: int) -> dict:
    """Real 3D embryo (one annotated image): train on x < 61, evaluate on x >= 61, scratch only."""
    import tifffile

    from fewlabel.io import write_ome_zarr
    from fewlabel.metrics.segmentation import evaluate_segmentation
    from fewlabel.models.store import load_model
    from fewlabel.segmentation.distance.predict import predict_segmentation
    from fewlabel.segmentation.distance.segmenter import train_segmenter
    from fewlabel.segmentation.instances import split_instances

    src = Path("/work/shared/data/qcanet_embryo_8cell")
    image = tifffile.imread(src / "image.tif").astype(np.float32)
    labels = tifffile.imread(src / "labels.tif").astype(np.uint32)
    folder = WORK / "qcanet"
    folder.mkdir(parents=True, exist_ok=True)
    half = image.shape[2] // 2
    items = {}
    for name, sl in (("train", slice(0, half)), ("test", slice(half, None))):
        im, lab = folder / f"{name}_image.ome.zarr", folder / f"{name}_labels.ome.zarr"
        if not lab.exists():
            write_ome_zarr(im, np.ascontiguousarray(image[:, :, sl]), VOXEL, chunks=(51, 64, 64))
            write_ome_zarr(lab, np.ascontiguousarray(labels[:, :, sl]), VOXEL, chunks=(51, 64, 64))
        items[name] = {"sample": name, "image": str(im), "labels": str(lab)}
    model = folder / f"seg_scratch_s{seed}"
    t0 = time.time()
    if not (model / "model.json").exists():
        train_segmenter(
            [items["train"]],
            [],
            model,
            params={**SEG_PARAMS, "init": "scratch"},
            init_from="",
            seed=seed,
            threads=1,
        )
    secs = time.time() - t0
    thr = load_model(model, expect="segmenter").thresholds["mask_threshold"]
    out = model / "pred_test.ome.zarr"
    if not out.exists():
        predict_segmentation(model, items["test"]["image"], out, sample="test")
    pred = read(str(out))
    pred_labels = split_instances(pred[0], pred[1], mask_threshold=thr, h=SPLIT_H)
    m = evaluate_segmentation(read(items["test"]["labels"]), pred_labels, voxel_size=VOXEL)
    return {
        "data": "qcanet_embryo_8cell x>=61 (held out)",
        "init": "scratch",
        "seed": seed,
        "n_gt": m["n_gt"],
        "n_pred": m["n_pred"],
        "fg_iou": m["fg_iou"],
        "ap_mean": m["ap_mean"],
        "ap_50": m["ap_50"],
        "f1_50": m["f1_50"],
        "train_s": round(secs, 1),
    }


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for init, colour in (("isl", "tab:red"), ("scratch", "tab:blue")):
        g = table[table["init"] == init].groupby("n_train")["fg_iou"]
        ax.errorbar(
            g.mean().index,
            g.mean().values,
            yerr=g.std().values,
            marker="o",
            capsize=3,
            color=colour,
            label="ISL-pretrained" if init == "isl" else "scratch",
        )
    ax.set_xlabel("number of training images")
    ax.set_ylabel("foreground IoU (held-out)")
    ax.set_xticks(sorted(table["n_train"].unique()))
    ax.legend()
    ax.set_title("synthetic nuclei, mean ± s.d. over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize() -> str:
    """Mean ± s.d. tables (markdown) from results.tsv and results_isl_pcc.tsv."""
    lines = []
    if (HERE / "results_isl_pcc.tsv").exists():
        a = pd.read_csv(HERE / "results_isl_pcc.tsv", sep="\t")
        lines += [
            "### (a) ISL PCC on held-out data",
            "",
            "| data | sample | PCC(ISL pred, fluo) | baseline PCC(label-free, fluo) | train s |",
            "|---|---|---|---|---|",
        ]
        for r in a.itertuples():
            lines.append(
                f"| {r.part} | {r.sample} | {r.pcc_isl:.3f} | "
                f"{r.pcc_labelfree_baseline:.3f} | {r.train_s} |"
            )
        lines.append("")
    if (HERE / "results.tsv").exists():
        t = pd.read_csv(HERE / "results.tsv", sep="\t")
        lines += [
            "### (b) segmentation on 3 held-out synthetic volumes (mean ± s.d. over seeds)",
            "",
            "| N train | init | seeds | fg IoU | AP@0.5:0.95 | AP@0.5 | F1@0.5 | train s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (n, init), g in t.groupby(["n_train", "init"]):
            f = functools.partial(mean_sd, g)
            lines.append(
                f"| {n} | {init} | {len(g)} | {f('fg_iou')} | {f('ap_mean')} | "
                f"{f('ap_50')} | {f('f1_50')} | {g['train_s'].mean():.0f} |"
            )
        lines.append("")
        m = t.groupby(["n_train", "init"])["fg_iou"].mean()
        for n in sorted(t["n_train"].unique()):
            if (n, "isl") in m and (n, "scratch") in m:
                gain = 100 * (m[(n, "isl")] / m[(n, "scratch")] - 1)
                lines.append(f"Relative fg-IoU gain ISL vs scratch at N={n}: {gain:+.1f}%  ")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="a,b", help="a: ISL PCC, b: fine-tuning, s: only summarize")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ns", default="1,2")
    ap.add_argument("--inits", default="isl,scratch")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    t0 = time.time()
    if parts == ["s"]:
        print(summarize())
        return 0
    if parts == ["q"]:
        rows = []
        for seed in [int(x) for x in args.seeds.split(",")]:
            rows.append(qcanet(seed))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(HERE / "results_qcanet.tsv", sep="\t", index=False)
        return 0
    isl_model, rows_a = pretrain_synthetic()
    if "a" in parts:
        rows_a += pretrain_real() if "areal" not in os.environ.get("SKIP", "") else []
        pd.DataFrame(rows_a).to_csv(HERE / "results_isl_pcc.tsv", sep="\t", index=False)
        print(pd.DataFrame(rows_a).to_string(), flush=True)
    if "b" in parts:
        rows = []
        out = HERE / "results.tsv"
        for n in [int(x) for x in args.ns.split(",")]:
            for seed in [int(x) for x in args.seeds.split(",")]:
                for init in args.inits.split(","):
                    rows.append(train_eval(n, init, seed, isl_model))
                    print(rows[-1], flush=True)
                    table = pd.DataFrame(rows)
                    if out.exists():  # merge with runs of earlier invocations (other N)
                        table = pd.concat([pd.read_csv(out, sep="\t"), table]).drop_duplicates(
                            ["n_train", "init", "seed"], keep="last"
                        )
                    table.sort_values(["n_train", "seed", "init"]).to_csv(
                        out, sep="\t", index=False
                    )
        table = pd.read_csv(out, sep="\t")
        plot(table, HERE / "fig7.png")
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
