"""Instance matching of two label images: contingency table, IoU matching, AP/F1, SEG, MUCov.

Label images are ZYX integer arrays (0 = background, any positive ids, not necessarily
consecutive); numpy or Zarr arrays are read in z-slabs, so a volume is never held twice.
Every instance metric is computed from ONE contingency table (:func:`overlap`): the voxel counts
of all (gt id, pred id) pairs that overlap (``np.unique`` of paired ids), the object sizes and
centroids — no per-object loop over the volume.

Definitions (``G`` ground-truth objects, ``P`` predicted objects, ``IoU(g, p) = |g∩p|/|g∪p|``):

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fewlabel.metrics.detection import prf

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_SHIFT = np.uint64(32)


def _tag(t: float) -> str:
    return f"{int(round(t * 100)):02d}"


def z_slabs(shape: Sequence[int], slab: int | None, array: Any) -> list[slice]:
    """z ranges of ``slab`` planes (default: the array's z chunk, else 32) covering the volume."""
    if slab is None:
        chunks = getattr(array, "chunks", None)
        slab = int(chunks[0]) if chunks is not None else 32
    slab = max(1, int(slab))
    return [slice(z, min(z + slab, shape[0])) for z in range(0, shape[0], slab)]


def as_3d(array: Any) -> Any:
    """A 2D (YX) array as ZYX with Z = 1; other arrays unchanged (Zarr stays lazy)."""
    if getattr(array, "ndim", None) == 2:
        return np.asarray(array)[None]
    return array


# --------------------------------------------------------------------------- IoU
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


def _reduce_objects(
    ids: list[np.ndarray], sums: list[np.ndarray]
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
    gt_labels, pred_labels = as_3d(gt_labels), as_3d(pred_labels)
    if tuple(gt_labels.shape) != tuple(pred_labels.shape):
        raise ValueError(
            f"gt {tuple(gt_labels.shape)} and pred {tuple(pred_labels.shape)} "
            "label images differ in shape"
        )
    g_ids: list[np.ndarray] = []
    g_sums: list[np.ndarray] = []
    p_ids: list[np.ndarray] = []
    p_sums: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    fg_inter = fg_union = 0
    for zs in z_slabs(gt_labels.shape, slab, gt_labels):
        g = np.asarray(gt_labels[zs])
        p = np.asarray(pred_labels[zs])
        for arr in (g, p):
            if arr.dtype.kind not in "uib" or (
                arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**32)
            ):
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
    return Overlap(
        gt_ids=gt_ids,
        pred_ids=pred_ids,
        gt_sizes=gt_sizes,
        pred_sizes=pred_sizes,
        gt_centroids=gt_centroids,
        pred_centroids=pred_centroids,
        pair_gt=pair_gt.astype(np.int64),
        pair_pred=pair_pred.astype(np.int64),
        pair_inter=inter,
        fg_inter=fg_inter,
        fg_union=fg_union,
    )


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
    return (
        np.asarray(out_g, np.int64)[order_g],
        np.asarray(out_p, np.int64)[order_g],
        np.asarray(out_v, np.float64)[order_g],
    )


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
    """Cell Tracking Challenge SEG: mean over GT of IoU with the pred covering > 50%, else 0."""
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
