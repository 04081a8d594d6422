"""Does training on the finer z step of the test acquisition keep close spot pairs apart?

Check declared before any of its numbers (2026-12-02, after ``misses.py``). ``misses.py``
refuted the z-boundary guess: none of the clicks that the library's ensemble rows miss at
P >= 0.875 (and the LoG finds) lies on a boundary plane. They are img6's close pairs instead:
clicks 1 / 5, which are 0.71 µm apart (0.6 µm of it in z), and clicks 13 / 14, 0.56 µm apart.
The LoG scores both members of each pair high. The network's second peak scores lower, and
its peaks sit about one grid plane off in z. The learned rows predict on the training grid
(z 0.4 µm: img1, img2), so the 0.3 µm test crops are first averaged onto a coarser z grid.
That can merge two spots 0.6 µm apart in z before the network sees them.

nnU-Net's rule for anisotropic data takes the target spacing of the coarse axis at the 10th
percentile of the dataset's spacings, not the median: it upsamples the coarse volumes rather
than losing the fine ones' resolution. The check applies that rule to every volume the
workflow would see (train 0.4, 0.4; test 0.3, 0.3, 0.3): z 0.3 µm. img1 and img2 are
resampled up to 0.3 µm (the library's :class:`fewlabel.inference.resample.Resampled`,
linear; clicks at the same µm). The recipe is the library row of ``tta.py`` otherwise
unchanged (``ensemble: 2, mirror: true``, 40 epochs, the same crops in voxels). The threshold
is tuned on img2's box (img2 resampled to 0.3 µm, peaks mapped back), and the test crops are
predicted as recorded. Seeds 0 and 2 give members 0 + 1 and 2 + 3. The comparison is with
the same two library rows trained at 0.4 µm on this machine (``tta.py``'s runs, in the same
work folder).

Read as declared: the finer grid helps if, over both seed pairs, the recall at P >= 0.875
and at P = 1.0 rises, and no level falls by more than one click in either pair. Only then
does the grid rule go into the library. Reported whatever it shows.

``OMP_NUM_THREADS=1 python benchmarks/real_spots/finegrid.py --workdir /tmp/spots3/split
--seed 0`` (and ``--seed 2`` beside it), then ``--collect`` writes ``finegrid_split.tsv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import run
import split
from folders import model_peaks
from resample import resampled
from run import GATE_UM, pooled
from tables import recall_at_levels

FINE_Z_UM = 0.3  # the 10th percentile of the z steps of every volume (0.4, 0.4, 0.3, 0.3, 0.3)
REFERENCE = "tta_runs/DM_DetNet3D_partial_annotation_ensemble_2_mirroring{seed}_training_grid_library_model_json_ensemble_2_mirroring.pkl"  # noqa: E501


def on_grid(vol: data.Volume, z_um: float, name: str | None = None) -> data.Volume:
    """``vol`` resampled along z to a step of ``z_um`` (clicks kept at the same µm)."""
    from fewlabel.inference.resample import Resampled, points_to_image

    grid = (z_um, *vol.voxel_size[1:])
    image = np.asarray(Resampled(vol.image, vol.voxel_size, grid), dtype=np.float32)
    clicks = points_to_image(vol.clicks, vol.voxel_size, grid)
    return data.Volume(name or vol.name, image, clicks, grid)


def fine_protocol(p: dict) -> dict:
    """``split.volumes()`` with the training volumes and the box crop on the fine grid."""
    (img1, _, _), (img2, img2_clicks, _) = p["train"]
    train1 = on_grid(img1, FINE_Z_UM)
    train2 = on_grid(data.Volume(img2.name, img2.image, img2_clicks, img2.voxel_size), FINE_Z_UM)
    crop = on_grid(p["val_crop"], FINE_Z_UM)
    return {"train": [(train1, None), (train2, data.boxes(img2.name)[0])], "val_crop": crop}


def train(fine: dict, work: Path, seed: int) -> Path:
    """The library recipe of ``split.py``'s ensemble row, trained on the fine grid."""
    from fewlabel.config import DensityTargetsConfig, PeaksConfig
    from fewlabel.detection.density.training import train_detector
    from fewlabel.io import open_ome_zarr

    targets = DensityTargetsConfig()
    items = []
    for vol, box in fine["train"]:
        items.append(run._zarrs(vol, work, targets, None))
        if box is not None:  # held out: weight 0 over the box's y/x, every z plane
            _, y0, x0, _, y1, x1 = box
            weight = open_ome_zarr(items[-1]["weight"], mode="r+").array
            weight[:, y0:y1, x0:x1] = 0.0
    val = run._zarrs(fine["val_crop"], work, targets, "full")
    params = run.dm_params(split.EPOCHS, "percentile", select="loss")
    params = params.model_copy(update={"ensemble": 2, "mirror": True})
    train_detector(
        items, [val], work / "model", params=params, peaks=PeaksConfig(), seed=seed, threads=1,
        evaluation={"gate": GATE_UM, "gate_unit": "um"},
    )  # fmt: skip
    return work / "model"


def score(folder: Path, p: dict) -> dict:
    """Threshold on img2's box, test sweep; every volume predicted on the model's grid."""
    recorded = json.loads((folder / "training.json").read_text())["voxel_size_um"]
    fn = resampled(model_peaks([folder]), float(recorded[0]))
    threshold, _ = split.tune([fn(p["val"])], [p["val_clicks"]])
    tests = [fn(v) for v in p["tests"]]
    return {"threshold": threshold, "tests": tests}


def row(name: str, run_: dict, p: dict) -> dict:
    sweep = pd.DataFrame(split.test_sweep(run_["tests"], p["tests"]))
    at = pooled(run_["tests"], p["tests"], run_["threshold"])
    return {
        "method": name, **recall_at_levels(sweep), "best F1": round(float(sweep["f1"].max()), 3),
        "F1 at val threshold": round(at["f1"], 3),
    }  # fmt: skip


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    runs = workdir / "fine_runs"
    runs.mkdir(exist_ok=True)
    p = split.volumes()
    if not args.collect:
        work = workdir / f"finegrid_seed{args.seed}"
        folder = train(fine_protocol(p), work, args.seed)
        out = {"method": f"fine grid, seed {args.seed}", **score(folder, p)}
        pd.to_pickle(out, runs / f"finegrid_seed{args.seed}.pkl")
        print(row(out["method"], out, p), flush=True)
        return
    rows = []
    for seed in (0, 2):
        pair = f"seeds {seed} + {seed + 1}"
        ref = pd.read_pickle(workdir / REFERENCE.format(seed=f"_seed_{seed}" if seed else ""))
        rows.append({"grid": "z 0.4 µm (training grid, tta.py)", **row(pair, ref, p)})
        fine = pd.read_pickle(runs / f"finegrid_seed{seed}.pkl")
        rows.append({"grid": f"z {FINE_Z_UM} µm (training resampled)", **row(pair, fine, p)})
    table = pd.DataFrame(rows)
    table.to_csv(data.HERE / "finegrid_split.tsv", sep="\t", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
