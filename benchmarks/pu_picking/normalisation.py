"""Which ``detection.pu.normalisation`` mode by default? PU+SWA on the synthetic centrioles
(crowding.py's ``base`` scenario and CPU configuration, N = 10 clicks), the input normalised by
each mode with :func:`fewlabel.normalize.prepare` (the library's recipe, as ``train_pu`` and
the tiled engine apply it); F1 on the validation volume (seed 303) decides, the test volume
(seed 202) is reported alongside. Threshold: the fixed auto rule (k detections after the
averaging step).

Usage (CPU, 1 thread; rows appended to results/normalisation.jsonl, reruns skip done runs)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pu_picking/normalisation.py \
        --modes percentile,background --runs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from centrioles import VOXEL
from common import HERE
from crowding import SEEDS, run_one, volume

from fewlabel.config import NormalisationConfig
from fewlabel.config.pu import PUConfig
from fewlabel.normalize import apply_range, prepare, recipe


def normalised(image: np.ndarray, mode: str) -> np.ndarray:
    how = recipe(mode, PUConfig().percentiles, NormalisationConfig().background_um)
    view, low, high = prepare(image.astype(np.float32), how, VOXEL)
    return apply_range(np.asarray(view[...]), low, high)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="percentile,background")
    ap.add_argument("--scenario", default="base")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "normalisation.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["scenario"], r["mode"], r["n"], r["run"]))
    vols = {split: volume(args.scenario, seed) for split, seed in SEEDS.items()}
    raw = {split: v["image"] for split, v in vols.items()}
    for run in range(args.runs):
        for mode in args.modes.split(","):
            if (args.scenario, mode, args.n, run) in done:
                continue
            for split, v in vols.items():
                v["norm"] = normalised(raw[split], mode)
            row = run_one("PU+SWA", args.n, run, vols)
            row.update({"scenario": args.scenario, "mode": mode})
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{args.scenario} {mode} N={args.n} run {run}: F1 auto val "
                f"{row['f1_auto_val']:.3f} test {row['f1_auto_test']:.3f} "
                f"({row['seconds']:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
