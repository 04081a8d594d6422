"""Experiment 1b: when does PU beat PN? Density / clustering axis x threshold axis, with the
paper's own baseline (FS) next to PN.

Scenarios (synthetic centrioles, train / val / test volumes 24 x 160 x 160, seeds 101 / 303 /
202): ``base`` (80 particles, uniform, as centrioles.py), ``dense`` (200, uniform),
``clustered`` (300 asked, 4 clusters of sigma 0.8 µm, centres >= 0.5 µm apart: touching
particles), ``clustered_big`` (``clustered`` with a 4x training volume, 24 x 320 x 320 and 1200
particles, for N = 500; validation / test volumes as ``clustered``).

Configurations (same network and schedule as centrioles.py):

* ``PU+SWA``, ``PU`` (no averaging): GE-binomial, clicks positive, ROI windows unlabelled;
* ``PU+EMA``: GE-binomial with the authors' EMA instead of the equal SWA average;
* ``PN`` (+SWA) and ``PN-noSWA``: BCE, every unlabelled window a negative (the issue's
  baseline), with and without averaging;
* ``FS`` (+SWA): the paper authors' "fully supervised" baseline (SP-Fluo
  ``prepare_fs_data``): N windows on the clicked particles and N windows at random positions
  at least one particle diameter (0.75 µm) from *every* particle centre (true negatives, from
  the ground truth), balanced batches, BCE; it never sees the unlabelled volume.

Each trained model is scored on the training, validation and test volumes once; the
threshold variants are applied afterwards (full post-processing chain each):
``auto`` (k detections after the averaging step, the fixed rule), ``auto_nms`` (k NMS
candidates, the rule before this change), ``k/2`` and ``1.5k`` (count rule with k
misspecified by -50 % / +50 %), ``0.5`` (fixed score threshold). Experiment 2:
``ablation_auto_test`` holds TP / FP / FN on the test volume after each post-processing step
(``ABLATION``) at the ``auto`` threshold. ``--radius-um``: the particle
radius r (positives = window centres within r of a click, NMS radius, averaging distance
2r); a larger r raises π.

Usage (CPU, 1 thread; rows appended to results/crowding.jsonl, reruns skip done runs)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pu_picking/crowding.py \
        --scenario base --configs PU+SWA,PU,PN,FS --n 10 --runs 5
    .venv/bin/python benchmarks/pu_picking/tables.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from centrioles import BASE, RADIUS_UM, ROI, SHAPE, SYNTH, VOXEL
from common import HERE, dense, evaluate, pu_params, volume_record

from fewlabel.config.pu import PUConfig, PUPostprocessConfig
from fewlabel.detection.pu.postprocess import postprocess, threshold_for_count
from fewlabel.detection.pu.sampling import PUVolume
from fewlabel.detection.pu.training import train_pu
from fewlabel.synth.centrioles import centriole_volume

GATE_UM = 0.2
NEG_DISTANCE_UM = 0.75  # FS negatives: at least one particle diameter from every centre
SCENARIOS: dict[str, dict[str, Any]] = {
    "base": {},
    "dense": {"n_particles": 200},
    "clustered": {
        "n_particles": 300,
        "n_clusters": 4,
        "cluster_sigma_um": 0.8,
        "min_separation_um": 0.5,
    },
}
# the clustered scenario with a 4x larger training volume (same density: 4x the particles,
# clusters, specks and blobs) so that N = 500 leaves unlabelled particles; val / test volumes
# are the clustered ones (same seeds), so its rows compare with the clustered rows
SCENARIOS["clustered_big"] = {
    **SCENARIOS["clustered"],
    "train": {
        "shape": (24, 320, 320),
        "n_particles": 1200,
        "n_clusters": 16,
        "n_specks": 240,
        "n_blobs": 64,
    },
}
CONFIGS: dict[str, dict[str, Any]] = {
    "PU+SWA": {"loss": "ge_binomial", "averaging": {"mode": "swa"}},
    "PU": {"loss": "ge_binomial", "averaging": {"mode": "none"}},
    "PN": {"loss": "pn", "averaging": {"mode": "swa"}},
    "PN-noSWA": {"loss": "pn", "averaging": {"mode": "none"}},
    "PU+EMA": {"loss": "ge_binomial", "averaging": {"mode": "ema"}},
    "FS": {"loss": "pn", "averaging": {"mode": "swa"}, "positive_share": 0.5},
}
SEEDS = {"train": 101, "val": 303, "test": 202}
# experiment 2 (post-processing ablation): the chain switched on step by step, auto threshold,
# test volume; the last stage is the full chain
ABLATION: dict[str, dict[str, bool]] = {
    "nms": {"average": False, "recentre": False, "intensity_filter": False, "roi_filter": False},
    "+average": {"recentre": False, "intensity_filter": False, "roi_filter": False},
    "+recentre": {"intensity_filter": False, "roi_filter": False},
    "+intensity": {"roi_filter": False},
    "+roi (full)": {},
}


@dataclass
class FixedNegatives(PUVolume):
    """A training volume whose 'unlabelled' windows are drawn from fixed negative centres
    (the FS baseline); everything else as :class:`PUVolume`."""

    negatives: np.ndarray | None = None

    def unlabelled_centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        assert self.negatives is not None
        return self.negatives[rng.integers(len(self.negatives), size=n)]


def params_for(name: str, overrides: dict[str, Any] | None = None) -> PUConfig:
    return pu_params(BASE, {**CONFIGS[name], **(overrides or {})})


def volume(scenario: str, seed: int, split: str = "test") -> dict[str, Any]:
    spec = {**SYNTH, **{k: v for k, v in SCENARIOS[scenario].items() if k != "train"}}
    shape = SHAPE
    if split == "train" and "train" in SCENARIOS[scenario]:
        extra = dict(SCENARIOS[scenario]["train"])
        shape = extra.pop("shape")
        spec.update(extra)
    return volume_record(centriole_volume(shape, seed=seed, **spec), VOXEL, ROI)


def true_negatives(vol: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random voxels at least NEG_DISTANCE_UM from every particle centre."""
    shape = np.asarray(vol["image"].shape)
    um = vol["points"] * np.asarray(VOXEL)
    out: list[np.ndarray] = []
    while len(out) < n:
        c = (rng.random(3) * shape).astype(int)
        if np.sqrt((((c * np.asarray(VOXEL)) - um) ** 2).sum(axis=1)).min() > NEG_DISTANCE_UM:
            out.append(c)
    return np.asarray(out)


