"""Segmentation metrics of one image and over images: PCC, instance metrics, counts, tables.

All label images are ZYX integer arrays (0 = background, any positive ids, not necessarily
consecutive); numpy or Zarr arrays are read in z-slabs, so a volume is never held twice. The
instance metrics (IoU matching, AP@0.5:0.95, F1, SEG, MUCov) come from one contingency table,
:mod:`fewlabel.metrics.matching` (definitions there); :func:`evaluate_segmentation` gathers them,
:func:`evaluate_sample` computes one sample's row from its OME-Zarr files.

Definitions:

* PCC (ISL): Pearson ``r = Σ(x−x̄)(y−ȳ) / sqrt(Σ(x−x̄)² Σ(y−ȳ)²)`` (NaN for a constant image).
* Counting errors over images: MAE ``mean|n̂−n|``, median absolute error, mean signed error
  and mean percentage error ``100 · mean((n̂ − n)/n)`` (images with n = 0 skipped).
* Centre-distance detection: instance centroids matched one-to-one within a gate in µm by
  :func:`fewlabel.metrics.detection.match_points` → P, R, F1, RMSE (µm).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.metrics.detection import match_points, prf
from fewlabel.metrics.matching import (
    THRESHOLDS,
    Overlap,
    as_3d,
    instance_scores,
    mucov,
    overlap,
    seg_score,
    z_slabs,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- PCC
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
    pred, target = as_3d(pred), as_3d(target)
    mask = None if mask is None else as_3d(mask)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    acc = PearsonAccumulator()
    for zs in z_slabs(pred.shape, slab, pred):
        x, y = np.asarray(pred[zs]), np.asarray(target[zs])
        if mask is not None:
            keep = np.asarray(mask[zs]).astype(bool)
            x, y = x[keep], y[keep]
        acc.update(x, y)
    return acc.value


# --------------------------------------------------------------------------- counts, one image
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
    return {
        "mae": float(np.abs(err).mean()),
        "median_ae": float(np.median(np.abs(err))),
        "mean_error": float(err.mean()),
        "mpe_percent": float(100.0 * np.mean(err[pos] / g[pos])) if pos.any() else float("nan"),
    }


def equivalent_diameter_um(
    sizes: np.ndarray, voxel_size: Sequence[float], *, planar: bool
) -> np.ndarray:
    """Diameter of the sphere (disc if ``planar``) with each object's volume (area), in µm."""
    vz, vy, vx = (float(v) for v in voxel_size)
    sizes = np.asarray(sizes, np.float64)
    if planar:
        return 2.0 * np.sqrt(sizes * vy * vx / np.pi)
    return 2.0 * np.cbrt(3.0 * sizes * vz * vy * vx / (4.0 * np.pi))


def centre_detection(
    ov: Overlap, *, voxel_size: Sequence[float], max_distance_um: float
) -> dict[str, float]:
    """Detection scores of instance centroids matched within ``max_distance_um`` µm.

    Uses :func:`fewlabel.metrics.detection.match_points` (Hungarian within the gate).
    """
    res = match_points(
        ov.gt_centroids, ov.pred_centroids, max_distance=float(max_distance_um), scale=voxel_size
    )
    return {
        "centre_tp": res.tp,
        "centre_fp": res.fp,
        "centre_fn": res.fn,
        "centre_precision": res.precision,
        "centre_recall": res.recall,
        "centre_f1": res.f1,
        "centre_rmse_um": res.rmse,
    }


def evaluate_segmentation(
    gt_labels: Any,
    pred_labels: Any,
    *,
    voxel_size: Sequence[float],
    thresholds: Sequence[float] = THRESHOLDS,
    centre_gate_um: float | None = None,
    slab: int | None = None,
) -> dict[str, float]:
    """All instance-segmentation metrics of one image (see :mod:`fewlabel.metrics.matching`).

    ``centre_gate_um`` is the centroid matching gate; None → half the median equivalent
    diameter of the GT objects. Returns an ordered dict: n_gt, n_pred, count_error
    (n_pred − n_gt), fg_iou, ap_50 … ap_95, ap_mean, tp/fp/fn per threshold, precision_50,
    recall_50, f1_50, seg, mucov, the :data:`fewlabel.metrics.tables.POOLING_COLUMNS`
    (foreground intersection and union in voxels, SEG and MUCov summed over GT objects),
    centre_gate_um, centre_* (tp, fp, fn, precision, recall, f1, rmse_um).
    """
    ov = overlap(gt_labels, pred_labels, slab=slab)
    n, m = len(ov.gt_ids), len(ov.pred_ids)
    out: dict[str, float] = {
        "n_gt": n,
        "n_pred": m,
        "count_error": m - n,
        "fg_iou": ov.fg_inter / ov.fg_union if ov.fg_union else 1.0,
    }
    scores = instance_scores(ov, thresholds)
    out.update({k: v for k, v in scores.items() if k.startswith("ap_")})
    out.update({k: v for k, v in scores.items() if not k.startswith("ap_")})
    out["seg"] = seg_score(ov)
    out["mucov"] = mucov(ov)
    # sums and counts behind fg_iou / SEG / MUCov, so the pooled ALL row can be computed
    out["fg_intersection"] = int(ov.fg_inter)
    out["fg_union"] = int(ov.fg_union)
    out["seg_sum"] = out["seg"] * n if n else 0.0
    out["mucov_sum"] = out["mucov"] * n if n else 0.0
    planar = as_3d(gt_labels).shape[0] == 1
    gate = centre_gate_um
    if gate is None:
        gate = (
            0.5 * float(np.median(equivalent_diameter_um(ov.gt_sizes, voxel_size, planar=planar)))
            if n
            else float("nan")
        )
    out["centre_gate_um"] = float(gate)
    if math.isfinite(gate) and gate > 0:
        out.update(centre_detection(ov, voxel_size=voxel_size, max_distance_um=gate))
    else:
        precision, recall, f1 = prf(0, m, n)
        out.update(
            {
                "centre_tp": 0,
                "centre_fp": m,
                "centre_fn": n,
                "centre_precision": precision,
                "centre_recall": recall,
                "centre_f1": f1,
                "centre_rmse_um": float("nan"),
            }
        )
    return out


