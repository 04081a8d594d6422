"""Segmentation metrics: PCC, IoU, instance matching (AP@0.5:0.95, F1), SEG, MUCov, counts.

All label images are ZYX integer arrays (0 = background, any positive ids, not necessarily
consecutive); numpy or Zarr arrays are read in z-slabs, so a volume is never held twice.
Every instance metric is computed from ONE contingency table (:func:`overlap`): the voxel counts
of all (gt id, pred id) pairs that overlap (``np.unique`` of paired ids), the object sizes and
centroids — no per-object loop over the volume.

Definitions (``G`` ground-truth objects, ``P`` predicted objects, ``IoU(g, p) = |g∩p|/|g∪p|``):

* PCC (ISL): Pearson ``r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²)`` (NaN for a constant image).
* IoU / Jaccard of binary masks ``|A∩B| / |A∪B|`` (1 when both are empty).
* Matching at threshold t: one-to-one pairs with IoU ≥ t maximising the number of pairs, then
  the summed IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``, per connected component of
  the candidate graph; for t > 0.5 the pairs are unique anyway). TP = #pairs, FP = |P| − TP,
  FN = |G| − TP.
* "AP" at t, the StarDist / Data Science Bowl 2018 convention (there called average precision,
  in StarDist "accuracy"): ``AP_t = TP / (TP + FP + FN)``; ``AP@0.5:0.95`` is its mean over
  t = 0.50, 0.55, …, 0.95. Both sets empty → 1.
* F1 at t = 0.5: ``2TP / (2TP + FP + FN)`` (with P and R; empty-set conventions of
  :func:`fewlabel.metrics.detection.prf`).
* SEG (Cell Tracking Challenge): for each GT object the IoU with the predicted object covering
  more than half of it (``|g∩p| > 0.5 |g|``), 0 if none; mean over GT objects (NaN if no GT).
* MUCov: mean over GT objects of the best IoU with any predicted object (NaN if no GT).
* Counting errors over images: MAE ``mean|n̂−n|``, median absolute error, mean signed error
  and mean percentage error ``100 · mean((n̂ − n)/n)`` (images with n = 0 skipped).
* Centre-distance detection: instance centroids matched one-to-one within a gate in µm by
  :func:`fewlabel.metrics.detection.match_points` → P, R, F1, RMSE (µm).
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

from fewlabel.metrics.detection import match_points, prf

log = logging.getLogger(__name__)

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_SHIFT = np.uint64(32)


def _tag(t: float) -> str:
    return f"{int(round(t * 100)):02d}"


def _slabs(shape: Sequence[int], slab: int | None, array: Any) -> list[slice]:
    if slab is None:
        chunks = getattr(array, "chunks", None)
        slab = int(chunks[0]) if chunks is not None else 32
    slab = max(1, int(slab))
    return [slice(z, min(z + slab, shape[0])) for z in range(0, shape[0], slab)]


def _as3d(array: Any) -> Any:
    if getattr(array, "ndim", None) == 2:
        return np.asarray(array)[None]
    return array


# --------------------------------------------------------------------------- PCC, IoU
@dataclass
class PearsonAccumulator:
    """Streaming Pearson correlation (Chan et al. pairwise merge of per-slab moments, float64)."""

    n: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    m2x: float = 0.0
    m2y: float = 0.0
    cxy: float = 0.0

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        nb = x.size
        if nb == 0:
            return
        mx, my = float(x.mean()), float(y.mean())
        dx, dy = x - mx, y - my
        m2x, m2y, cxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        n = self.n + nb
        delta_x, delta_y = mx - self.mean_x, my - self.mean_y
        f = self.n * nb / n
        self.m2x += m2x + delta_x * delta_x * f
        self.m2y += m2y + delta_y * delta_y * f
        self.cxy += cxy + delta_x * delta_y * f
        self.mean_x += delta_x * nb / n
        self.mean_y += delta_y * nb / n
        self.n = n

    @property
    def value(self) -> float:
        denom = math.sqrt(self.m2x * self.m2y)
        return self.cxy / denom if denom > 0 else float("nan")


def pcc(pred: Any, target: Any, mask: Any | None = None, *, slab: int | None = None) -> float:
    """Pearson correlation coefficient between a predicted and a target image (ISL metric).

    ``mask`` (optional, same shape) restricts the voxels. Arrays may be Zarr (read in z-slabs).
    """
    pred, target = _as3d(pred), _as3d(target)
    mask = None if mask is None else _as3d(mask)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    acc = PearsonAccumulator()
    for zs in _slabs(pred.shape, slab, pred):
        x, y = np.asarray(pred[zs]), np.asarray(target[zs])
        if mask is not None:
            keep = np.asarray(mask[zs]).astype(bool)
            x, y = x[keep], y[keep]
        acc.update(x, y)
    return acc.value


def jaccard(gt_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """IoU / Jaccard index ``|A∩B| / |A∪B|`` of two binary masks (1.0 when both are empty)."""
    a = np.asarray(gt_mask).astype(bool)
    b = np.asarray(pred_mask).astype(bool)
    union = int(np.count_nonzero(a | b))
    return float(np.count_nonzero(a & b)) / union if union else 1.0


# --------------------------------------------------------------------------- contingency
@dataclass(frozen=True)
class Overlap:
    """Contingency table of two label images.

    ``gt_ids`` / ``pred_ids`` are the object ids (sorted), ``gt_sizes`` / ``pred_sizes`` their
    voxel counts, ``gt_centroids`` / ``pred_centroids`` their centroids (z, y, x voxels);
    ``pair_gt`` / ``pair_pred`` index into those arrays for every overlapping pair and
    ``pair_inter`` is the pair's intersection in voxels. ``fg_inter`` / ``fg_union`` are the
    foreground (label > 0) intersection and union.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray
    gt_centroids: np.ndarray = field(repr=False)
    pred_centroids: np.ndarray = field(repr=False)
    pair_gt: np.ndarray = field(repr=False)
    pair_pred: np.ndarray = field(repr=False)
    pair_inter: np.ndarray = field(repr=False)
    fg_inter: int = 0
    fg_union: int = 0

    @property
    def pair_iou(self) -> np.ndarray:
        """IoU of every overlapping pair: ``inter / (|g| + |p| − inter)``."""
        inter = self.pair_inter.astype(np.float64)
        return inter / (self.gt_sizes[self.pair_gt] + self.pred_sizes[self.pair_pred] - inter)

    def iou_matrix(self) -> np.ndarray:
        """Dense ``(n_gt, n_pred)`` IoU matrix (for small images and tests)."""
        out = np.zeros((len(self.gt_ids), len(self.pred_ids)))
        out[self.pair_gt, self.pair_pred] = self.pair_iou
        return out


