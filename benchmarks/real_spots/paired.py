"""How many test clicks separate a method from the LoG: a paired comparison (protocol 2).

For each stored protocol-2 run (``<workdir>/split/*.pkl``) and each precision level, the test
threshold with the best recall at precision >= level (the sweep of ``pr_curves_split.tsv``, for
comparison only); then, click by click, which of the 32 test clicks the method finds and the LoG
misses (``only_method``) and the reverse (``only_log``), with the exact two-sided McNemar p-value
(binomial test on the discordant clicks) and the 95 % Wilson interval of the method's recall.

``python benchmarks/real_spots/paired.py --workdir /tmp/spots3/split [--tag _noise3]`` writes
paired_split.tsv (paired_noise3.tsv: protocol 3, the clicks and boxes are the same);
``--runs grid_runs --tag _resample_split``: the rows of ``resample.py`` (training grid).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
from run import GATE_UM
from split import test_sweep
from tables import LEVELS

from fewlabel.metrics.detection import match_points

REFERENCE = "LoG"


def found(tables: list[pd.DataFrame], vols: list[data.Volume], threshold: float) -> np.ndarray:
    """One flag per test click (volumes in order): matched by a detection with score > t."""
    flags = []
    for table, vol in zip(tables, vols, strict=True):
        kept = table.loc[table["score"] > threshold, ["z", "y", "x"]].to_numpy(np.float64)
        res = match_points(vol.clicks, kept, max_distance=GATE_UM, scale=tuple(vol.voxel_size))
        hit = np.zeros(len(vol.clicks), bool)
        if len(res.pairs):
            hit[res.pairs[:, 0].astype(int)] = True
        flags.append(hit)
    return np.concatenate(flags)


def best_at_levels(tables, vols) -> dict[float, np.ndarray]:
    """Per level, the click flags at the threshold with the best recall at precision >= level
    (:func:`split.test_sweep`, as pr_curves*.tsv; no qualifying threshold: nothing found)."""
    sweep = test_sweep(tables, vols)
    out = {}
    for level in LEVELS:
        ok = [s for s in sweep if s["precision"] >= level]
        if not ok:
            out[level] = np.zeros(sum(len(v.clicks) for v in vols), bool)
            continue
        best = max(ok, key=lambda s: (s["recall"], s["precision"]))
        out[level] = found(tables, vols, best["threshold"])
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 3), round(centre + half, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="/tmp/real_spots_work")
    parser.add_argument("--tag", default="_split", help="output paired<tag>.tsv")
    parser.add_argument(
        "--runs",
        default="split",
        help="run folder under --workdir (the LoG is read from split/); grid_runs: resample.py",
    )
    args = parser.parse_args()
    vols = [data.load(s, c) for s, c in data.TEST]
    workdir = Path(args.workdir)
    files = [workdir / "split" / "LoG.pkl", *sorted((workdir / args.runs).glob("*.pkl"))]
    runs = {r["method"]: r for r in (pd.read_pickle(f) for f in files)}
    flags = {name: best_at_levels(r["tests"], vols) for name, r in runs.items()}
    rows = []
    for name, per_level in flags.items():
        for level, hit in per_level.items():
            ref = flags[REFERENCE][level]
            only_m, only_ref = int((hit & ~ref).sum()), int((ref & ~hit).sum())
            p = binomtest(only_m, only_m + only_ref).pvalue if only_m + only_ref else 1.0
            low, high = wilson(int(hit.sum()), len(hit))
            rows.append(
                {"method": name, "precision_level": level, "found": int(hit.sum()),
                 "clicks": len(hit), "recall_ci95": f"{low}-{high}", "only_method": only_m,
                 "only_log": only_ref, "mcnemar_p": round(float(p), 3)}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(data.HERE / f"paired{args.tag}.tsv", sep="\t", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
