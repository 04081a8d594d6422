"""Experiment 3: PU vs DM-DetNet3D density regression at the same click budget on PTC-like
spot volumes (10 or 50 clicked spots, all other spots unlabelled), SNR 2 and 4.

DM-DetNet3D is trained "as today": its targets are built from the clicked spots only, so the
unclicked spots are learned as background, and its threshold is tuned on the same clicks (the
partial-annotation mode asked for in the real-data issue was not in main when this ran; its
row is marked as not run).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pu_picking/spots.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, run_pu, volume_record
from density_run import run_density

from fewlabel.config import RoiConfig
from fewlabel.config.pu import PUConfig
from fewlabel.synth.spots import spot_volume

SHAPE = (10, 128, 128)
PSF = {"sigma_xy": 1.25, "sigma_z": 0.85}  # benchmarks/detection_ptc calibration
VOXEL = (1.0, 1.0, 1.0)
DENSITY = 600.0  # spots per 100^3 voxels: ~98 per volume (50 clicks need that many)
GATE = 3.0
RADIUS = 1.5
ROI = RoiConfig(
    clahe_kernel_um=(10.0, 32.0, 32.0),
    smooth_sigma_um=0.7,
    erosion_radius_um=0.5,
    extend_radius_um=3.0,
)
PU = PUConfig.model_validate(
    {
        "window": [5, 11, 11],
        "batch_size": 48,
        "steps": 160,
        "model": {"width": 8, "channels": [8, 16, 24], "expand": 3, "head_channels": 32},
        "averaging": {"mode": "swa", "start": 0.5, "cycle_steps": 10},
        "predict": {"tile": [10, 64, 64], "overlap": [4, 10, 10]},
    }
)
# the PU rows of session pu ("PU+SWA") used the old auto threshold (k NMS candidates); the
# rerun with the fixed rule (k detections after averaging, session pu2) is its own method
PU_METHOD = "PU+SWA (fixed rule)"
DENSITY_SNRS = (4.0,)  # ~10 min per DM-DetNet3D run (SNR 2, N=10 ran before this was added)


def volume(snr: float, seed: int) -> dict:
    synth = spot_volume(SHAPE, snr=snr, density=DENSITY, clutter=False, seed=seed, **PSF)
    return volume_record(synth, VOXEL, ROI, clahe_um=(10.0, 32.0, 32.0))


def main() -> None:
    torch.set_num_threads(1)
    out = HERE / "results" / "spots.jsonl"
    done = set()
    if out.exists():
        done = {
            (r["method"], r["snr"], r["n"]) for r in map(json.loads, out.read_text().splitlines())
        }
    for snr in (4.0, 2.0):
        train, test = volume(snr, 11), volume(snr, 12)
        print(f"SNR {snr}: {len(train['points'])} / {len(test['points'])} spots, ROI "
              f"{train['roi_fraction']:.3f}", flush=True)  # fmt: skip
        for n in (10, 50):
            for method in (PU_METHOD, "density (as today)"):
                if (method, snr, n) in done or (method != PU_METHOD and snr not in DENSITY_SNRS):
                    continue
                if method == PU_METHOD:
                    row = run_pu(
                        train, test, n_clicks=n, run_seed=n, params=PU, radius_um=RADIUS,
                        gate_um=GATE,
                    )  # fmt: skip
                else:
                    row = run_density(train, test, n, n)
                row.update(method=method, snr=snr, n=n)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{method} SNR {snr} N={n}: F1 {row['f1_full']:.3f} "
                      f"({row['seconds']:.0f}s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