def _reduce_objects(ids: list[np.ndarray], sums: list[np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    all_ids = np.concatenate([np.zeros(0, np.uint64), *ids])
    all_sums = np.concatenate([np.zeros((0, 4)), *sums])
    uniq, inverse = np.unique(all_ids, return_inverse=True)
    total = np.zeros((len(uniq), 4))
    np.add.at(total, inverse, all_sums)
    sizes = total[:, 0].astype(np.int64)
    centroids = total[:, 1:] / np.maximum(sizes, 1)[:, None]
    return uniq, sizes, centroids


def _object_sums(labels: np.ndarray, z0: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids present in a slab and, per id, [count, Σz, Σy, Σx]."""
    nz = np.nonzero(labels)
    values = labels[nz].astype(np.uint64)
    uniq, inverse = np.unique(values, return_inverse=True)
    sums = np.zeros((len(uniq), 4))
    sums[:, 0] = np.bincount(inverse, minlength=len(uniq))
    for axis in range(3):
        coord = nz[axis].astype(np.float64) + (z0 if axis == 0 else 0)
        sums[:, axis + 1] = np.bincount(inverse, weights=coord, minlength=len(uniq))
    return uniq, sums


def overlap(gt_labels: Any, pred_labels: Any, *, slab: int | None = None) -> Overlap:
    """Contingency table of two ZYX label images (numpy or Zarr), computed in z-slabs.

    Pairs are found with ``np.unique`` of the combined key ``gt_id · 2³² + pred_id`` over the
    voxels where both are labelled; sizes and centroids with ``np.bincount``.
    """
    gt_labels, pred_labels = _as3d(gt_labels), _as3d(pred_labels)
    if tuple(gt_labels.shape) != tuple(pred_labels.shape):
        raise ValueError(f"gt {tuple(gt_labels.shape)} and pred {tuple(pred_labels.shape)} "
                         "label images differ in shape")
    g_ids: list[np.ndarray] = []
    g_sums: list[np.ndarray] = []
    p_ids: list[np.ndarray] = []
    p_sums: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    fg_inter = fg_union = 0
    for zs in _slabs(gt_labels.shape, slab, gt_labels):
        g = np.asarray(gt_labels[zs])
        p = np.asarray(pred_labels[zs])
        for arr in (g, p):
            if arr.dtype.kind not in "uib" or (arr.size and (
                    int(arr.min()) < 0 or int(arr.max()) >= 2**32)):
                raise ValueError("label images must hold integers in [0, 2**32)")
        ids, sums = _object_sums(g, zs.start)
        g_ids.append(ids)
        g_sums.append(sums)
        ids, sums = _object_sums(p, zs.start)
        p_ids.append(ids)
        p_sums.append(sums)
        both = (g > 0) & (p > 0)
        fg_inter += int(np.count_nonzero(both))
        fg_union += int(np.count_nonzero((g > 0) | (p > 0)))
        key = (g[both].astype(np.uint64) << _SHIFT) | p[both].astype(np.uint64)
        k, c = np.unique(key, return_counts=True)
        keys.append(k)
        counts.append(c)
    gt_ids, gt_sizes, gt_centroids = _reduce_objects(g_ids, g_sums)
    pred_ids, pred_sizes, pred_centroids = _reduce_objects(p_ids, p_sums)
    all_keys = np.concatenate([np.zeros(0, np.uint64), *keys])
    all_counts = np.concatenate([np.zeros(0, np.int64), *counts])
    uniq, inverse = np.unique(all_keys, return_inverse=True)
    inter = np.bincount(inverse, weights=all_counts, minlength=len(uniq)).astype(np.int64)
    pair_gt = np.searchsorted(gt_ids, uniq >> _SHIFT)
    pair_pred = np.searchsorted(pred_ids, uniq & np.uint64(0xFFFFFFFF))
    return Overlap(gt_ids=gt_ids, pred_ids=pred_ids, gt_sizes=gt_sizes, pred_sizes=pred_sizes,
                   gt_centroids=gt_centroids, pred_centroids=pred_centroids,
                   pair_gt=pair_gt.astype(np.int64), pair_pred=pair_pred.astype(np.int64),
                   pair_inter=inter, fg_inter=fg_inter, fg_union=fg_union)


# --------------------------------------------------------------------------- matching
def match_instances(ov: Overlap, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching at IoU ≥ ``threshold``: ``(gt_index, pred_index, iou)`` arrays.

    Maximises the number of pairs, then their summed IoU (Hungarian per connected component of
    the candidate graph; components are single pairs for ``threshold > 0.5``).
    """
    iou = ov.pair_iou
    cand = np.flatnonzero(iou >= threshold)
    if len(cand) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    rows, cols, vals = ov.pair_gt[cand], ov.pair_pred[cand], iou[cand]
    n, m = len(ov.gt_ids), len(ov.pred_ids)
    graph = coo_matrix((np.ones(len(cand)), (rows, cols + n)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    comp_of = comp[rows]
    order = np.argsort(comp_of, kind="stable")
    bounds = np.flatnonzero(np.diff(comp_of[order])) + 1
    out_g: list[int] = []
    out_p: list[int] = []
    out_v: list[float] = []
    for chunk in np.split(order, bounds):
        if len(chunk) == 1:
            out_g.append(int(rows[chunk[0]]))
            out_p.append(int(cols[chunk[0]]))
            out_v.append(float(vals[chunk[0]]))
            continue
        ug, ri = np.unique(rows[chunk], return_inverse=True)
        up, ci = np.unique(cols[chunk], return_inverse=True)
        k = min(len(ug), len(up))
        ious = np.zeros((len(ug), len(up)))
        ious[ri, ci] = vals[chunk]
        weight = np.zeros_like(ious)
        weight[ri, ci] = 1.0 + vals[chunk] / (k + 1.0)  # #pairs first, then ΣIoU
        r, c = linear_sum_assignment(weight, maximize=True)
        for a, b in zip(r, c, strict=True):
            if weight[a, b] > 0:
                out_g.append(int(ug[a]))
                out_p.append(int(up[b]))
                out_v.append(float(ious[a, b]))
    order_g = np.argsort(out_g, kind="stable")
    return (np.asarray(out_g, np.int64)[order_g], np.asarray(out_p, np.int64)[order_g],
            np.asarray(out_v, np.float64)[order_g])


def instance_scores(ov: Overlap, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """TP/FP/FN and ``AP_t = TP/(TP+FP+FN)`` per threshold, ``ap_mean`` (AP@0.5:0.95), F1@0.5.

    Keys: ``tp_50, fp_50, fn_50, ap_50, …, ap_95, ap_mean, precision_50, recall_50, f1_50``
    (suffix = threshold × 100). See the module docstring for the definitions.
    """
    n, m = len(ov.gt_ids), len(ov.pred_ids)
    out: dict[str, float] = {}
    aps = []
    for t in thresholds:
        tp = len(match_instances(ov, float(t))[0])
        fp, fn = m - tp, n - tp
        ap = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        tag = _tag(float(t))
        out[f"tp_{tag}"], out[f"fp_{tag}"], out[f"fn_{tag}"] = tp, fp, fn
        out[f"ap_{tag}"] = ap
        aps.append(ap)
    out["ap_mean"] = float(np.mean(aps)) if aps else float("nan")
    tp = len(match_instances(ov, 0.5)[0])
    precision, recall, f1 = prf(tp, m - tp, n - tp)
    out["precision_50"], out["recall_50"], out["f1_50"] = precision, recall, f1
    return out


def seg_score(ov: Overlap) -> float:
    """Cell Tracking Challenge SEG: mean over GT of IoU with the pred covering > 50% of it, else 0."""
    n = len(ov.gt_ids)
    if n == 0:
        return float("nan")
    per_gt = np.zeros(n)
    major = ov.pair_inter * 2 > ov.gt_sizes[ov.pair_gt]
    per_gt[ov.pair_gt[major]] = ov.pair_iou[major]
    return float(per_gt.mean())


def mucov(ov: Overlap) -> float:
    """Mean unweighted coverage: mean over GT objects of the best IoU with any prediction."""
    n = len(ov.gt_ids)
    if n == 0:
        return float("nan")
    best = np.zeros(n)
    np.maximum.at(best, ov.pair_gt, ov.pair_iou)
    return float(best.mean())


def counting_errors(gt_counts: Sequence[float], pred_counts: Sequence[float]) -> dict[str, float]:
    """Counting errors over images: MAE, median absolute error, mean signed error, MPE (%).

    ``mpe_percent = 100 · mean((pred − gt) / gt)`` over images with ``gt > 0`` (signed; NaN if
    none). Empty input → NaN everywhere.
    """
    g = np.asarray(gt_counts, dtype=np.float64).ravel()
    p = np.asarray(pred_counts, dtype=np.float64).ravel()
    if g.shape != p.shape:
        raise ValueError(f"{g.size} ground-truth counts but {p.size} predicted counts")
    if g.size == 0:
        nan = float("nan")
        return {"mae": nan, "median_ae": nan, "mean_error": nan, "mpe_percent": nan}
    err = p - g
    pos = g > 0
    return {"mae": float(np.abs(err).mean()), "median_ae": float(np.median(np.abs(err))),
            "mean_error": float(err.mean()),
            "mpe_percent": float(100.0 * np.mean(err[pos] / g[pos])) if pos.any() else float("nan")}


def equivalent_diameter_um(sizes: np.ndarray, voxel_size: Sequence[float], *,
                           planar: bool) -> np.ndarray:
    """Diameter of the sphere (disc if ``planar``) with each object's volume (area), in µm."""
    vz, vy, vx = (float(v) for v in voxel_size)
    sizes = np.asarray(sizes, np.float64)
    if planar:
        return 2.0 * np.sqrt(sizes * vy * vx / np.pi)
    return 2.0 * np.cbrt(3.0 * sizes * vz * vy * vx / (4.0 * np.pi))


def centre_detection(ov: Overlap, *, voxel_size: Sequence[float],
                     max_distance_um: float) -> dict[str, float]:
    """Detection scores of instance centroids matched within ``max_distance_um`` µm.

    Uses :func:`fewlabel.metrics.detection.match_points` (Hungarian within the gate).
    """
    res = match_points(ov.gt_centroids, ov.pred_centroids, max_distance=float(max_distance_um),
                       scale=voxel_size)
    return {"centre_tp": res.tp, "centre_fp": res.fp, "centre_fn": res.fn,
            "centre_precision": res.precision, "centre_recall": res.recall,
            "centre_f1": res.f1, "centre_rmse_um": res.rmse}


def evaluate_segmentation(
    gt_labels: Any,
    pred_labels: Any,
    *,
    voxel_size: Sequence[float],
    thresholds: Sequence[float] = THRESHOLDS,
    centre_gate_um: float | None = None,
    slab: int | None = None,
) -> dict[str, float]:
    """All instance-segmentation metrics of one image (see the module docstring).

    ``centre_gate_um`` is the centroid matching gate; None → half the median equivalent
    diameter of the GT objects. Returns an ordered dict: n_gt, n_pred, count_error
    (n_pred − n_gt), fg_iou, ap_50 … ap_95, ap_mean, tp/fp/fn per threshold, precision_50,
    recall_50, f1_50, seg, mucov, centre_gate_um, centre_* (tp, fp, fn, precision, recall, f1,
    rmse_um).
    """
    ov = overlap(gt_labels, pred_labels, slab=slab)
    n, m = len(ov.gt_ids), len(ov.pred_ids)
    out: dict[str, float] = {"n_gt": n, "n_pred": m, "count_error": m - n,
                             "fg_iou": ov.fg_inter / ov.fg_union if ov.fg_union else 1.0}
    scores = instance_scores(ov, thresholds)
    out.update({k: v for k, v in scores.items() if k.startswith("ap_")})
    out.update({k: v for k, v in scores.items() if not k.startswith("ap_")})
    out["seg"] = seg_score(ov)
    out["mucov"] = mucov(ov)
    planar = _as3d(gt_labels).shape[0] == 1
    gate = centre_gate_um
    if gate is None:
        gate = (0.5 * float(np.median(equivalent_diameter_um(ov.gt_sizes, voxel_size,
                                                               planar=planar)))
                if n else float("nan"))
    out["centre_gate_um"] = float(gate)
    if math.isfinite(gate) and gate > 0:
        out.update(centre_detection(ov, voxel_size=voxel_size, max_distance_um=gate))
    else:
        precision, recall, f1 = prf(0, m, n)
        out.update({"centre_tp": 0, "centre_fp": m, "centre_fn": n, "centre_precision": precision,
                    "centre_recall": recall, "centre_f1": f1, "centre_rmse_um": float("nan")})
    return out


# --------------------------------------------------------------------------- aggregation
def aggregate_segmentation(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-sample rows + ``ALL`` (pooled) + ``MEAN`` (macro) rows.

    ``ALL``: TP/FP/FN and object counts summed over samples, ``ap_t`` / ``ap_mean`` / F1 from the
    pooled counts (the dataset-level StarDist convention). ``MEAN``: unweighted mean over samples
    of every numeric column, plus the counting errors over samples (``count_mae``,
    ``count_median_ae``, ``count_mean_error``, ``count_mpe_percent`` from n_gt, n_pred).
    """
    if not tables:
        return pd.DataFrame(columns=["sample"])
    per = pd.concat(list(tables), ignore_index=True)
    per["sample"] = per["sample"].astype(str)
    numeric = [c for c in per.columns if c != "sample" and pd.api.types.is_numeric_dtype(per[c])]
    macro: dict[str, Any] = {"sample": "MEAN"}
    for column in numeric:
        values = per[column].to_numpy(np.float64)
        macro[column] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
    pooled: dict[str, Any] = {"sample": "ALL"}
    if {"n_gt", "n_pred"} <= set(per.columns):
        both = per[["n_gt", "n_pred"]].dropna()
        errors = counting_errors(both["n_gt"], both["n_pred"])
        macro.update({f"count_{k}": v for k, v in errors.items()})
        pooled["n_gt"] = float(both["n_gt"].sum())
        pooled["n_pred"] = float(both["n_pred"].sum())
        pooled["count_error"] = pooled["n_pred"] - pooled["n_gt"]
        aps = []
        for tag in sorted(c[3:] for c in per.columns if c.startswith("tp_")):
            cols = [f"tp_{tag}", f"fp_{tag}", f"fn_{tag}"]
            if not set(cols) <= set(per.columns):
                continue
            tp, fp, fn = (float(per[c].sum()) for c in cols)
            pooled.update(dict(zip(cols, (tp, fp, fn), strict=True)))
            pooled[f"ap_{tag}"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
            aps.append(pooled[f"ap_{tag}"])
            if tag == "50":
                (pooled["precision_50"], pooled["recall_50"],
                 pooled["f1_50"]) = prf(int(tp), int(fp), int(fn))
        if aps:
            pooled["ap_mean"] = float(np.mean(aps))
        if {"centre_tp", "centre_fp", "centre_fn"} <= set(per.columns):
            tp, fp, fn = (int(per[c].sum()) for c in ("centre_tp", "centre_fp", "centre_fn"))
            pooled.update({"centre_tp": tp, "centre_fp": fp, "centre_fn": fn})
            (pooled["centre_precision"], pooled["centre_recall"],
             pooled["centre_f1"]) = prf(tp, fp, fn)
    extra = pd.DataFrame([pooled, macro])
    columns = list(per.columns) + [c for c in extra.columns if c not in per.columns]
    return pd.concat([per, extra], ignore_index=True)[columns]


def read_metric_tables(paths: Sequence[str | Path]) -> list[pd.DataFrame]:
    """Read per-sample segmentation metric TSVs (each with a ``sample`` column)."""
    from fewlabel.errors import InputDataError

    frames = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputDataError("metrics table not found.", path=path,
                                 fix="run evaluate-segmentation for this sample first.")
        frame = pd.read_csv(path, sep="\t")
        if "sample" not in frame.columns:
            raise InputDataError("not a segmentation metrics table (no 'sample' column).",
                                 path=path, fix="pass TSVs written by evaluate-segmentation.")
        frames.append(frame)
    samples = pd.concat([f["sample"].astype(str) for f in frames]) if frames else pd.Series([])
    duplicated = sorted(set(samples[samples.duplicated()]))
    if duplicated:
        raise InputDataError(f"sample(s) {duplicated} appear in more than one metrics table.",
                             fix="pass each sample's table once.")
    return frames
