"""Which threshold of a detection sweep a tuning keeps (learned detectors and the LoG alike)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def choose_threshold_row(
    table: pd.DataFrame,
    true_detections: pd.Series,
    detections: pd.Series,
    matched: pd.Series,
    positives: pd.Series,
) -> int:
    """Row (of a sweep sorted by threshold) whose threshold a tuning keeps.

    The best F1 is resolved to one detection: rows whose F1 is less than the smaller F1 drop
    of one more false positive or one more missed point below the best are ties, which the
    annotations cannot tell apart. Among the ties the row with the highest precision (then
    the highest F1, then the middle one of equal rows) wins: precision is counted on the few
    detections inside annotated volumes or regions, while a lower threshold adds false
    positives wherever else the detector runs (benchmarks/real_spots: a tie broken towards
    the lower threshold tripled the detections on held-out volumes). The four series are the
    counts behind each row's precision (true / all detections counted) and recall (matched /
    all points).
    """
    f1 = table["f1"].to_numpy(float)
    best = int(np.argmax(f1))
    tp_p, n_det = float(true_detections.iloc[best]), float(detections.iloc[best])
    tp_r, n_pos = float(matched.iloc[best]), float(positives.iloc[best])

    def score(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    precision = tp_p / n_det if n_det else 1.0
    recall = tp_r / n_pos if n_pos else 0.0
    drops = [f1[best] - score(tp_p / (n_det + 1), recall)]
    if n_pos and tp_r >= 1:
        drops.append(f1[best] - score(precision, (tp_r - 1) / n_pos))
    tolerance = max(0.0, min(drops))
    ties = np.flatnonzero((f1 >= f1[best]) | (f1 > f1[best] - tolerance))
    precision = table["precision"].to_numpy(float)[ties]
    ties = ties[np.isclose(precision, precision.max())]
    ties = ties[np.isclose(f1[ties], f1[ties].max())]
    return int(ties[(len(ties) - 1) // 2])  # equal counts: the middle of the plateau
