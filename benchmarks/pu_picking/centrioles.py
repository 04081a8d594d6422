"""Experiment 1 (+2): F1 against the number of clicked particles on synthetic centrioles, PU
(GE-binomial) vs PN, with true SWA, EMA or no averaging; post-processing ablation (NMS only
vs the full chain) on the same runs.

Usage (CPU, 1 thread; results appended to results/centrioles.jsonl, rerun skips done runs)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pu_picking/centrioles.py
    .venv/bin/python benchmarks/pu_picking/tables.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, pu_params, run_pu, volume_record

from fewlabel.config import RoiConfig
from fewlabel.config.pu import PUConfig
from fewlabel.synth.centrioles import centriole_volume

VOXEL = (0.12, 0.06, 0.06)
SHAPE = (24, 160, 160)
RADIUS_UM = 0.15  # particle radius r: positives = window centres within r of a centre
GATE_UM = 0.2
SYNTH = dict(
    n_particles=80,
    voxel_size=VOXEL,
    barrel_radius_um=0.1,
    barrel_length_um=0.25,
    psf_sigma_um=(0.12, 0.05, 0.05),
    photons=20.0,
    background=20.0,
    n_specks=60,
    n_blobs=16,
)
ROI = RoiConfig(clahe_kernel_um=(1.5, 1.5, 1.5), extend_radius_um=0.3, smooth_sigma_um=0.06)
# CPU budget configuration (the GPU configuration is in README.md)
BASE = dict(
    window=(7, 13, 13),
    batch_size=48,
    positive_share=0.125,
    steps=160,
    lr=0.02,
    model={"width": 8, "channels": [8, 16, 24], "expand": 3, "head_channels": 32},
    averaging={"start": 0.5, "cycle_steps": 10, "lr_max": 0.02, "lr_min": 0.002},
    predict={"tile": [16, 64, 64], "overlap": [6, 12, 12]},
)
CONFIGS = {
    "PU+SWA": {"loss": "ge_binomial", "averaging": {"mode": "swa"}},
    "PU": {"loss": "ge_binomial", "averaging": {"mode": "none"}},
    "PN": {"loss": "pn", "averaging": {"mode": "swa"}},
    "PU+EMA": {"loss": "ge_binomial", "averaging": {"mode": "ema"}},
}
# (config, N, runs): >= 10 runs at N = 10 for PU+SWA, PU and PN, 3 elsewhere (N = 20 and PU
# without SWA at N != 10 dropped to fit the CPU budget)
GRID = (
    [(c, 10, 10) for c in ("PU+SWA", "PU", "PN")]
    + [("PU+EMA", 10, 3)]
    + [(c, n, 3) for n in (5, 50) for c in ("PU+SWA", "PN")]
)


def params_for(name: str) -> PUConfig:
    return pu_params(BASE, CONFIGS[name])


def volume(seed: int) -> dict:
    synth = centriole_volume(SHAPE, seed=seed, **SYNTH)
    return volume_record(synth, VOXEL, ROI, clahe_um=(1.5, 1.5, 1.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "results" / "centrioles.jsonl"))
    ap.add_argument("--only", default=None, help="config name to run")
    ap.add_argument("--max-runs", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["config"], r["n"], r["run"]))
    train, test = volume(101), volume(202)
    print(
        f"train: {len(train['points'])} particles, ROI {train['roi_fraction']:.3f}; "
        f"test: {len(test['points'])} particles, ROI {test['roi_fraction']:.3f}",
        flush=True,
    )
    count = 0
    for run in range(10):
        for name, n, runs in GRID:
            if run >= runs or (name, n, run) in done or (args.only and name != args.only):
                continue
            t0 = time.perf_counter()
            row = run_pu(
                train,
                test,
                n_clicks=n,
                run_seed=1000 * n + run,
                params=params_for(name),
                radius_um=RADIUS_UM,
                gate_um=GATE_UM,
            )
            row.update({"config": name, "n": n, "run": run})
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{name} N={n} run {run}: F1 full {row['f1_full']:.3f} nms {row['f1_nms']:.3f} "
                f"(FP {row['fp_nms']} -> {row['fp_full']}), {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
            count += 1
            if args.max_runs and count >= args.max_runs:
                return


if __name__ == "__main__":
    main()
