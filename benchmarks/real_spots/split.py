"""Protocol 2 of the real-spots benchmark: train on img1 + img2, validate on img2's box.

Training: img1_c1 (its 33 clicks) and img2_c0 outside its fully annotated box (16 clicks); the
box is held out of training (density methods: weight 0 there = ignored by the loss; PU: no
unlabelled window centre there, its clicks removed). Validation: img2's box, in place (the
methods see the whole img2): recall on the 19 clicks inside the box and precision inside the box
against its 64 box-truth spots (box_spots.csv, the same contrast rule as the test boxes), i.e.
run.py's test scoring applied to img2's box.
Every method's threshold maximises F1 on that validation set (gate 0.5 µm); the test volumes
img4-6 are only scored (run.py's scoring). Each run writes ``<workdir>/split/<name>.pkl``;
``--collect`` writes results_split.tsv, pr_curves_split.tsv, val_split.tsv and the pictures.

``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/real_spots/split.py --only "LoG" [--epochs 40]``
``python benchmarks/real_spots/split.py --collect``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import run
from folders import model_peaks
from run import GATE_UM, box_mask, pooled
from tables import recall_at_levels

EPOCHS = 40  # DM-DetNet3D epochs of the main rows (other --epochs: rows "..., N epochs")
NOISE = 1.0  # --noise F: every volume's noise s.d. multiplied by F (protocol 3; 1 = as recorded)
CLICK_2_SIGMA = [0.6, 0.3, 0.3]  # µm: 2 target σ per axis (the default neighbourhood is 4 σ)
SEED = 0  # --seed: DM-DetNet3D training seed (rows of another seed are named "..., seed N")


# --------------------------------------------------------------------------- protocol
def degrade(vol: data.Volume, factor: float) -> data.Volume:
    """``vol`` with its noise s.d. multiplied by ``factor``: Gaussian noise of s.d.
    sqrt(factor² - 1) σ added, σ = the volume's noise (1.4826 MAD of the top-hat residual, the
    ``background`` normalisation's unit); seeded by the volume's name. Clicks and box truth
    stay those of the recorded image."""
    import zlib

    from fewlabel.normalize import prepare, recipe

    if factor == 1.0:
        return vol
    _, low, high = prepare(vol.image, recipe("background", (), (1.0, 1.0, 1.0)), vol.voxel_size)
    rng = np.random.default_rng(zlib.crc32(vol.name.encode()))
    added = np.sqrt(factor**2 - 1.0) * (high - low)
    image = vol.image.astype(np.float32) + rng.normal(0.0, added, vol.image.shape).astype(
        np.float32
    )
    return data.Volume(vol.name, image, vol.clicks, vol.voxel_size)


def load_all() -> tuple[list[data.Volume], list[data.Volume]]:
    """(img1, img2) and the test volumes, degraded by :data:`NOISE`."""
    train = [degrade(data.load(s, c), NOISE) for s, c in data.TRAIN]
    return train, [degrade(data.load(s, c), NOISE) for s, c in data.TEST]


def volumes() -> dict:
    (img1, img2), tests = load_all()
    box = box_mask(img2)
    inside = box[tuple(np.round(img2.clicks).astype(int).T)]
    z0, y0, x0, z1, y1, x1 = data.boxes(img2.name)[0]
    truth = data.box_spots(img2.name)
    crop = data.Volume(
        "img2_c0_box",
        np.ascontiguousarray(img2.image[z0:z1, y0:y1, x0:x1]),
        truth - np.array([z0, y0, x0], float),
        img2.voxel_size,
    )
    return {
        "train": [(img1, img1.clicks, None), (img2, img2.clicks[~inside], box)],
        "val": img2,
        "val_crop": crop,  # the density trainer's own validation item (early stopping)
        "known": _known_box(img2, truth, box),  # the box's spot density (PU's k)
        "val_clicks": validation(img2),
        "tests": tests,
    }


def _known_box(vol, truth, box):
    from fewlabel.detection.density.partial import KnownVolume

    return KnownVolume(vol.name, truth, box, "regions", tuple(vol.voxel_size))


def validation(img2: data.Volume) -> data.Volume:
    """img2 with only the clicks inside its box: run.py's scoring then gives recall on those
    19 clicks and precision inside the box against its 64 box-truth spots, as on the test."""
    inside = box_mask(img2)[tuple(np.round(img2.clicks).astype(int).T)]
    return data.Volume(img2.name, img2.image, img2.clicks[inside], img2.voxel_size)


def tune(tables: list[pd.DataFrame], vols: list[data.Volume]) -> tuple[float, pd.DataFrame]:
    """Threshold maximising the pooled F1 of click recall and box precision on ``vols`` (ties:
    the median one), and the sweep (one row per candidate: 200 quantiles of the scores)."""
    scores = np.concatenate([t["score"].to_numpy() for t in tables])
    grid = np.unique(np.quantile(scores, np.linspace(0, 1, 200)))
    grid = np.nextafter(grid, -np.inf)  # score > t keeps the score t itself
    sweep = pd.DataFrame([pooled(tables, vols, float(t)) for t in grid])
    best = sweep.loc[sweep["f1"] == sweep["f1"].max(), "threshold"].to_numpy()
    return float(best[len(best) // 2]), sweep


def test_sweep(tables: list[pd.DataFrame], vols: list[data.Volume]) -> list[dict]:
    """The test's precision-recall sweep: 200 thresholds evenly between the lowest and the
    highest score (pr_curves*.tsv, paired.py)."""
    scores = np.concatenate([t["score"].to_numpy() for t in tables if len(t)])
    return [
        pooled(tables, vols, float(np.nextafter(t, 0)))
        for t in np.linspace(scores.min(), scores.max(), 200)
    ]


# --------------------------------------------------------------------------- methods
def log_method(p: dict, workdir: Path, mode: str = "background"):
    return run.log_peaks(mode), 0.0, f"detection.log defaults, normalisation {mode}"


def dm_method(p: dict, workdir: Path, epochs: int, **variant):
    """DM-DetNet3D trained on the training part, early stopping on the box crop."""
    from fewlabel.config import DensityTargetsConfig, PeaksConfig
    from fewlabel.detection.density.training import train_detector
    from fewlabel.io import open_ome_zarr

    full = variant.get("annotation") == "full"
    targets: dict = {}
    if full:  # the previous defaults: every unclicked voxel background, voxel units
        targets = {"annotation": "full", "sigma": [1.0, 1.5, 1.5], "sigma_unit": "voxel"}
    targets.update(variant.get("targets", {}))
    targets_cfg = DensityTargetsConfig.model_validate(targets)
    peaks_cfg = (
        PeaksConfig(min_distance=(1, 2, 2), min_distance_unit="voxel") if full else PeaksConfig()
    )
    params = run.dm_params(
        epochs, variant.get("mode", "percentile"), intensity_augment=variant.get("augment", {}),
        select=variant.get("select", "loss"),  # loss: the default before select existed
        pair_augment=variant.get("pair_augment", {}),
    )  # fmt: skip
    items = []
    for vol, clicks, ignore in p["train"]:
        v = data.Volume(vol.name, vol.image, clicks, vol.voxel_size)
        items.append(run._zarrs(v, workdir, targets_cfg, None))
        if ignore is not None:  # held out: weight 0 = ignored by the loss
            weight = open_ome_zarr(items[-1]["weight"], mode="r+").array
            z0, y0, x0, z1, y1, x1 = data.boxes(vol.name)[0]
            weight[z0:z1, y0:y1, x0:x1] = 0.0
    val = run._zarrs(p["val_crop"], workdir, targets_cfg, None if full else "full")
    # ensemble / mirror: the library's detection.train keys (model.json records them)
    params = params.model_copy(
        update={k: variant[k] for k in ("ensemble", "mirror") if k in variant}
    )
    init_from = None
    if variant.get("pretrain"):  # synthetic pretraining, then fine-tuning at a lower rate
        import pretrain

        pairs = variant["pretrain"] == "pairs"  # neighbourhood.py: the pair-rich set
        init_from = pretrain.pretrained(workdir.parent, params, epochs=60, seed=SEED, pairs=pairs)
        params = params.model_copy(update={"lr": 3e-4})
    train_detector(
        items, [val], workdir / "model", params=params, peaks=peaks_cfg, seed=SEED, threads=1,
        evaluation={"gate": GATE_UM, "gate_unit": "um"}, init_from=init_from,
    )  # fmt: skip
    own = json.loads((workdir / "model" / "thresholds.json").read_text())
    note = f"own threshold {own['detection_threshold']} ({own.get('tuned_with')} on the box crop)"
    return model_peaks([workdir / "model"], peaks_cfg), 0.0125, note


def synthetic_only(p: dict, workdir: Path):
    """The synthetic pretrained model alone (zero real clicks), as the fine-tuned row uses it."""
    import pretrain

    model = pretrain.pretrained(
        workdir.parent, run.dm_params(40, "percentile"), epochs=60, seed=SEED
    )
    return model_peaks([model]), 0.0125, f"pretrained only: {model}"


def ensemble_method(p: dict, workdir: Path, members: list[str]):
    """The mean density map of already trained rows' models (their folders under the same
    workdir), then the same peak finding as :func:`dm_method`."""
    folders = [workdir.parent / slug(m) / "model" for m in members]
    return model_peaks(folders), 0.0125, f"mean density of {members}"


def pu_method(
    p: dict, workdir: Path, epochs: int, mode: str | None = None, k_rule="density", intensity=None
):
    """k (detection.pu.expected_particles, one value per volume): ``density`` = the spot
    density of the validation box (64 spots / its voxels) x the mean training-volume voxels
    outside held-out regions; ``share`` = all training clicks / the clicked share of the box
    (19/64) / the number of volumes (protocol 1's rule; ignores that img2 is 4x img1)."""
    import pu_method as pu

    if k_rule == "img1":  # protocol 1's training (img1 only, k = 111) on protocol 2's data
        p = {**p, "train": p["train"][:1]}
    if k_rule in ("share", "img1"):
        clicks = sum(len(c) for _, c, _ in p["train"])
        k = round(clicks / pu.CLICKED_SHARE / len(p["train"]))
    else:
        density = len(p["known"].clicks) / float(p["known"].precision_mask.sum())
        free = [v.image.size - (0 if g is None else int(g.sum())) for v, _, g in p["train"]]
        k = round(density * float(np.mean(free)))
    items = [pu.item(vol, workdir, c, ignore) for vol, c, ignore in p["train"]]
    model, cfg, thr, note = pu.train(items, workdir, k, mode, intensity)
    return (lambda vol: pu.peaks(model, cfg, thr, vol, workdir)), min(thr, pu.LOWEST), note


DM_PARTIAL = "DM-DetNet3D partial-annotation"
METHODS = {
    "LoG": lambda p, w, e: log_method(p, w),
    "LoG [percentile]": lambda p, w, e: log_method(p, w, "percentile"),
    "DM-DetNet3D (as before: clicks = full annotation, voxel units)": lambda p, w, e: dm_method(
        p, w, e, annotation="full"
    ),
    DM_PARTIAL: lambda p, w, e: dm_method(p, w, e),
    f"{DM_PARTIAL} [background]": lambda p, w, e: dm_method(p, w, e, mode="background"),
    "PU+SWA": lambda p, w, e: pu_method(p, w, e),
    "PU+SWA [background]": lambda p, w, e: pu_method(p, w, e, "background"),
    "PU+SWA [percentile]": lambda p, w, e: pu_method(p, w, e, "percentile"),
    "PU+SWA, k = clicks / clicked share [background]": lambda p, w, e: pu_method(
        p, w, e, "background", "share"
    ),
    "PU+SWA, k = clicks / clicked share [percentile]": lambda p, w, e: pu_method(
        p, w, e, "percentile", "share"
    ),
    "PU+SWA, img1 only [background]": lambda p, w, e: pu_method(p, w, e, "background", "img1"),
    "PU+SWA, img1 only [percentile]": lambda p, w, e: pu_method(p, w, e, "percentile", "img1"),
}
KNOBS = {  # validation-only exploration of the partial loss (README "what would tell")
    "unlabelled_weight 5": {"unlabelled_weight": 5.0},
    "unlabelled_prior 0.05": {"unlabelled_prior": 0.05},
    "unlabelled_weight 0": {"unlabelled_weight": 0.0},
    "sigma voxel": {"sigma": [1.0, 1.5, 1.5], "sigma_unit": "voxel"},
}
for _knob, _targets in KNOBS.items():
    for _mode in ("percentile", "background"):
        METHODS[f"{DM_PARTIAL}, {_knob} [{_mode}]"] = lambda p, w, e, t=_targets, m=_mode: (
            dm_method(p, w, e, mode=m, targets=t)
        )


AUGMENT = {"probability": 0.85, "noise_probability": 0.5}  # Spotiflow's 3D defaults
PAIR_PASTE = {"probability": 0.5, "distance_um": [0.4, 0.8]}  # pairs.py: declared, not tuned
for _mode in ("percentile", "background"):
    METHODS[f"{DM_PARTIAL}, intensity augmentation [{_mode}]"] = lambda p, w, e, m=_mode: dm_method(
        p, w, e, mode=m, augment=AUGMENT
    )
for _mode in ("percentile", "background"):
    METHODS[f"{DM_PARTIAL}, select f1 [{_mode}]"] = lambda p, w, e, m=_mode: dm_method(
        p, w, e, mode=m, select="f1"
    )
METHODS[f"{DM_PARTIAL}, synthetic pretraining"] = lambda p, w, e: dm_method(p, w, e, pretrain=True)
METHODS["DM-DetNet3D synthetic only (no real clicks)"] = lambda p, w, e: synthetic_only(p, w)
METHODS[f"{DM_PARTIAL}, seeds 0 + 1 averaged"] = lambda p, w, e: ensemble_method(
    p, w, [DM_PARTIAL, f"{DM_PARTIAL}, seed 1"]
)
METHODS[f"{DM_PARTIAL}, ensemble 2 + mirroring"] = lambda p, w, e: dm_method(
    p, w, e, ensemble=2, mirror=True
)  # the library's detection.train.ensemble / mirror (tta.py scores it on the training grid)
METHODS[f"{DM_PARTIAL}, ensemble 2 + mirroring, click neighbourhood 2 sigma"] = lambda p, w, e: (
    dm_method(p, w, e, ensemble=2, mirror=True, targets={"click_radius_um": CLICK_2_SIGMA})
)  # neighbourhood.py: the known ring around a click stops short of a close neighbour
for _label, _kind in (
    ("synthetic pretraining", True),
    ("pair-rich synthetic pretraining", "pairs"),
):
    METHODS[f"{DM_PARTIAL}, ensemble 2 + mirroring, {_label}"] = lambda p, w, e, k=_kind: dm_method(
        p, w, e, ensemble=2, mirror=True, pretrain=k
    )  # neighbourhood.py's pair check
METHODS[f"{DM_PARTIAL}, ensemble 2 + mirroring, pair paste"] = lambda p, w, e: dm_method(
    p, w, e, ensemble=2, mirror=True, pair_augment=PAIR_PASTE
)  # pairs.py's declared check: close pairs pasted from the training crops' own spots
METHODS["PU+SWA, intensity augmentation [background]"] = lambda p, w, e: pu_method(
    p, w, e, "background", intensity=AUGMENT
)
METHODS["PU+SWA, img1 only, intensity augmentation [background]"] = lambda p, w, e: pu_method(
    p, w, e, "background", "img1", intensity=AUGMENT
)


def variant(name: str) -> bool:
    """Knob / k-rule / training-set variants (kept out of the pictures)."""
    prefixes = (f"{DM_PARTIAL}, ", "PU+SWA, ", "DM-DetNet3D synthetic")
    return name.startswith(prefixes) or ", seed " in name or " epochs" in name


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def run_method(name: str, p: dict, workdir: Path, epochs: int) -> None:
    start = time.monotonic()
    method = METHODS[name]
    if SEED:
        name = f"{name}, seed {SEED}"
    if epochs != EPOCHS and not name.startswith(("LoG", "PU")):
        name = f"{name}, {epochs} epochs"
    work = workdir / slug(name)
    work.mkdir(parents=True, exist_ok=True)
    peaks, _lowest, note = method(p, work, epochs)
    val_table = peaks(p["val"])
    threshold, sweep = tune([val_table], [p["val_clicks"]])
    tests = [peaks(v) for v in p["tests"]]
    out = {
        "method": name, "threshold": threshold, "note": note, "val_table": val_table,
        "val_sweep": sweep, "tests": tests, "seconds": round(time.monotonic() - start),
    }  # fmt: skip
    pd.to_pickle(out, workdir / "split" / f"{slug(name)}.pkl")
    print(name, pooled(tests, p["tests"], threshold), flush=True)


def collect(workdir: Path) -> None:
    """results_split.tsv (test at the validation threshold), pr_curves_split.tsv (test sweep),
    val_split.tsv (validation: chosen point, recall at precision, best F1), pictures."""
    (_, img2), tests = load_all()
    tag = "_split" if NOISE == 1.0 else f"_noise{NOISE:g}"
    rows, curves, vals, detections = [], [], [], {}
    order = {name: i for i, name in enumerate(METHODS)}
    runs = [pd.read_pickle(f) for f in sorted((workdir / "split").glob("*.pkl"))]
    val_vol = validation(img2)
    for r in sorted(runs, key=lambda r: order.get(r["method"], 99)):
        name, tables = r["method"], r["tests"]
        thr, sweep = tune([r["val_table"]], [val_vol])  # (re)tuned from the stored val peaks
        chosen = sweep.loc[sweep["threshold"] == thr].iloc[0]
        rows.append(
            {"method": name, **pooled(tables, tests, thr), "val_recall": chosen["recall"],
             "val_precision": chosen["precision"], "val_f1": chosen["f1"], "note": r["note"],
             "seconds": r["seconds"]}
        )  # fmt: skip
        val = {"method": name, "threshold": thr, **recall_at_levels(sweep)}
        val["best F1"] = round(float(sweep["f1"].max()), 3)
        vals.append(val)
        curves += [{"method": name, **row} for row in test_sweep(tables, tests)]
        if not variant(name) and "[percentile]" not in name:  # main rows only in the picture
            detections[name] = (tables, thr)
    rows_df, curves_df = pd.DataFrame(rows).round(4), pd.DataFrame(curves).round(4)
    rows_df.to_csv(data.HERE / f"results{tag}.tsv", sep="\t", index=False)
    curves_df.to_csv(data.HERE / f"pr_curves{tag}.tsv", sep="\t", index=False)
    pd.DataFrame(vals).round(4).to_csv(data.HERE / f"val{tag}.tsv", sep="\t", index=False)
    main_rows = rows_df[~rows_df["method"].map(variant)]
    main_curves = curves_df[curves_df["method"].isin(main_rows["method"])]
    run._pictures(detections, tests, main_curves, main_rows, tag=tag)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--workdir", default="/tmp/real_spots_work")
    parser.add_argument("--only", default="", help="'|'-separated exact method names")
    parser.add_argument("--collect", action="store_true", help="write the tables and pictures")
    parser.add_argument("--seed", type=int, default=0, help="DM-DetNet3D training seed")
    parser.add_argument("--noise", type=float, default=1.0, help="noise s.d. factor (>= 1)")
    args = parser.parse_args()
    if args.noise < 1.0:
        raise SystemExit(f"--noise {args.noise}: the noise can only be raised (a factor >= 1)")
    globals()["SEED"], globals()["NOISE"] = args.seed, args.noise
    workdir = Path(args.workdir)
    (workdir / "split").mkdir(parents=True, exist_ok=True)
    if args.collect:
        collect(workdir)
        return
    names = args.only.split("|") if args.only else list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    p = volumes()
    for name in names:
        run_method(name, p, workdir, args.epochs)


if __name__ == "__main__":
    main()