def thresholds(model_maps: list[np.ndarray], k: float, r: float) -> dict[str, float]:
    merge = PUPostprocessConfig().merge_factor * 2 * r
    vs = [VOXEL] * len(model_maps)
    return {
        "auto": threshold_for_count(model_maps, k, r, vs, merge_um=merge),
        "auto_nms": threshold_for_count(model_maps, k, r, vs),
        "k/2": threshold_for_count(model_maps, 0.5 * k, r, vs, merge_um=merge),
        "1.5k": threshold_for_count(model_maps, 1.5 * k, r, vs, merge_um=merge),
        "0.5": 0.5,
    }


def run_one(
    config: str,
    n: int,
    run: int,
    vols: dict[str, dict[str, Any]],
    k_factor: float = 1.0,
    radius_um: float = RADIUS_UM,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    train = vols["train"]
    seed = 1000 * n + run
    rng = np.random.default_rng(seed)
    pts = train["points"]
    subset = pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)]
    k = len(pts) * k_factor  # the expected count given to training (pi) and the threshold
    if config == "FS":
        vol: PUVolume = FixedNegatives(
            "train", train["norm"], subset, VOXEL, roi=train["roi"],
            negatives=true_negatives(train, n, rng),
        )  # fmt: skip
    else:
        vol = PUVolume("train", train["norm"], subset, VOXEL, roi=train["roi"])
    model, summary, curve = train_pu(
        [vol], params_for(config), radius_um=radius_um, expected_particles=k, seed=seed
    )
    t_train = time.perf_counter() - t0
    maps = {s: dense(model, v["norm"]) for s, v in vols.items()}
    thr = thresholds([np.where(train["roi"], maps["train"], 0.0)], k, radius_um)
    row: dict[str, Any] = {
        "config": config, "n": n, "run": run, "k": k, "k_factor": k_factor, "radius_um": radius_um,
        "pi_u": summary["pi_unlabelled"], "train_s": t_train,
        "p_unlabelled_end": float(curve["p_unlabelled"].iloc[-1]),
        "thresholds": thr,
    }  # fmt: skip
    clahe = (1.5, 1.5, 1.5)
    post = PUPostprocessConfig(clahe_kernel_um=clahe)
    for split in ("val", "test"):
        v = vols[split]
        for name, t in thr.items():
            out, steps = postprocess(
                maps[split], v["image"], threshold=t, radius_um=radius_um, voxel_size=VOXEL,
                params=post, roi=v["roi"],
            )  # fmt: skip
            m = evaluate(out[["z", "y", "x"]].to_numpy(), v["points"], VOXEL, GATE_UM)
            for key in ("f1", "precision", "recall"):
                row[f"{key}_{name}_{split}"] = m[key]
            row[f"detections_{name}_{split}"] = len(out)
            if split == "test" and name == "auto":
                row["steps_auto_test"] = steps
    ablation = []
    for stage, switches in ABLATION.items():
        out, _ = postprocess(
            maps["test"], vols["test"]["image"], threshold=thr["auto"], radius_um=radius_um,
            voxel_size=VOXEL, params=PUPostprocessConfig(clahe_kernel_um=clahe, **switches),
            roi=vols["test"]["roi"],
        )  # fmt: skip
        m = evaluate(out[["z", "y", "x"]].to_numpy(), vols["test"]["points"], VOXEL, GATE_UM)
        ablation.append({"stage": stage, **{k: m[k] for k in ("tp", "fp", "fn", "f1")}})
    row["ablation_auto_test"] = ablation
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=list(SCENARIOS), required=True)
    ap.add_argument("--configs", default="PU+SWA,PU,PN,FS")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--first-run", type=int, default=0)
    ap.add_argument("--k-factor", type=float, default=1.0, help="k given to training / 1 = true")
    ap.add_argument("--radius-um", type=float, default=RADIUS_UM, help="particle radius r (µm)")
    ap.add_argument("--out", default=str(HERE / "results" / "crowding.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            radius = r.get("radius_um", RADIUS_UM)
            done.add((r["scenario"], r["config"], r["n"], r["run"], r["k_factor"], radius))
    vols = {split: volume(args.scenario, seed, split) for split, seed in SEEDS.items()}
    info = {s: (len(v["points"]), round(v["roi_fraction"], 3)) for s, v in vols.items()}
    print(f"{args.scenario}: (particles, ROI fraction) {info}", flush=True)
    for run in range(args.first_run, args.first_run + args.runs):
        for config in args.configs.split(","):
            key = (args.scenario, config, args.n, run, args.k_factor, args.radius_um)
            if key in done:
                continue
            row = run_one(config, args.n, run, vols, args.k_factor, args.radius_um)
            row.update({"scenario": args.scenario, "particles": info})
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{args.scenario} {config} N={args.n} run {run} k x{args.k_factor} "
                + f"r {args.radius_um}: F1 test "
                + " ".join(f"{t} {row[f'f1_{t}_test']:.3f}" for t in row["thresholds"])
                + f" ({row['seconds']:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
