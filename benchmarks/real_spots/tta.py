"""Do test-time mirroring and a two-seed ensemble, on the training grid, close the last clicks?

Check declared before any of its numbers (2026-12-02, after ``resample.py``): on the training
grid the best learned rows are 0-2 of 32 test clicks from the LoG at each precision level and
not separable from it (McNemar p >= 0.125). Two standard inference choices that use no label
and no test image are left: nnU-Net's test-time mirroring (the mean of the outputs over every
flip combination of the axes the model trained with flips; here y and x, ``flip_z`` false:
4 passes, :class:`fewlabel.inference.mirror.Mirrored`) and the mean map of models trained with
two seeds (nnU-Net ensembles its folds). Rows:

- every stored single DM-DetNet3D row of ``resample.py`` (the same models, the same grid, the
  same threshold tuning on img2's box and test sweep), with mirroring;
- the two-seed ensembles whose members both exist in the work folder (the default recipe and
  its ``[background]`` twin, seeds 0 + 1), on the grid, without and with mirroring.

Read as declared: mirroring and the ensemble are counted as helping where rows at or above
the LoG at every level appear, or where the recall at the levels and the F1 at the validation
threshold rise in most rows; ``detection.predict.mirror`` lands in the library (off by
default, 4x the prediction time) either way, and would be on by default only if it raises
the F1 at the validation threshold in at least 2/3 of the rows of both protocols without
lowering the median recall at any level.

``OMP_NUM_THREADS=1 python benchmarks/real_spots/tta.py --workdir /tmp/spots3/split --part 0/2``
(and ``--part 1/2`` beside it; ``--noise 3 --workdir /tmp/spots3/noise3`` for protocol 3), then
``--collect`` writes ``tta{tag}.tsv``; each row's test peaks go to ``<workdir>/tta_runs/``
(``paired.py --runs tta_runs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import split
from folders import model_peaks
from resample import TRAIN_Z_UM, model_of, resampled
from run import pooled
from tables import recall_at_levels

ENSEMBLES = {
    f"{split.DM_PARTIAL}, seeds 0 + 1 averaged": [split.DM_PARTIAL, f"{split.DM_PARTIAL}, seed 1"],
    f"{split.DM_PARTIAL} [background], seeds 0 + 1 averaged": [
        f"{split.DM_PARTIAL} [background]",
        f"{split.DM_PARTIAL} [background], seed 1",
    ],
}


def jobs(workdir: Path) -> list[tuple[str, list[Path], float, tuple[bool, ...]]]:
    """(row, model folders, training z step, mirror settings to run) in a fixed order."""
    out = []
    for pkl in sorted((workdir / "split").glob("*.pkl")):
        name = pd.read_pickle(pkl)["method"]
        found = model_of(name, workdir)
        if found is not None and (found[0] / "weights.pt").is_file():
            out.append((name, [found[0]], found[1], (True,)))
    for name, members in ENSEMBLES.items():
        folders = [workdir / split.slug(m) / "model" for m in members]
        if all((f / "weights.pt").is_file() for f in folders):
            out.append((name, folders, TRAIN_Z_UM, (False, True)))
    return out


def score(name: str, folders: list[Path], z_um: float, mirror: bool, p: dict, workdir: Path):
    fn = resampled(model_peaks(folders, mirror=mirror), z_um)
    threshold, _ = split.tune([fn(p["val"])], [p["val_clicks"]])
    tests = [fn(v) for v in p["tests"]]
    sweep = pd.DataFrame(split.test_sweep(tests, p["tests"]))
    label = "training grid + mirroring" if mirror else "training grid"
    runs = workdir / "tta_runs"
    runs.mkdir(exist_ok=True)
    run = {"method": f"{name} [{label}]", "threshold": threshold, "tests": tests}
    pd.to_pickle(run, runs / f"{split.slug(run['method'])}.pkl")
    return {
        "method": name, "inference": label, **recall_at_levels(sweep),
        "best F1": round(float(sweep["f1"].max()), 3),
        "F1 at val threshold": round(pooled(tests, p["tests"], threshold)["f1"], 3),
    }  # fmt: skip


def collect(workdir: Path, tag: str) -> None:
    """``tta{tag}.tsv``: per row the training grid as ``resample.py`` recorded it, then mirrored."""
    grid = pd.read_csv(data.HERE / f"resample{tag}.tsv", sep="\t")
    grid = grid[grid["z grid"] == "resampled"].drop(columns="z grid")
    grid.insert(1, "inference", "training grid")
    new = pd.concat([pd.read_csv(f, sep="\t") for f in sorted(workdir.glob("tta_part*.tsv"))])
    rows = []
    for name in dict.fromkeys(new["method"]):
        rows += [grid[grid["method"] == name], new[new["method"] == name]]
    out = pd.concat(rows).drop_duplicates(["method", "inference"])
    out.to_csv(data.HERE / f"tta{tag}.tsv", sep="\t", index=False)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--part", default="0/1", help="k/n: every n-th job from the k-th")
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    split.NOISE = args.noise
    workdir = Path(args.workdir)
    tag = "_split" if args.noise == 1.0 else f"_noise{args.noise:g}"
    if args.collect:
        collect(workdir, tag)
        return
    k, n = (int(v) for v in args.part.split("/"))
    p = split.volumes()
    rows = []
    for name, folders, z_um, mirrors in jobs(workdir)[k::n]:
        for mirror in mirrors:
            rows.append(score(name, folders, z_um, mirror, p, workdir))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(workdir / f"tta_part{k}.tsv", sep="\t", index=False)


if __name__ == "__main__":
    main()
