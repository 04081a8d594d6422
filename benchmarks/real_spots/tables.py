"""Markdown tables of the README from results.tsv and pr_curves.tsv (or other files given).

``python benchmarks/real_spots/tables.py [results.tsv pr_curves.tsv]``: per method, the tuned
operating point, then the best recall at precision >= each level (threshold swept on the test,
for comparison only) against the box truth (``precision``) and, where present, against the
lenient truth (``precision_half``, box_spots_half.csv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.875, 1.0)


def recall_at_levels(sweep: pd.DataFrame, column: str = "precision") -> dict[str, float]:
    """Best recall among the threshold sweep's rows with ``column`` >= each of
    :data:`LEVELS` (0 where none), rounded to 3 decimals."""
    out = {}
    for level in LEVELS:
        ok = sweep[sweep[column] >= level]
        out[f"P>={level}"] = round(float(ok["recall"].max()), 3) if len(ok) else 0.0
    return out


def recall_at(curves: pd.DataFrame, column: str) -> pd.DataFrame:
    rows = []
    for name, group in curves.groupby("method", sort=False):
        if group[column].isna().all():  # runs before the lenient truth existed
            continue
        row = {"method": name, **recall_at_levels(group, column)}
        f1 = 2 * group[column] * group["recall"] / (group[column] + group["recall"])
        row["best F1"] = round(float(f1.max()), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    results = pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else HERE / "results.tsv", sep="\t")
    curves = pd.read_csv(sys.argv[2] if len(sys.argv) > 2 else HERE / "pr_curves.tsv", sep="\t")
    cols = ["method", "threshold", "recall", "precision", "f1"]
    if "precision_half" in results:
        cols.append("precision_half")
    print(results[cols].round(3).to_markdown(index=False), "\n")
    print("recall at precision (box truth)\n")
    print(recall_at(curves, "precision").to_markdown(index=False), "\n")
    if "precision_half" in curves:
        print("recall at precision (lenient truth, half the contrast floor)\n")
        print(recall_at(curves, "precision_half").to_markdown(index=False))


if __name__ == "__main__":
    main()