# --------------------------------------------------------------------------- one sample's files
def open_labels(path: str | Path, *, sample: str | None = None) -> tuple[Any, Any]:
    """An instance label OME-Zarr as ``(volume, zyx)``: ZYX, or CZYX with one channel, with
    integer ids (InputDataError otherwise); ``zyx`` reads lazily."""
    from fewlabel.errors import InputDataError
    from fewlabel.io import open_ome_zarr, zyx_view

    volume = open_ome_zarr(path, sample=sample)
    shape = volume.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[0] == 1)):
        raise InputDataError(
            f"label image has shape {shape}; expected ZYX.",
            sample=sample,
            path=path,
            fix="pass an instance label OME-Zarr.",
        )
    if volume.array.dtype.kind not in "uib":
        raise InputDataError(
            f"label image has non-integer dtype {volume.array.dtype}.",
            sample=sample,
            path=path,
            fix="pass integer instance labels.",
        )
    return volume, zyx_view(volume.array)


def open_fluorescence(path: str | Path, *, sample: str | None = None, channel: int = 0) -> Any:
    """A fluorescence OME-Zarr as a lazy ZYX array: the image itself when ZYX, channel
    ``channel`` when CZYX (InputDataError when it has no such channel)."""
    from fewlabel.errors import InputDataError
    from fewlabel.io import open_ome_zarr, zyx_view

    volume = open_ome_zarr(path, sample=sample)
    shape = volume.shape
    if len(shape) == 3 or (len(shape) == 4 and 0 <= channel < shape[0]):
        return zyx_view(volume.array, channel)
    raise InputDataError(
        f"fluorescence image has shape {shape}; expected ZYX or CZYX with channel {channel}.",
        sample=sample,
        path=path,
        fix="check fluo_channel in the evaluation parameters.",
    )


def evaluate_sample(
    sample: str,
    *,
    labels: tuple[str | Path, str | Path] | None = None,
    fluorescence: tuple[str | Path, str | Path] | None = None,
    centre_gate_um: float | None = None,
    fluo_channel: int = 0,
) -> dict[str, Any]:
    """One metrics row of one sample from its OME-Zarr files.

    ``labels = (gt, pred)``: :func:`evaluate_segmentation` of the predicted instance labels
    against the ground truth, at the GT's voxel size (a warning when the prediction's differs).
    ``fluorescence = (pred, target)``: the ISL prediction's :func:`pcc` (column ``pcc``), on
    channel ``fluo_channel`` of CZYX images. InputDataError when a pair differs in shape.
    """
    from fewlabel.errors import InputDataError

    row: dict[str, Any] = {"sample": sample}
    if labels is not None:
        gt_volume, gt = open_labels(labels[0], sample=sample)
        pred_volume, pred = open_labels(labels[1], sample=sample)
        if tuple(gt.shape) != tuple(pred.shape):
            raise InputDataError(
                f"predicted labels {tuple(pred.shape)} and ground truth "
                f"{tuple(gt.shape)} differ in shape.",
                sample=sample,
                path=labels[1],
                fix="predict on the same volume as the GT.",
            )
        if not np.allclose(gt_volume.voxel_size, pred_volume.voxel_size, rtol=1e-3):
            log.warning(
                "sample %s: voxel sizes differ (gt %s, pred %s); using the GT's",
                sample,
                gt_volume.voxel_size,
                pred_volume.voxel_size,
            )
        row.update(
            evaluate_segmentation(
                gt, pred, voxel_size=gt_volume.voxel_size, centre_gate_um=centre_gate_um
            )
        )
        log.info(
            "sample %s: n_gt=%d n_pred=%d AP@0.5:0.95=%.3f F1@0.5=%.3f SEG=%.3f",
            sample,
            row["n_gt"],
            row["n_pred"],
            row["ap_mean"],
            row["f1_50"],
            row["seg"],
        )
    if fluorescence is not None:
        x = open_fluorescence(fluorescence[0], sample=sample, channel=fluo_channel)
        y = open_fluorescence(fluorescence[1], sample=sample, channel=fluo_channel)
        if tuple(x.shape) != tuple(y.shape):
            raise InputDataError(
                f"predicted fluorescence {tuple(x.shape)} and target "
                f"{tuple(y.shape)} differ in shape.",
                sample=sample,
                path=fluorescence[0],
            )
        row["pcc"] = pcc(x, y)
        log.info("sample %s: PCC=%.4f", sample, row["pcc"])
    return row
