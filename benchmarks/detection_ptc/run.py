"""Detection benchmark on synthetic PTC-like spots: DM-DetNet3D vs the LoG baseline per SNR.

Seed Table 1 (Spilger et al., DM-DetNet3D on the Particle Tracking Challenge "virus" data,
10x512x512 volumes) is reproduced at reduced size on :func:`fewlabel.synth.spot_volume` data
(Poisson noise, PTC SNR definition ``(I_obj - I_bg)/sqrt(I_obj)``).

Two data variants: ``ptc`` (flat background of 10 photons + Poisson noise, as in the PTC
generator) and ``clutter`` (the same spots on a ±40 % uneven background with large bright
out-of-class blobs: a harder stress test). The PSF s.d. (z, y, x) = (0.85, 1.25, 1.25) voxels is
calibrated so that the classical baseline on ``ptc`` data scores like the paper's SEF3D on the
real PTC data (``--calibrate`` reruns that check, LoG only, and writes calibration.md).

Per configuration (SNR, density, variant): train volumes (3), validation (2), held-out test
volumes (3), all with distinct fixed seeds. DM-DetNet3D is trained with :func:`train_detector`
(threshold tuned on the validation volumes), the LoG threshold with :func:`tune_log_threshold` on
train+val. Both are evaluated on the test volumes with the same Hungarian gate (3 voxels) and the
same peak rule (min_distance (1, 2, 2), refine_radius 1). Metrics are pooled over the test volumes.

Usage::

    .venv/bin/python benchmarks/detection_ptc/run.py            # all rows, 2 processes
    .venv/bin/python benchmarks/detection_ptc/run.py --only 1:medium 2:medium:clutter
    .venv/bin/python benchmarks/detection_ptc/run.py --calibrate   # LoG-only PSF calibration

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

SHAPE = (10, 128, 128)  # paper: 10 x 512 x 512
PSF = {"sigma_xy": 1.25, "sigma_z": 0.85}  # calibrated on the LoG baseline (see --calibrate)
CALIBRATION_PSFS = [
    (0.7, 1.0),
    (0.85, 1.25),
    (1.0, 1.5),
    (1.0, 2.0),
]  # (sigma_z, sigma_xy) candidates
TARGET_SIGMA = (1.0, 1.5, 1.5)  # density-target Gaussian (z, y, x) voxels = PSF s.d.
LOG_SCALES = (1.0, 1.5)  # LoG scales tried, in PSF s.d. units; best on train+val
GATE = 3.0
MIN_DISTANCE = (1, 2, 2)
REFINE = 1
PERCENTILES = (1.0, 99.8)
N_TRAIN, N_VAL, N_TEST = 3, 2, 3
SEED = 2024
VARIANTS = ("ptc", "clutter")

TRAIN_PARAMS = {
    "epochs": 25,
    "steps_per_epoch": 12,
    "batch_size": 4,
    "crop": [8, 48, 48],
    "lr": 2e-3,
    "patience": 25,
    "point_fraction": 0.5,
    "model": {"base_channels": 16, "depth": 2},
    "gate": GATE,
    "percentiles": list(PERCENTILES),
}
PEAKS_PARAMS = {"min_distance": list(MIN_DISTANCE), "refine_radius": [REFINE] * 3}
PREDICT_PARAMS = {"tile": [10, 128, 128], "overlap": [4, 16, 16], "batch_size": 1}

PAPER = {1: (0.623, 0.376), 2: (0.973, 0.891), 4: (0.994, 0.993), 7: (0.995, 0.994)}
DEFAULT_ROWS = [
    "1:medium",
    "2:medium",
    "4:medium",
    "7:medium",
    "2:low",
    "2:high",
    "1:medium:clutter",
    "2:medium:clutter",
]

log = logging.getLogger("bench.detection_ptc")


def _volume_seed(snr: float, density: str, split: str, k: int) -> int:
    from fewlabel.synth import derive_seed

    return derive_seed(SEED, f"snr{snr:g}", density, split, str(k))


def _psf_sigma(psf: dict[str, float] = PSF) -> tuple[float, float, float]:
    return (psf["sigma_z"], psf["sigma_xy"], psf["sigma_xy"])


def _make_data(
    root: Path, snr: float, density: str, variant: str
) -> dict[str, list[dict[str, str]]]:
    """Generate and write the volumes, points and density targets of one configuration."""
    import numpy as np

    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density.targets import make_density_targets
    from fewlabel.io import write_ome_zarr, write_points_csv
    from fewlabel.synth import spot_volume

    splits: dict[str, list[dict[str, str]]] = {}
    for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        items = []
        for k in range(n):
            name = f"{split}{k}"
            paths = {
                k2: str(root / "data" / f"{name}_{k2}.ome.zarr")
                for k2 in ("image", "target", "weight")
            }
            paths["points"] = str(root / "data" / f"{name}.csv")
            if not Path(paths["weight"]).exists():
                vol = spot_volume(
                    SHAPE,
                    snr=snr,
                    density=density,
                    clutter=variant == "clutter",
                    seed=_volume_seed(snr, density, split, k),
                    **PSF,
                )
                write_ome_zarr(
                    paths["image"],
                    vol.image.astype(np.float32),
                    (1.0, 1.0, 1.0),
                    chunks=(10, 64, 64),
                )
                write_points_csv(vol.points[["z", "y", "x"]], paths["points"])
                make_density_targets(
                    paths["image"],
                    paths["points"],
                    paths["target"],
                    paths["weight"],
                    params=DensityTargetsConfig(sigma=TARGET_SIGMA),
                    sample=name,
                )
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
    d = (
        np.concatenate([res.pairs[:, 2] for res in results if len(res.pairs)])
        if any(len(res.pairs) for res in results)
        else np.zeros(0)
    )
    rmse = float(np.sqrt(np.mean(d**2))) if len(d) else float("nan")
    return {"precision": p, "recall": r, "f1": f1, "rmse": rmse, "tp": tp, "fp": fp, "fn": fn}


def _tune_log(
    tune: list[tuple], psf: dict[str, float] = PSF
) -> tuple[float, tuple[float, ...], float]:
    """LoG threshold and scale (PSF s.d. x LOG_SCALES) with the best pooled F1 on ``tune``."""
    from fewlabel.detection.log.tuning import tune_log_threshold

    best = (-1.0, 0.0, _psf_sigma(psf))
    for factor in LOG_SCALES:
        sig = tuple(round(s * factor, 3) for s in _psf_sigma(psf))
        thr, table = tune_log_threshold(
            [v for v, _ in tune],
            [p for _, p in tune],
            sigma=sig,
            min_distance=MIN_DISTANCE,
            gate=GATE,
            refine_radius=REFINE,
            percentiles=PERCENTILES,
        )
        f1 = float(table["f1"].max())
        if f1 > best[0]:
            best = (f1, float(thr), sig)
    return best[1], best[2], best[0]


def _log_on_test(test: list[tuple], threshold: float, sigma: tuple[float, ...]) -> list:
    from fewlabel.detection.log.baseline import detect_log
    from fewlabel.metrics.detection import match_points

    out = []
    for img, gt in test:
        det = detect_log(
            img,
            sigma=sigma,
            threshold=threshold,
            min_distance=MIN_DISTANCE,
            refine_radius=REFINE,
            percentiles=PERCENTILES,
        )
        out.append(match_points(gt, det[["z", "y", "x"]].to_numpy(float), max_distance=GATE))
    return out


def run_config(
    snr: float,
    density: str,
    variant: str = "ptc",
    epochs: int | None = None,
    train_seed: int = SEED,
) -> dict:
    """Generate data, train + tune both methods, evaluate on the held-out test volumes.

    ``epochs`` overrides ``TRAIN_PARAMS['epochs']`` (same data; a longer-training variant row);
    ``train_seed`` changes only DM-DetNet3D's initialisation and crops (same data).
    """
    import numpy as np

    from fewlabel.config import DetectorTrainConfig, PeaksConfig, PredictConfig
    from fewlabel.detection.density.training import train_detector
    from fewlabel.detection.peaks import extract_points
    from fewlabel.inference.engine import predict_volume
    from fewlabel.io import open_ome_zarr, read_points_csv
    from fewlabel.metrics.detection import match_points

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
    tag = (
        f"snr{snr:g}_{density}_{variant}"
        + (f"_e{epochs}" if epochs else "")
        + (f"_s{train_seed}" if train_seed != SEED else "")
    )
    root = WORK / tag
    params = dict(TRAIN_PARAMS, **({"epochs": epochs, "patience": epochs} if epochs else {}))
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        filename=str(root / "run.log"),
        filemode="a",
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    t0 = time.time()
    data_root = WORK / f"snr{snr:g}_{density}_{variant}"
    splits = _make_data(data_root, snr, density, variant)
    t_data = time.time() - t0

    def load(item: dict) -> tuple:
        img = np.asarray(open_ome_zarr(item["image"]).array[...], np.float32)
        pts = read_points_csv(item["points"], allow_empty=True)[["z", "y", "x"]].to_numpy(float)
        return img, pts

    # ---- DM-DetNet3D
    t1 = time.time()
    model_dir = root / "dmdetnet3d"
    summary = train_detector(
        splits["train"],
        splits["val"],
        model_dir,
        params=DetectorTrainConfig.model_validate(params),
        peaks=PeaksConfig.model_validate(PEAKS_PARAMS),
        seed=train_seed,
        threads=1,
    )
    t_train = time.time() - t1
    threshold = json.loads((model_dir / "thresholds.json").read_text())["detection_threshold"]
    t2 = time.time()
    dm_results = []
    for item in splits["test"]:
        out = root / "pred" / f"{item['sample']}_density.ome.zarr"
        predict_volume(
            model_dir,
            item["image"],
            out,
            params=PredictConfig.model_validate(PREDICT_PARAMS),
            sample=item["sample"],
            device="cpu",
        )
        det = extract_points(
            open_ome_zarr(out).array,
            threshold=threshold,
            min_distance=MIN_DISTANCE,
            refine_radius=REFINE,
        )
        _, gt = load(item)
        dm_results.append(match_points(gt, det[["z", "y", "x"]].to_numpy(float), max_distance=GATE))
    t_pred = time.time() - t2

    # ---- LoG: threshold and scale tuned on train + val
    t3 = time.time()
    log_thr, log_sigma, best_f1 = _tune_log([load(i) for i in splits["train"] + splits["val"]])
    log_results = _log_on_test([load(i) for i in splits["test"]], log_thr, log_sigma)
    t_log = time.time() - t3

    n_gt = int(sum(r.tp + r.fn for r in dm_results))
    result = {
        "snr": snr,
        "density": density,
        "variant": variant,
        "epochs": params["epochs"],
        "train_seed": train_seed,
        "psf_sigma": list(_psf_sigma()),
        "n_train": N_TRAIN,
        "n_val": N_VAL,
        "steps": params["epochs"] * params["steps_per_epoch"],
        "n_test_volumes": N_TEST,
        "n_test_spots": n_gt,
        "dm": _pool(dm_results),
        "log": _pool(log_results),
        "dm_threshold": threshold,
        "dm_val_f1": summary["val_f1"],
        "dm_best_epoch": summary["best_epoch"],
        "dm_epochs_run": summary["epochs_run"],
        "log_threshold": float(log_thr),
        "log_sigma": list(log_sigma),
        "log_trainval_f1": best_f1,
        "seconds": {
            "data": round(t_data, 1),
            "train": round(t_train, 1),
            "predict": round(t_pred, 1),
            "log": round(t_log, 1),
            "total": round(time.time() - t0, 1),
        },
    }
    (root / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _row_key(r: dict) -> str:
    return f"{r['snr']:g}:{r['density']}" + (
        "" if r.get("variant", "ptc") == "ptc" else f":{r['variant']}"
    )


def write_tables(results: list[dict]) -> None:
    """Write results.tsv and results.md next to this script."""
    order = {r: i for i, r in enumerate(DEFAULT_ROWS)}
    results = sorted(
        results,
        key=lambda r: (order.get(_row_key(r), 99), r.get("epochs", 25), r.get("train_seed", SEED)),
    )
    cols = [
        "snr",
        "density",
        "variant",
        "train_steps",
        "train_seed",
        "n_test_spots",
        "dm_f1",
        "dm_rmse",
        "dm_precision",
        "dm_recall",
        "log_f1",
        "log_rmse",
        "log_precision",
        "log_recall",
        "paper_dmdetnet3d_f1",
        "paper_sef3d_f1",
        "dm_threshold",
        "log_threshold",
        "dm_epochs_run",
        "train_s",
    ]
    lines = ["\t".join(cols)]
    md = [
        (
            "| SNR | density | data | DM steps | DM seed | DM-DetNet3D F1 (ours) | RMSE | "
            "LoG F1 (ours) | RMSE | DM-DetNet3D F1 (paper) | SEF3D F1 (paper) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    md2 = [
        (
            "| SNR | density | data | test spots | DM P | DM R | DM TP/FP/FN | LoG P | "
            "LoG R | LoG TP/FP/FN | DM thr | LoG thr (scale) | DM epochs (best) | train s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        snr = int(r["snr"]) if float(r["snr"]).is_integer() else r["snr"]
        variant = r.get("variant", "ptc")
        paper = PAPER.get(snr) if r["density"] == "medium" and variant == "ptc" else None
        steps = r.get("steps", 300)
        pd_, ps = (f"{paper[0]:.3f}", f"{paper[1]:.3f}") if paper else ("–", "–")
        dm, lg = r["dm"], r["log"]
        seed = r.get("train_seed", SEED)
        vals = [
            snr,
            r["density"],
            variant,
            steps,
            seed,
            r["n_test_spots"],
            f"{dm['f1']:.4f}",
            f"{dm['rmse']:.4f}",
            f"{dm['precision']:.4f}",
            f"{dm['recall']:.4f}",
            f"{lg['f1']:.4f}",
            f"{lg['rmse']:.4f}",
            f"{lg['precision']:.4f}",
            f"{lg['recall']:.4f}",
            pd_ if paper else "",
            ps if paper else "",
            f"{r['dm_threshold']:.3g}",
            f"{r['log_threshold']:.4g}",
            r["dm_epochs_run"],
            r["seconds"]["train"],
        ]
        lines.append("\t".join(str(v) for v in vals))
        bold_dm = "**" if dm["f1"] > lg["f1"] else ""
        bold_lg = "**" if lg["f1"] > dm["f1"] else ""
        md.append(
            f"| {snr} | {r['density']} | {variant} | {steps} | {seed} | "
            f"{bold_dm}{dm['f1']:.3f}{bold_dm} | {dm['rmse']:.3f} | "
            f"{bold_lg}{lg['f1']:.3f}{bold_lg} | {lg['rmse']:.3f} | {pd_} | {ps} |"
        )
        scale = "×".join(f"{v:g}" for v in r["log_sigma"])
        md2.append(
            f"| {snr} | {r['density']} | {variant} | {r['n_test_spots']} | "
            f"{dm['precision']:.3f} | {dm['recall']:.3f} | "
            f"{dm['tp']}/{dm['fp']}/{dm['fn']} | {lg['precision']:.3f} | "
            f"{lg['recall']:.3f} | {lg['tp']}/{lg['fp']}/{lg['fn']} | "
            f"{r['dm_threshold']:.3g} | {r['log_threshold']:.3g} ({scale}) | "
            f"{r['dm_epochs_run']} ({r['dm_best_epoch']}) | "
            f"{r['seconds']['train']:.0f} |"
        )
    (HERE / "results.tsv").write_text("\n".join(lines) + "\n")
    header = (
        (HERE / "results_header.md").read_text()
        if (HERE / "results_header.md").exists()
        else "# Detection benchmark (synthetic PTC-like spots)\n"
    )
    footer = (HERE / "results_notes.md").read_text() if (HERE / "results_notes.md").exists() else ""
    text = (
        header
        + "\n## F1 and RMSE per SNR (pooled over the held-out test volumes)\n\n"
        + "\n".join(md)
        + "\n\nBold: the better of the two methods run here. RMSE in voxels "
        "over matched pairs (gate 3 voxels).\n\n## Per-run precision / recall\n\n"
        + "\n".join(md2)
        + "\n\n"
        + footer
    )
    (HERE / "results.md").write_text(text)


def calibrate(
    snrs: tuple[float, ...] = (1.0, 2.0, 4.0, 7.0), n_tune: int = 3, n_test: int = 3
) -> list[dict]:
    """LoG-only check of the PSF size on ``ptc`` data: F1 per candidate PSF and SNR.

    For each candidate (sigma_z, sigma_xy): ``n_tune`` volumes tune the LoG threshold and scale,
    ``n_test`` other volumes are scored (seeds from ``derive_seed(SEED, 'calibration', ...)``).
    The PSF whose LoG F1 is closest to the paper's SEF3D row is the benchmark's ``PSF``.
    Writes calibration.tsv and calibration.md next to this script.
    """
    import numpy as np

    from fewlabel.metrics.detection import prf
    from fewlabel.synth import derive_seed, spot_volume

    rows = []
    for sz, sxy in CALIBRATION_PSFS:
        psf = {"sigma_xy": sxy, "sigma_z": sz}
        for snr in snrs:
            vols = []
            for k in range(n_tune + n_test):
                v = spot_volume(
                    SHAPE,
                    snr=snr,
                    density="medium",
                    clutter=False,
                    seed=derive_seed(SEED, "calibration", f"{snr:g}", str(k)),
                    **psf,
                )
                vols.append((v.image.astype(np.float32), v.points[["z", "y", "x"]].to_numpy(float)))
            thr, sig, _ = _tune_log(vols[:n_tune], psf)
            res = _log_on_test(vols[n_tune:], thr, sig)
            tp, fp, fn = (sum(getattr(r, a) for r in res) for a in ("tp", "fp", "fn"))
            f1 = prf(tp, fp, fn)[2]
            rows.append(
                {
                    "sigma_z": sz,
                    "sigma_xy": sxy,
                    "snr": snr,
                    "log_f1": f1,
                    "paper_sef3d_f1": PAPER[int(snr)][1],
                }
            )
            log.info(
                "calibration PSF (%g, %g, %g) SNR %g: LoG F1 %.3f (SEF3D %.3f)",
                sz,
                sxy,
                sxy,
                snr,
                f1,
                PAPER[int(snr)][1],
            )
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(HERE / "calibration.tsv", sep="\t", index=False, float_format="%.4f")
    wide = table.pivot_table(index=["sigma_z", "sigma_xy"], columns="snr", values="log_f1")
    table["abs_diff"] = (table["log_f1"] - table["paper_sef3d_f1"]).abs()
    mad = table.groupby(["sigma_z", "sigma_xy"])["abs_diff"].mean()
    md = [
        "# PSF calibration (LoG baseline only, `ptc` data, medium density)",
        "",
        (
            f"`run.py --calibrate`: {n_tune} volumes tune the LoG, {n_test} others are scored; "
            "F1 pooled over them. The paper's SEF3D on the real PTC virus data is the target."
        ),
        "",
        "Chosen: the PSF with the smallest mean |F1 − SEF3D F1| over the SNRs (last column).",
        "",
        "| PSF s.d. (z, y, x) voxels | "
        + " | ".join(f"SNR {s:g}" for s in snrs)
        + " | mean abs. difference |",
        "|---|" + "---|" * (len(snrs) + 1),
    ]
    best = mad.idxmin()
    for (sz, sxy), row in wide.iterrows():
        mark = " **(chosen)**" if (sz, sxy) == best else ""
        md.append(
            f"| ({sz:g}, {sxy:g}, {sxy:g}){mark} | "
            + " | ".join(f"{row[s]:.3f}" for s in snrs)
            + f" | {mad[(sz, sxy)]:.3f} |"
        )
    md.append(
        "| paper SEF3D (real PTC) | "
        + " | ".join(f"{PAPER[int(s)][1]:.3f}" for s in snrs)
        + " | – |"
    )
    (HERE / "calibration.md").write_text("\n".join(md) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--only",
        nargs="*",
        default=DEFAULT_ROWS,
        help="configurations SNR:density[:variant][:epochs], variant ptc|clutter "
        "(default: %(default)s)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="parallel configurations (processes)")
    ap.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[SEED],
        help="DM-DetNet3D training seeds; each row runs once per seed (same data)",
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="only run the LoG-only PSF calibration (calibration.md)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.calibrate:
        calibrate()
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.only:
        parts = spec.split(":")
        variant = "ptc"
        epochs = None
        for extra in parts[2:]:
            if extra in VARIANTS:
                variant = extra
            else:
                epochs = int(extra)
        rows.append((float(parts[0]), parts[1], variant, epochs))

    def collect() -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(WORK.glob("*/result.json"))]

    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            pool.submit(run_config, snr, dens, var, ep, seed): (snr, dens, var)
            for snr, dens, var, ep in rows
            for seed in args.train_seeds
        }
        for fut in as_completed(futures):
            snr, dens, var = futures[fut]
            res = fut.result()
            log.info(
                "SNR %g %s %s: DM F1 %.3f RMSE %.3f | LoG F1 %.3f RMSE %.3f (%.0f s)",
                snr,
                dens,
                var,
                res["dm"]["f1"],
                res["dm"]["rmse"],
                res["log"]["f1"],
                res["log"]["rmse"],
                res["seconds"]["total"],
            )
            write_tables(collect())
    log.info("all done in %.0f s", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
