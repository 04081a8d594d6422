"""What a validation crop from the test's acquisition would choose (a measurement, not a
protocol of the table): from the stored protocol-2 peaks (``split.py`` pickles, no training),
img4 (img4_c0 + img4_c1: 9 clicks, 2 boxes) as validation and img5_c0 + img6_c1 (23 clicks,
2 boxes) as test. Per method: best F1 on img4 and its threshold, the img5/6 scores at that
threshold, and img5/6 recall at precision ≥ each level (sweep). Writes crossval_split.tsv.

``python benchmarks/real_spots/crossval.py --workdir /tmp/spots3/split``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
from run import pooled
from split import tune
from tables import recall_at_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="/tmp/real_spots_work")
    args = parser.parse_args()
    tests = [data.load(s, c) for s, c in data.TEST]
    val_i, test_i = [0, 1], [2, 3]  # img4_c0, img4_c1 | img5_c0, img6_c1
    rows = []
    for f in sorted((Path(args.workdir) / "split").glob("*.pkl")):
        r = pd.read_pickle(f)
        tables = r["tests"]
        vt, vv = [tables[i] for i in val_i], [tests[i] for i in val_i]
        tt, tv = [tables[i] for i in test_i], [tests[i] for i in test_i]
        thr, sweep_val = tune(vt, vv)
        at = pooled(tt, tv, thr)
        row = {
            "method": r["method"], "val_best_f1": sweep_val["f1"].max(), "threshold": thr,
            "test_recall": at["recall"], "test_precision": at["precision"], "test_f1": at["f1"],
        }  # fmt: skip
        grid = sweep_val["threshold"]  # img5/6 swept at the validation's candidates
        row.update(recall_at_levels(pd.DataFrame([pooled(tt, tv, float(t)) for t in grid])))
        rows.append(row)
    out = pd.DataFrame(rows).round(3).sort_values("val_best_f1", ascending=False)
    out.to_csv(data.HERE / "crossval_split.tsv", sep="\t", index=False)
    print(out.to_markdown(index=False))


if __name__ == "__main__":
    main()
