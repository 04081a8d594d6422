"""Does resampling a volume to the model's training z step close the gap to the LoG?

Check declared before any of its numbers (2026-12-02): the DM-DetNet3D models were trained at
z 0.4 µm (img1, img2; synthetic: 0.35 µm) and are applied to test crops at z 0.3 µm, while the
LoG's σ is in µm and adapts. nnU-Net's answer is a target spacing: every volume is resampled to
the training spacing before the network and the result mapped back. Here each validation and
test volume whose z step differs by more than 5 % is resampled along z (linear interpolation,
xy untouched) to the model's training z step, the stored model predicts on it, and the peaks'
z is mapped back to the recorded grid; thresholds and scoring as in ``split.py`` (validation
on img2's box, test sweep on img4-6). No model is retrained. Rows: every trained DM-DetNet3D
row of the work folder (ensembles and PU rows are left out); the same rows without resampling
are in ``pr_curves{tag}.tsv``.

``OMP_NUM_THREADS=1 python benchmarks/real_spots/resample.py --workdir /tmp/spots3/split``
(``--noise 3 --workdir /tmp/spots3/noise3`` for protocol 3) writes ``resample{tag}.tsv``;
each resampled row's test peaks go to ``<workdir>/grid_runs/`` (``paired.py --runs``);
``--pu``: the PU+SWA rows instead (a second check, declared after the DM tables: the library's
PU prediction does not resample), ``resample_pu{tag}.tsv``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import pretrain
import split
from folders import model_peaks
from run import pooled
from tables import recall_at_levels

TRAIN_Z_UM = 0.4  # img1 and img2, the real training crops
SKIP = ("seeds 0 + 1 averaged",)  # ensembles: no single training grid to name


def resampled(peaks, z_um: float):
    """``peaks`` applied on the volume seen on a grid of z step ``z_um`` (the library's
    :class:`fewlabel.inference.resample.Resampled`, as ``detection.predict.model_grid`` uses
    it), peaks mapped back to the recorded voxels."""
    from fewlabel.inference.resample import Resampled, points_to_image, target_grid

    def fn(vol: data.Volume) -> pd.DataFrame:
        grid = target_grid(vol.voxel_size, (z_um, *vol.voxel_size[1:]))
        if grid is None:
            return peaks(vol)
        image = np.asarray(Resampled(vol.image, vol.voxel_size, grid))
        table = peaks(data.Volume(vol.name, image, vol.clicks, grid)).copy()
        zyx = points_to_image(table[["z", "y", "x"]].to_numpy(float), grid, vol.voxel_size)
        table[["z", "y", "x"]] = zyx
        return table

    return fn


def pu_peaks(folder: Path, cache: Path):
    """``peaks(volume)`` of a stored PU model folder: the tiled engine's score map and the
    post-processing chain at the lowest threshold of ``pu_method`` (score maps cached under
    ``cache``)."""
    import pu_method as pu

    cfg = pu.params(1)  # the predict and post-processing settings (k only trains)
    # 10 planes of 0.3 µm are 7 of 0.4 µm: below the 10-plane tile, mirror-padded to it
    cfg = cfg.model_copy(update={"predict": cfg.predict.model_copy(update={"pad_to_tile": True})})
    return lambda vol: pu.peaks(folder, cfg, pu.LOWEST, vol, cache)


def model_of(name: str, workdir: Path, pu: bool = False) -> tuple[Path, float] | None:
    """The model folder of a stored row and its training z step (None: not a single DM, or
    with ``pu`` not a PU row)."""
    if pu:
        return (workdir / split.slug(name) / "model", TRAIN_Z_UM) if name.startswith("PU") else None
    if not name.startswith("DM-DetNet3D") or any(s in name for s in SKIP):
        return None
    if "synthetic only" in name:
        found = re.search(r", seed (\d+)$", name)
        seed = int(found.group(1)) if found else 0
        root = "synthetic_pretrain" + (f"_seed{seed}" if seed else "")
        return workdir / root / "model", pretrain.VOXEL_UM[0]
    return workdir / split.slug(name) / "model", TRAIN_Z_UM


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--pu", action="store_true", help="the PU rows (resample_pu*.tsv)")
    args = parser.parse_args()
    split.NOISE = args.noise
    workdir = Path(args.workdir)
    tag = "_split" if args.noise == 1.0 else f"_noise{args.noise:g}"
    before = pd.read_csv(data.HERE / f"pr_curves{tag}.tsv", sep="\t")
    at_val = pd.read_csv(data.HERE / f"results{tag}.tsv", sep="\t").set_index("method")["f1"]
    p = split.volumes()
    rows = []
    for pkl in sorted((workdir / "split").glob("*.pkl")):
        name = pd.read_pickle(pkl)["method"]
        found = model_of(name, workdir, args.pu)
        if found is None or not (found[0] / "weights.pt").is_file():
            continue
        if args.pu:  # a cache of its own: the recorded rows' score maps sit in the row folder
            peaks = pu_peaks(found[0], workdir / "grid" / split.slug(name))
        else:
            peaks = model_peaks([found[0]])
        fn = resampled(peaks, found[1])
        threshold, _ = split.tune([fn(p["val"])], [p["val_clicks"]])
        tests = [fn(v) for v in p["tests"]]
        sweep = pd.DataFrame(split.test_sweep(tests, p["tests"]))
        as_is = before[before["method"] == name]
        for label, curve in (("as recorded", as_is), ("resampled", sweep)):
            rows.append(
                {"method": name, "z grid": label, **recall_at_levels(curve),
                 "best F1": round(float(curve["f1"].max()), 3)}
            )  # fmt: skip
        rows[-2]["F1 at val threshold"] = round(float(at_val[name]), 3)
        rows[-1]["F1 at val threshold"] = round(pooled(tests, p["tests"], threshold)["f1"], 3)
        runs = workdir / ("grid_pu" if args.pu else "grid_runs")  # for paired.py --runs
        runs.mkdir(exist_ok=True)
        run = {"method": f"{name} [training grid]", "threshold": threshold, "tests": tests}
        pd.to_pickle(run, runs / pkl.name)
        print(rows[-2], rows[-1], sep="\n", flush=True)
    out = data.HERE / f"resample{'_pu' if args.pu else ''}{tag}.tsv"
    pd.DataFrame(rows).to_csv(out, sep="\t", index=False)


if __name__ == "__main__":
    main()
