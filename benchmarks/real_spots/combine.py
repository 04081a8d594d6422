"""results.tsv / pr_curves.tsv / pr_curves.png: the current default configuration of each
method plus the normalisation ablations, from the two runs (see README.md).

Default configuration: LoG with ``background`` (results_background.tsv, this run); DM-DetNet3D
and PU with ``percentile`` (results_before_percentile.tsv, the previous run: same code path).
Ablations: the other run's rows, the method name tagged with its normalisation.
``python benchmarks/real_spots/combine.py`` (seconds; no training).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import run

DEFAULT_FROM_BACKGROUND = ("LoG",)  # methods whose default normalisation is background


def main() -> None:
    parts, curves = [], []
    for tag in ("background", "before_percentile"):
        rows = pd.read_csv(data.HERE / f"results_{tag}.tsv", sep="\t")
        curve = pd.read_csv(data.HERE / f"pr_curves_{tag}.tsv", sep="\t")
        mode = "background" if tag == "background" else "percentile"
        default = rows["method"].isin(DEFAULT_FROM_BACKGROUND) == (mode == "background")
        names = {m: m if d else f"{m} [{mode}]" for m, d in zip(rows["method"], default)}
        rows = rows.assign(method=rows["method"].map(names), normalisation=mode, default=default)
        parts.append(rows)
        curves.append(curve.assign(method=curve["method"].map(names)))
    table = pd.concat(parts).sort_values("default", ascending=False, kind="stable")
    curve = pd.concat(curves)
    table.to_csv(data.HERE / "results.tsv", sep="\t", index=False)
    curve.to_csv(data.HERE / "pr_curves.tsv", sep="\t", index=False)
    run._pictures({}, [], curve, table, with_detections=False)


if __name__ == "__main__":
    main()
