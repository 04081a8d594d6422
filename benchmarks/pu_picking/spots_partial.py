"""Experiment 3, DM-DetNet3D's partial-annotation mode (``detection.targets.annotation:
clicks``, built by the density helper in main): the same volumes and clicks as spots.py.
Runs against a fewlabel checkout that has the mode (main at 4f9fe1a)::

    PYTHONPATH=/work/main/src OMP_NUM_THREADS=1 nice -n 10 \\
        .venv/bin/python benchmarks/pu_picking/spots_partial.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density_run import run_density

from fewlabel.synth.spots import spot_volume

HERE = Path(__file__).resolve().parent
SHAPE = (10, 128, 128)
PSF = {"sigma_xy": 1.25, "sigma_z": 0.85}
DENSITY = 600.0


def volume(snr: float, seed: int) -> dict:
    synth = spot_volume(SHAPE, snr=snr, density=DENSITY, clutter=False, seed=seed, **PSF)
    return {"image": synth.image, "points": synth.points[["z", "y", "x"]].to_numpy()}


def main() -> None:
    torch.set_num_threads(1)
    n = int(sys.argv[1])
    snr = 4.0
    train, test = volume(snr, 11), volume(snr, 12)
    row = run_density(train, test, n, n, targets={"annotation": "clicks"})
    row.update(method="density (partial mode, main 4f9fe1a)", snr=snr, n=n)
    with (HERE / "results" / "spots.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"{row['method']} SNR {snr} N={n}: F1 {row['f1_full']:.3f} ({row['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
