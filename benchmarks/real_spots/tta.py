"""Do test-time mirroring and a two-seed ensemble, on the training grid, close the last clicks?

Check declared before any of its numbers (2026-12-02, after ``resample.py``): on the training
grid the best learned rows are 0-2 of 32 test clicks from the LoG at each precision level and
not separable from it (McNemar p >= 0.125). Two standard inference choices that use no label
and no test image are left: nnU-Net's test-time mirroring (the mean of the outputs over every
flip combination of the axes the model trained with flips; here y and x, ``flip_z`` false:
4 passes, :class:`fewlabel.models.compose.Mirrored`) and the mean map of models trained with
two seeds (nnU-Net ensembles its folds). Rows:

- every stored single DM-DetNet3D row of ``resample.py`` (the same models, the same grid, the
  same threshold tuning on img2's box and test sweep), with mirroring;
- the two-seed ensembles whose members both exist in the work folder (the default recipe and
  its ``[background]`` twin, seeds 0 + 1), on the grid, without and with mirroring.

Added after the tables, to check the library against the composition above (not a new
candidate): ``split.py --only "DM-DetNet3D partial-annotation, ensemble 2 + mirroring"``
trains the default recipe with ``detection.train.ensemble: 2, mirror: true``; its folder
composes itself, so it is scored on the grid as it is.

Declared after the tables, before running them (is the ensemble's result the two seeds' or
the recipe's?): the same library row with ``--seed 2`` and ``--seed 4`` (members seeds 2 + 3
and 4 + 5, new trainings), scored the same way; all three are reported whatever they show.

Declared after those three (seeds 0 + 1 met the bar, 2 + 3 and 4 + 5 did not), before
running: how much of it is the seeds? (a) each of the six networks alone (seeds 0-5, the
default recipe), with mirroring, on the grid: the seed distribution of one network; (b) all
six as one ensemble (the three library folders averaged; each mirrors itself). Reported
whatever they show; no library default is changed on them.

Declared after the protocol-3 tables (synthetic only with mirroring: seed 0 significantly
above the LoG at P >= 0.8, seed 1 at or above it but not significantly), before running: two
more synthetic-only models (``split.py --noise 3 --seed 2|3``: other synthetic sets and
training seeds), scored the same way at 3x noise; reported whatever they show.

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
import json
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

LIBRARY = f"{split.DM_PARTIAL}, ensemble 2 + mirroring"  # split.py's library rows
LIBRARY_SEEDS = (", seed 2", ", seed 4")
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
            # a folder trained with detection.train.mirror mirrors itself (load_model)
            out.append((name, [found[0]], found[1], (False,) if composed(found[0]) else (True,)))
    library = [workdir / split.slug(f"{LIBRARY}{s}") / "model" for s in ("", *LIBRARY_SEEDS)]
    if all((f / "weights.pt").is_file() for f in library):  # the six networks, then all six
        for i, folder in enumerate(library):
            for member in (0, 1):
                seed = 2 * i + member
                alone = member_folder(folder, member, workdir / "members" / f"seed{seed}")
                out.append((f"{split.DM_PARTIAL}, seed {seed} alone", [alone], TRAIN_Z_UM, (True,)))
        out.append((f"{split.DM_PARTIAL}, seeds 0-5 averaged", library, TRAIN_Z_UM, (False,)))
    for name, members in ENSEMBLES.items():
        folders = [workdir / split.slug(m) / "model" for m in members]
        if all((f / "weights.pt").is_file() for f in folders):
            out.append((name, folders, TRAIN_Z_UM, (False, True)))
    return out


def member_folder(folder: Path, member: int, dest: Path) -> Path:
    """Network ``member`` of an ensemble folder as a plain model folder of its own (its
    weights, model.json without ``inference``, the other files as they are)."""
    import shutil

    from fewlabel.models.store import MEMBER, WEIGHTS

    if not (dest / "weights.pt").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("training.json", "thresholds.json", "normalization.json"):
            shutil.copy(folder / name, dest / name)
        described = json.loads((folder / "model.json").read_text())
        described.pop("inference")
        (dest / "model.json").write_text(json.dumps(described))
        source = WEIGHTS if member == 0 else f"{MEMBER}{member}.pt"
        shutil.copy(folder / source, dest / "weights.pt")
    return dest


def label_of(folders: list[Path], mirror: bool) -> str:
    if len(folders) == 1 and composed(folders[0]):
        return "training grid, library (model.json: ensemble 2 + mirroring)"
    mirrored = mirror or any(composed(f) for f in folders)  # folders that mirror themselves
    return "training grid + mirroring" if mirrored else "training grid"


def composed(folder: Path) -> bool:
    """Whether the folder records an ensemble or mirroring (model.json ``inference``)."""
    return "inference" in json.loads((folder / "model.json").read_text())


def score(name: str, folders: list[Path], z_um: float, mirror: bool, p: dict, workdir: Path):
    fn = resampled(model_peaks(folders, mirror=mirror), z_um)
    threshold, val = split.tune([fn(p["val"])], [p["val_clicks"]])
    tests = [fn(v) for v in p["tests"]]
    sweep = pd.DataFrame(split.test_sweep(tests, p["tests"]))
    label = label_of(folders, mirror)
    runs = workdir / "tta_runs"
    runs.mkdir(exist_ok=True)
    run = {"method": f"{name} [{label}]", "threshold": threshold, "tests": tests}
    pd.to_pickle(run, runs / f"{split.slug(run['method'])}.pkl")
    return {
        "method": name, "inference": label, **recall_at_levels(sweep),
        "best F1": round(float(sweep["f1"].max()), 3),
        "F1 at val threshold": round(pooled(tests, p["tests"], threshold)["f1"], 3),
        "val best F1": round(float(val["f1"].max()), 3),
    }  # fmt: skip


def val_only(name: str, folders: list[Path], z_um: float, mirror: bool, p: dict) -> dict:
    """The validation's best F1 alone (img2's box; what a user could choose a row by)."""
    _, val = split.tune(
        [resampled(model_peaks(folders, mirror=mirror), z_um)(p["val"])], [p["val_clicks"]]
    )
    label = label_of(folders, mirror)
    return {"method": name, "inference": label, "val best F1": round(float(val["f1"].max()), 3)}


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
    val = workdir / "tta_val.tsv"  # --val-only: the validation's best F1 of every row
    if val.is_file():  # rows scored before score() recorded it
        extra = pd.read_csv(val, sep="\t").rename(columns={"val best F1": "val"})
        out = out.merge(extra, on=["method", "inference"], how="left")
        out["val best F1"] = out.get("val best F1", out["val"]).fillna(out["val"])
        out = out.drop(columns="val")
    out.to_csv(data.HERE / f"tta{tag}.tsv", sep="\t", index=False)


FIGURE = {  # panel: (work folder, noise, [(run file under the work folder, legend)])
    "recorded SNR (protocol 2)": ("split", 1.0, [
        ("split/LoG.pkl", "LoG"),
        ("grid_runs/DM_DetNet3D_partial_annotation.pkl", "DM default recipe, training grid"),
        ("tta_runs/DM_DetNet3D_partial_annotation_ensemble_2_mirroring_training_grid_library_"
         "model_json_ensemble_2_mirroring.pkl", "DM default, seeds 0 + 1, mirroring"),
        ("tta_runs/DM_DetNet3D_partial_annotation_ensemble_2_mirroring_seed_2_training_grid_"
         "library_model_json_ensemble_2_mirroring.pkl", "DM default, seeds 2 + 3, mirroring"),
        ("tta_runs/DM_DetNet3D_partial_annotation_seeds_0_5_averaged_training_grid_mirroring.pkl",
         "DM default, six networks (seeds 0-5), mirroring"),
    ]),
    "3x noise (protocol 3)": ("noise3", 3.0, [
        ("split/LoG.pkl", "LoG"),
        ("split/DM_DetNet3D_synthetic_only_no_real_clicks.pkl", "DM synthetic only, as recorded"),
        ("tta_runs/DM_DetNet3D_synthetic_only_no_real_clicks_training_grid_mirroring.pkl",
         "DM synthetic only, grid + mirroring"),
    ]),
}  # fmt: skip


def figure(root: Path) -> None:
    """``tta_pr.png``: the test precision-recall sweeps of the rows the README compares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, (folder, noise, runs)) in zip(axes, FIGURE.items(), strict=True):
        split.NOISE = noise
        (_, img2), tests = split.load_all()
        for path, label in runs:
            run = pd.read_pickle(root / folder / path)
            sweep = pd.DataFrame(split.test_sweep(run["tests"], tests))
            ax.plot(sweep["precision"], sweep["recall"], label=label)
            threshold = run["threshold"]
            if "val_table" in run:  # split.py's rows: retuned as its collect does
                threshold, _ = split.tune([run["val_table"]], [split.validation(img2)])
            at = pooled(run["tests"], tests, threshold)
            ax.scatter([at["precision"]], [at["recall"]], s=25)
        ax.set_xlim(0.0 if noise > 1 else 0.5, 1.02)  # zoomed: the recorded curves sit high
        ax.set_ylim(0.3 if noise > 1 else 0.7, 1.02)
        ax.set_title(f"{title}; dots: validation thresholds", fontsize=8)
        ax.set_xlabel("precision inside the fully annotated boxes")
        ax.set_ylabel("recall on the 32 test clicks")
        ax.legend(fontsize=7)
    fig.savefig(data.HERE / "tta_pr.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--part", default="0/1", help="k/n: every n-th job from the k-th")
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--val-only", action="store_true", help="the validation's best F1")
    parser.add_argument(
        "--only", help="'|'-separated rows (written to tta_part<k>_<first row>.tsv)"
    )
    parser.add_argument("--figure", help="the root of both work folders: tta_pr.png")
    args = parser.parse_args()
    split.NOISE = args.noise
    workdir = Path(args.workdir)
    tag = "_split" if args.noise == 1.0 else f"_noise{args.noise:g}"
    if args.figure:
        figure(Path(args.figure))
        return
    if args.collect:
        collect(workdir, tag)
        return
    k, n = (int(v) for v in args.part.split("/"))
    p = split.volumes()
    rows = []
    if args.val_only:
        for name, folders, z_um, mirrors in jobs(workdir):
            for mirror in sorted({False, *mirrors}):
                rows.append(val_only(name, folders, z_um, mirror, p))
                print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(workdir / "tta_val.tsv", sep="\t", index=False)
        return
    only = None if args.only is None else args.only.split("|")
    todo = [j for j in jobs(workdir) if only is None or j[0] in only][k::n]
    out = workdir / f"tta_part{k}{'_' + split.slug(only[0]) if only else ''}.tsv"
    for name, folders, z_um, mirrors in todo:
        for mirror in mirrors:
            rows.append(score(name, folders, z_um, mirror, p, workdir))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(out, sep="\t", index=False)


if __name__ == "__main__":
    main()
