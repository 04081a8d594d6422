"""Detection metrics: one-to-one Hungarian matching within a distance gate, P/R/F1 and RMSE.

Matching (the F1@gate protocol of DM-DetNet3D / SEF3D evaluations): ground-truth and predicted
points are paired one-to-one so that (1) the number of pairs closer than ``max_distance`` is
maximal and (2) among such matchings the summed distance is minimal. Distances are Euclidean
after multiplying coordinates by ``scale`` (the voxel size, for gates in µm). This is solved
with ``scipy.optimize.linear_sum_assignment`` on each connected component of the "within-gate"
graph (candidate pairs from a ``cKDTree``), with pairs beyond the gate given a cost larger than
any feasible sum of real distances, and dropped afterwards — so no dense N×M matrix is built
for a whole volume.

    TP = #pairs,  FP = M - TP,  FN = N - TP,
    precision = TP / (TP + FP),  recall = TP / (TP + FN),  F1 = 2 P R / (P + R),
    RMSE = sqrt(mean(d²)) over the matched pairs (gate units).

A test volume whose points are complete only inside an annotated region (the sheet's
``annotated_region`` on a test row; the other spots were not clicked) is scored on what is
known, as threshold tuning scores partial clicks: TP and FN count every point (recall), FP only
the unmatched predictions inside the region (``pred_scored`` / ``tp_scored``: predictions
inside it, and of them matched), precision = tp_scored / pred_scored; ``scored_in`` says which.

Empty-set conventions: no predictions → precision = 1 (no false positive was made); no ground
truth → recall = 1 (nothing was missed); both empty → P = R = F1 = 1; F1 = 0 whenever exactly
one side is empty (then P·R = 0). RMSE is NaN when there is no pair.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from fewlabel.metrics.thresholds import choose_threshold_row

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "sample",
    "n_gt",
    "n_pred",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "rmse",
    "gate",
    "gate_unit",
    "pred_scored",
    "tp_scored",
    "scored_in",
)
GATE_UNITS = ("voxel", "um")


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_points`.

    ``pairs`` is a float array (K, 3) of ``(gt_idx, pred_idx, dist)`` sorted by gt index;
    ``unmatched_gt`` / ``unmatched_pred`` are index arrays (false negatives / false positives).
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    rmse: float
    pairs: np.ndarray = field(repr=False)
    unmatched_gt: np.ndarray = field(repr=False)
    unmatched_pred: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Scalar fields as a plain dict."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "rmse": self.rmse,
        }


def prf(tp: int, fp: int, fn: int, tp_scored: int | None = None) -> tuple[float, float, float]:
    """Precision, recall, F1 with the empty-set conventions of the module docstring;
    ``tp_scored``: the matched predictions among those scored for precision (default ``tp``)."""
    tp_p = tp if tp_scored is None else tp_scored
    precision = tp_p / (tp_p + fp) if tp_p + fp > 0 else 1.0
    recall = tp / (tp + fn) if tp + fn > 0 else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


def _as_points(points: Any, name: str) -> np.ndarray:
    if isinstance(points, pd.DataFrame):
        points = points[["z", "y", "x"]].to_numpy(float)
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) in z, y, x; got {arr.shape}")
    return arr


def _assign_component(dist: np.ndarray, big: float) -> list[tuple[int, int]]:
    rows, cols = linear_sum_assignment(dist)
    return [(r, c) for r, c in zip(rows, cols, strict=True) if dist[r, c] < big]


def match_points(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    max_distance: float,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
) -> MatchResult:
    """One-to-one Hungarian matching of ``gt`` (N, 3) and ``pred`` (M, 3) points within a gate.

    Coordinates are z, y, x; they are multiplied by ``scale`` before distances are computed, and
    ``max_distance`` and the returned RMSE / pair distances are in those scaled units. Pairs at
    distance ≤ ``max_distance`` count. See the module docstring for the objective and for the
    empty-set conventions.
    """
    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    s = np.asarray([float(v) for v in scale], dtype=np.float64)
    g = _as_points(gt, "gt") * s
    p = _as_points(pred, "pred") * s
    n, m = len(g), len(p)
    pairs: list[tuple[int, int, float]] = []
    if n and m:
        tree_g, tree_p = cKDTree(g), cKDTree(p)
        # structured array (i, j, v) of every pair within the gate (zero distances included)
        near = tree_g.sparse_distance_matrix(tree_p, float(max_distance), output_type="ndarray")
        rows = np.asarray(near["i"], dtype=np.int64)
        cols = np.asarray(near["j"], dtype=np.int64)
        dists = np.asarray(near["v"], dtype=np.float64)
        if len(rows):
            graph = coo_matrix((np.ones(len(rows)), (rows, cols + n)), shape=(n + m, n + m))
            _, labels = connected_components(graph, directed=False)
            comp_of_pair = labels[rows]
            order = np.argsort(comp_of_pair, kind="stable")
            bounds = np.flatnonzero(np.diff(comp_of_pair[order])) + 1
            for chunk in np.split(order, bounds):
                if len(chunk) == 1:  # an isolated pair (the common case): nothing to solve
                    k = int(chunk[0])
                    pairs.append((int(rows[k]), int(cols[k]), float(dists[k])))
                    continue
                cr, cc, cd = rows[chunk], cols[chunk], dists[chunk]
                ug, ri = np.unique(cr, return_inverse=True)
                up, ci = np.unique(cc, return_inverse=True)
                big = float(max_distance) * (min(len(ug), len(up)) + 1) + 1.0
                dist = np.full((len(ug), len(up)), big)
                dist[ri, ci] = cd
                for r, c in _assign_component(dist, big):
                    pairs.append((int(ug[r]), int(up[c]), float(dist[r, c])))
    pairs.sort()
    pair_arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 3)
    tp = len(pairs)
    matched_g = pair_arr[:, 0].astype(int)
    matched_p = pair_arr[:, 1].astype(int)
    unmatched_gt = np.setdiff1d(np.arange(n), matched_g)
    unmatched_pred = np.setdiff1d(np.arange(m), matched_p)
    precision, recall, f1 = prf(tp, m - tp, n - tp)
    rmse = float(np.sqrt(np.mean(pair_arr[:, 2] ** 2))) if tp else float("nan")
    return MatchResult(
        tp=tp,
        fp=m - tp,
        fn=n - tp,
        precision=precision,
        recall=recall,
        f1=f1,
        rmse=rmse,
        pairs=pair_arr,
        unmatched_gt=unmatched_gt,
        unmatched_pred=unmatched_pred,
    )


def sweep_thresholds(
    pred_tables: Sequence[pd.DataFrame],
    gt_points_list: Sequence[np.ndarray],
    *,
    gate: float,
    scales: Sequence[Sequence[float]] | None = None,
    candidates: Sequence[float] | None = None,
    n_candidates: int = 100,
) -> tuple[float, pd.DataFrame]:
    """Pooled (micro) P/R/F1 of score-thresholded detections for each candidate threshold.

    ``pred_tables`` hold detections found at the lowest threshold of interest (columns
    ``z, y, x, score``); keeping rows with ``score > t`` gives the detections at threshold ``t``
    (exact for :func:`fewlabel.detection.peaks.find_peaks`).

    Candidates default to :func:`default_candidates` (just below detection scores); the best
    one (:func:`choose_threshold_row`) is then moved to the middle of its score gap
    — halfway between the lowest kept and the highest dropped score, which keeps the same
    detections with the widest margin — and that value is returned and written in its row.
    Given ``candidates`` are returned as they are.

    Returns ``(best_threshold, table)`` with columns threshold, precision, recall, f1, tp, fp, fn
    (sorted by threshold).
    """
    scales = scales or [(1.0, 1.0, 1.0)] * len(pred_tables)
    scores = (
        np.concatenate([t["score"].to_numpy(float) for t in pred_tables])
        if pred_tables
        else np.zeros(0)
    )
    given = candidates is not None
    if candidates is None:
        candidates = default_candidates(
            scores, sum(len(g) for g in gt_points_list), n_candidates=n_candidates
        )
    rows = []
    for t in sorted(float(c) for c in candidates):
        tp = fp = fn = 0
        for table, gt, sc in zip(pred_tables, gt_points_list, scales, strict=True):
            kept = table.loc[table["score"] > t, ["z", "y", "x"]].to_numpy(float)
            res = match_points(gt, kept, max_distance=gate, scale=sc)
            tp, fp, fn = tp + res.tp, fp + res.fp, fn + res.fn
        precision, recall, f1 = prf(tp, fp, fn)
        rows.append(
            {
                "threshold": t,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("no candidate thresholds given")
    tp = table["tp"]
    best_index = choose_threshold_row(table, tp, tp + table["fp"], tp, tp + table["fn"])
    best = float(table["threshold"].iloc[best_index])
    if not given:
        kept, dropped = scores[scores > best], scores[scores <= best]
        if len(kept) and len(dropped):
            best = float((kept.min() + dropped.max()) / 2.0)
            table.loc[best_index, "threshold"] = best
    return best, table


def default_candidates(scores: np.ndarray, n_gt: int, *, n_candidates: int = 100) -> np.ndarray:
    """Candidate thresholds just below detection scores, dense where #kept ≈ #ground truth.

    With scores sorted in descending order, threshold ``nextafter(score_k, -inf)`` keeps the
    ``k`` best detections. ``k`` runs over ``n_candidates`` values spread evenly on
    ``1..min(M, 4·n_gt + 10)`` (where the F1 optimum lies) plus ``n_candidates // 4`` values
    spread over all ``M`` detections. No detections → ``[0.0]``.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    m = len(scores)
    if m == 0:
        return np.asarray([0.0])
    dense = np.linspace(1, min(m, 4 * int(n_gt) + 10), max(2, int(n_candidates)))
    coarse = np.linspace(1, m, max(2, int(n_candidates) // 4))
    ranks = np.unique(np.round(np.concatenate([dense, coarse])).astype(int))
    return np.unique(np.nextafter(scores[ranks - 1], -np.inf))


def gate_scale(gate_unit: str, voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """The coordinate scale for a gate unit: 1 for 'voxel', the voxel size (z, y, x) for 'um'."""
    if gate_unit == "voxel":
        return (1.0, 1.0, 1.0)
    if gate_unit == "um":
        vs = tuple(float(v) for v in voxel_size)
        if len(vs) != 3 or min(vs) <= 0:
            raise ValueError(f"voxel_size must be 3 positive numbers, got {voxel_size!r}")
        return vs  # type: ignore[return-value]
    raise ValueError(f"gate_unit must be one of {GATE_UNITS}, got {gate_unit!r}")


def evaluate_sample(
    gt_csv: str | Path,
    pred_csv: str | Path,
    *,
    sample: str,
    gate: float,
    gate_unit: str = "voxel",
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    output: str | Path | None = None,
    matches: str | Path | None = None,
    region: np.ndarray | None = None,
) -> dict[str, Any]:
    """Match one sample's predicted points to its ground truth; optionally write TSV + matches CSV.

    Returns the metrics row (``METRIC_COLUMNS``). ``output`` gets a one-row TSV; ``matches`` a CSV
    ``status, gt_index, pred_index, distance, gt_z, gt_y, gt_x, pred_z, pred_y, pred_x`` with
    status ``tp`` for pairs, ``fn`` for unmatched ground truth (pred_index = -1) and ``fp`` for
    unmatched predictions (gt_index = -1). Both files are written atomically. ``region``: the
    boolean mask where the ground truth is complete (None: everywhere); unmatched predictions
    outside it are ``unscored``, not ``fp`` (module docstring).
    """
    from fewlabel.errors import ConfigError
    from fewlabel.io import read_points_csv
    from fewlabel.metrics.tables import write_matches, write_tsv

    if gate_unit not in GATE_UNITS:
        raise ConfigError(
            f"gate_unit '{gate_unit}' is not one of {list(GATE_UNITS)}.",
            sample=sample,
            fix="set evaluation gate_unit to 'voxel' or 'um'.",
        )
    if not (isinstance(gate, (int, float)) and gate > 0 and math.isfinite(gate)):
        raise ConfigError(
            f"gate {gate!r} must be a positive number.",
            sample=sample,
            fix="set the detection evaluation gate, e.g. 3 (voxels) or 2.0 (µm).",
        )
    gt = read_points_csv(gt_csv, sample=sample, allow_empty=True)
    pred = read_points_csv(pred_csv, sample=sample, allow_empty=True, drop_duplicates=False)
    g = gt[["z", "y", "x"]].to_numpy(float)
    p = pred[["z", "y", "x"]].to_numpy(float)
    res = match_points(g, p, max_distance=float(gate), scale=gate_scale(gate_unit, voxel_size))
    scored = np.ones(len(p), dtype=bool) if region is None else points_in_mask(region, p)
    matched = np.zeros(len(p), dtype=bool)
    matched[res.pairs[:, 1].astype(int)] = True
    tp_scored, pred_scored = int((matched & scored).sum()), int(scored.sum())
    fp = pred_scored - tp_scored
    precision, recall, f1 = prf(res.tp, fp, res.fn, tp_scored)
    row = {
        "sample": sample,
        "n_gt": len(g),
        "n_pred": len(p),
        "tp": res.tp,
        "fp": fp,
        "fn": res.fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "rmse": res.rmse,
        "gate": float(gate),
        "gate_unit": gate_unit,
        "pred_scored": pred_scored,
        "tp_scored": tp_scored,
        "scored_in": "volume" if region is None else "annotated_region",
    }
    log.info(
        "sample %s: n_gt=%d n_pred=%d tp=%d P=%.3f R=%.3f F1=%.3f RMSE=%.3g %s%s",
        sample,
        len(g),
        len(p),
        res.tp,
        precision,
        recall,
        f1,
        res.rmse,
        gate_unit,
        ""
        if region is None
        else f" (precision inside the annotated region: {pred_scored} of {len(p)} predictions "
        "scored; the others lie where not every spot is annotated)",
    )
    if output is not None:
        write_tsv(pd.DataFrame([row], columns=list(METRIC_COLUMNS)), output)
    if matches is not None:
        write_matches(res, g, p, matches, scored=scored)
    return row


def points_in_mask(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each point's nearest voxel lies in ``mask`` (points clipped to its shape): the
    predictions a fully annotated region scores (here and in threshold tuning,
    :func:`fewlabel.detection.density.partial.known_counts`)."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    idx = np.clip(np.rint(points).astype(int), 0, np.asarray(mask.shape) - 1)
    return mask[idx[:, 0], idx[:, 1], idx[:, 2]]
