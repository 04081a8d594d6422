"""Detection benchmark on synthetic PTC-like spots: DM-DetNet3D vs the LoG baseline per SNR.

Seed Table 1 (Spilger et al., DM-DetNet3D on the Particle Tracking Challenge "virus" data,
10x512x512 volumes) is reproduced at reduced size on :func:`fewlabel.synth.spot_volume` data
(Poisson noise, PTC SNR definition ``(I_obj - I_bg)/sqrt(I_obj)``, uneven background + clutter).

Per configuration (SNR, density): train volumes (2), validation (1), held-out test volumes (3),
all with distinct fixed seeds. DM-DetNet3D is trained with :func:`train_detector` (threshold tuned
on the validation volume), the LoG threshold with :func:`tune_log_threshold` on train+val. Both
are evaluated on the test volumes with the same Hungarian gate (3 voxels) and the same peak rule
(min_distance (1, 2, 2), refine_radius 1). Metrics are pooled over the test volumes.

Usage::

    .venv/bin/python benchmarks/detection_ptc/run.py            # all rows, 2 processes
    .venv/bin/python benchmarks/detection_ptc/run.py --only 1:medium 2:medium

Work files go to ``benchmarks/_work/detection_ptc`` (gitignored); ``results.tsv`` and
``results.md`` are (re)written next to this script after every finished configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / "_work" / "detection_ptc"

SHAPE = (10, 128, 128)          # paper: 10 x 512 x 512
PSF = {"sigma_xy": 1.0, "sigma_z": 0.7}
TARGET_SIGMA = (1.0, 1.5, 1.5)  # density-target Gaussian (z, y, x) voxels
LOG_SIGMAS = [(0.7, 1.0, 1.0), (1.0, 1.5, 1.5)]  # LoG scales tried (PSF s.d., 1.5x); best on train+val
GATE = 3.0
MIN_DISTANCE = (1, 2, 2)
REFINE = 1
PERCENTILES = (1.0, 99.8)
N_TRAIN, N_VAL, N_TEST = 2, 1, 3
SEED = 2024

TRAIN_PARAMS = {
    "epochs": 15, "steps_per_epoch": 8, "batch_size": 4, "crop": [8, 48, 48],
    "lr": 2e-3, "patience": 15, "point_fraction": 0.5,
    "model": {"base_channels": 16, "depth": 2},
    "min_distance": list(MIN_DISTANCE), "refine_radius": REFINE, "gate": GATE,
    "percentiles": list(PERCENTILES),
}
PREDICT_PARAMS = {"tile": [16, 128, 128], "overlap": [4, 16, 16], "batch_size": 1}

PAPER = {1: (0.623, 0.376), 2: (0.973, 0.891), 4: (0.994, 0.993), 7: (0.995, 0.994)}
DEFAULT_ROWS = ["1:medium", "2:medium", "4:medium", "7:medium", "2:low", "2:high"]

log = logging.getLogger("bench.detection_ptc")


def _volume_seed(snr: float, density: str, split: str, k: int) -> int:
    from fewlabel.synth import derive_seed

    return derive_seed(SEED, f"snr{snr:g}", density, split, str(k))


def _make_data(root: Path, snr: float, density: str) -> dict[str, list[dict[str, str]]]:
    """Generate and write the volumes, points and density targets of one configuration."""
    import numpy as np

    from fewlabel.io import write_ome_zarr, write_points_csv
    from fewlabel.labels import make_density_targets
    from fewlabel.synth import spot_volume

    splits: dict[str, list[dict[str, str]]] = {}
    for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        items = []
        for k in range(n):
            name = f"{split}{k}"
            paths = {k2: str(root / "data" / f"{name}_{k2}.ome.zarr")
                     for k2 in ("image", "target", "weight")}
            paths["points"] = str(root / "data" / f"{name}.csv")
            if not Path(paths["weight"]).exists():
                vol = spot_volume(SHAPE, snr=snr, density=density, clutter=True,
                                  seed=_volume_seed(snr, density, split, k), **PSF)
                write_ome_zarr(paths["image"], vol.image.astype(np.float32), (1.0, 1.0, 1.0),
                               chunks=(10, 64, 64))
                write_points_csv(vol.points[["z", "y", "x"]], paths["points"])
                make_density_targets(paths["image"], paths["points"], paths["target"],
                                     paths["weight"], sigma=TARGET_SIGMA, sample=name)
            items.append({"sample": name, **paths})
        splits[split] = items
    return splits


def _pool(results: list) -> dict[str, float]:
    """Pool per-volume match results: tp/fp/fn summed, RMSE over all matched pairs."""
    import numpy as np

    from fewlabel.metrics.detection import prf

    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    p, r, f1 = prf(tp, fp, fn)
    d = np.concatenate([res.pairs[:, 2] for res in results if len(res.pairs)]) \
        if any(len(res.pairs) for res in results) else np.zeros(0)
    rmse = float(np.sqrt(np.mean(d ** 2))) if len(d) else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "rmse": rmse, "tp": tp, "fp": fp, "fn": fn}


def run_config(snr: float, density: str, epochs: int | None = None) -> dict:
    """Generate data, train + tune both methods, evaluate on the held-out test volumes.

    ``epochs`` overrides ``TRAIN_PARAMS['epochs']`` (same data; a longer-training variant row).
    """
    import numpy as np

    from fewlabel.baseline_log import detect_log, tune_log_threshold
    from fewlabel.io import open_ome_zarr, read_points_csv
    from fewlabel.metrics.detection import match_points
    from fewlabel.postprocess import extract_points
    from fewlabel.predict import PredictParams, predict_volume
    from fewlabel.train.detector import train_detector

    tag = f"snr{snr:g}_{density}" + (f"_e{epochs}" if epochs else "")
    root = WORK / tag
    params = dict(TRAIN_PARAMS, **({"epochs": epochs, "patience": epochs} if epochs else {}))
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, filename=str(root / "run.log"), filemode="a",
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t0 = time.time()
    data_root = WORK / f"snr{snr:g}_{density}"
    splits = _make_data(data_root, snr, density)
    t_data = time.time() - t0

    def load(item: dict) -> tuple:
        img = np.asarray(open_ome_zarr(item["image"]).array[...], np.float32)
        pts = read_points_csv(item["points"], allow_empty=True)[["z", "y", "x"]].to_numpy(float)
        return img, pts

    # ---- DM-DetNet3D
    t1 = time.time()
    model_dir = root / "dmdetnet3d"
    summary = train_detector(splits["train"], splits["val"], model_dir, params=params,
                             seed=SEED, threads=1)
    t_train = time.time() - t1
    threshold = json.loads((model_dir / "thresholds.json").read_text())["detection_threshold"]
    t2 = time.time()
    dm_results = []
    for item in splits["test"]:
        out = root / "pred" / f"{item['sample']}_density.ome.zarr"
        predict_volume(model_dir, item["image"], out, params=PredictParams.from_dict(
            PREDICT_PARAMS), sample=item["sample"], device="cpu")
        det = extract_points(open_ome_zarr(out).array, threshold=threshold,
                             min_distance=MIN_DISTANCE, refine_radius=REFINE)
        _, gt = load(item)
        dm_results.append(match_points(gt, det[["z", "y", "x"]].to_numpy(float),
                                       max_distance=GATE))
    t_pred = time.time() - t2

    # ---- LoG: threshold tuned on train + val
    t3 = time.time()
    tune = [load(i) for i in splits["train"] + splits["val"]]
    best_f1 = -1.0
    for sig in LOG_SIGMAS:
        thr, table = tune_log_threshold([v for v, _ in tune], [p for _, p in tune],
                                        sigma=sig, min_distance=MIN_DISTANCE, gate=GATE,
                                        refine_radius=REFINE, percentiles=PERCENTILES)
        f1 = float(table["f1"].max())
        if f1 > best_f1:
            best_f1, log_thr, log_sigma = f1, thr, sig
    log_results = []
    for item in splits["test"]:
        img, gt = load(item)
        det = detect_log(img, sigma=log_sigma, threshold=log_thr, min_distance=MIN_DISTANCE,
                         refine_radius=REFINE, percentiles=PERCENTILES)
        log_results.append(match_points(gt, det[["z", "y", "x"]].to_numpy(float),
                                        max_distance=GATE))
    t_log = time.time() - t3

    n_gt = int(sum(r.tp + r.fn for r in dm_results))
    result = {
        "snr": snr, "density": density, "epochs": params["epochs"],
        "steps": params["epochs"] * params["steps_per_epoch"], "n_test_volumes": N_TEST, "n_test_spots": n_gt,
        "dm": _pool(dm_results), "log": _pool(log_results),
        "dm_threshold": threshold, "dm_val_f1": summary["val_f1"],
        "dm_best_epoch": summary["best_epoch"], "dm_epochs_run": summary["epochs_run"],
        "log_threshold": float(log_thr), "log_sigma": list(log_sigma),
        "log_trainval_f1": best_f1,
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1),
                    "predict": round(t_pred, 1), "log": round(t_log, 1),
                    "total": round(time.time() - t0, 1)},
    }
    (root / "result.json").write_text(json.dumps(result, indent=2))
    return result


def write_tables(results: list[dict]) -> None:
    """Write results.tsv and results.md next to this script."""
    order = {r: i for i, r in enumerate(DEFAULT_ROWS)}
    results = sorted(results, key=lambda r: (order.get(f"{r['snr']:g}:{r['density']}", 99),
                                             r.get("epochs", 15)))
    cols = ["snr", "density", "train_steps", "n_test_spots", "dm_f1", "dm_rmse", "dm_precision", "dm_recall",
            "log_f1", "log_rmse", "log_precision", "log_recall", "paper_dmdetnet3d_f1",
            "paper_sef3d_f1", "dm_threshold", "log_threshold", "dm_epochs_run", "train_s"]
    lines = ["\t".join(cols)]
    md = [("| SNR | density | DM steps | DM-DetNet3D F1 (ours) | RMSE | LoG F1 (ours) | RMSE | "
           "DM-DetNet3D F1 (paper) | SEF3D F1 (paper) |"),
          "|---|---|---|---|---|---|---|---|---|"]
    md2 = [("| SNR | density | DM steps | test spots | DM P | DM R | DM TP/FP/FN | LoG P | "
            "LoG R | LoG TP/FP/FN | DM thr | LoG thr | DM epochs (best) | train s |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        snr = int(r["snr"]) if float(r["snr"]).is_integer() else r["snr"]
        paper = PAPER.get(snr) if r["density"] == "medium" else None
        steps = r.get("steps", 120)
        pd_, ps = (f"{paper[0]:.3f}", f"{paper[1]:.3f}") if paper else ("–", "–")
        dm, lg = r["dm"], r["log"]
        vals = [snr, r["density"], steps, r["n_test_spots"], f"{dm['f1']:.4f}", f"{dm['rmse']:.4f}",
                f"{dm['precision']:.4f}", f"{dm['recall']:.4f}", f"{lg['f1']:.4f}",
                f"{lg['rmse']:.4f}", f"{lg['precision']:.4f}", f"{lg['recall']:.4f}",
                pd_ if paper else "", ps if paper else "", f"{r['dm_threshold']:.3g}",
                f"{r['log_threshold']:.4g}", r["dm_epochs_run"], r["seconds"]["train"]]
        lines.append("\t".join(str(v) for v in vals))
        bold_dm = "**" if dm["f1"] > lg["f1"] else ""
        bold_lg = "**" if lg["f1"] > dm["f1"] else ""
        md.append(f"| {snr} | {r['density']} | {steps} | {bold_dm}{dm['f1']:.3f}{bold_dm} | "
                  f"{dm['rmse']:.3f} | {bold_lg}{lg['f1']:.3f}{bold_lg} | {lg['rmse']:.3f} | "
                  f"{pd_} | {ps} |")
        md2.append(f"| {snr} | {r['density']} | {steps} | {r['n_test_spots']} | {dm['precision']:.3f} | "
                   f"{dm['recall']:.3f} | {dm['tp']}/{dm['fp']}/{dm['fn']} | "
                   f"{lg['precision']:.3f} | {lg['recall']:.3f} | "
                   f"{lg['tp']}/{lg['fp']}/{lg['fn']} | {r['dm_threshold']:.3g} | "
                   f"{r['log_threshold']:.3g} | {r['dm_epochs_run']} ({r['dm_best_epoch']}) | "
                   f"{r['seconds']['train']:.0f} |")
    (HERE / "results.tsv").write_text("\n".join(lines) + "\n")
    header = (HERE / "results_header.md").read_text() if (HERE / "results_header.md").exists() \
        else "# Detection benchmark (synthetic PTC-like spots)\n"
    footer = (HERE / "results_notes.md").read_text() if (HERE / "results_notes.md").exists() \
        else ""
    text = (header + "\n## F1 and RMSE per SNR (pooled over the held-out test volumes)\n\n"
            + "\n".join(md) + "\n\nBold: the better of the two methods run here. RMSE in voxels "
            "over matched pairs (gate 3 voxels).\n\n## Per-run precision / recall\n\n"
            + "\n".join(md2) + "\n\n" + footer)
    (HERE / "results.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=DEFAULT_ROWS,
                    help="configurations SNR:density[:epochs] (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel configurations (processes)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.only:
        parts = spec.split(":")
        rows.append((float(parts[0]), parts[1], int(parts[2]) if len(parts) > 2 else None))

    def collect() -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(WORK.glob("*/result.json"))]

    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_config, snr, dens, ep): (snr, dens) for snr, dens, ep in rows}
        for fut in as_completed(futures):
            snr, dens = futures[fut]
            res = fut.result()
            log.info("SNR %g %s: DM F1 %.3f RMSE %.3f | LoG F1 %.3f RMSE %.3f (%.0f s)", snr,
                     dens, res["dm"]["f1"], res["dm"]["rmse"], res["log"]["f1"],
                     res["log"]["rmse"], res["seconds"]["total"])
            write_tables(collect())
    log.info("all done in %.0f s", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
