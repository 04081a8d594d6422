"""Calibration of the segmenter's prediction-time settings on the validation images.

With the best weights, :func:`tune_threshold` picks the mask threshold that maximises the
pooled validation Dice and :func:`tune_h` the h-maxima height that maximises the instance
F1@0.5; both are stored in the model folder's thresholds.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from fewlabel.segmentation.distance.annotated import AnnotatedImage

log = logging.getLogger(__name__)


def dice_counts(prob: torch.Tensor, mask: torch.Tensor, threshold: float) -> tuple[float, float]:
    """(2·|P∩G|, |P| + |G|) of the binarised prediction (pooled Dice numerator/denominator)."""
    pred = prob > threshold
    gt = mask > 0.5
    return float(2 * (pred & gt).sum()), float(pred.sum() + gt.sum())


H_GRID = (0.02, 0.05, 0.1, 0.2, 0.3)  # h-maxima heights tried on the validation images


def tune_h(
    model: nn.Module,
    whole: Sequence[tuple[torch.Tensor, AnnotatedImage]],
    mask_threshold: float,
    tuned_on: str,
) -> dict[str, Any]:
    """h-maxima height (from ``H_GRID``) maximising the pooled instance F1@0.5 on validation.

    Runs the instance step (h-maxima + watershed,
    :func:`fewlabel.segmentation.instances.split_instances`) on the whole validation images
    (``whole``: model inputs and their volumes, from
    :func:`fewlabel.segmentation.distance.annotated.validation_set`) with the tuned
    ``mask_threshold`` and matches against their instance labels (IoU ≥ 0.5,
    :func:`fewlabel.metrics.matching.instance_scores`), as StarDist tunes its thresholds.
    Without whole images, ``h`` is ``None`` (the instance stage then falls back to its
    default).
    """
    from fewlabel.metrics.matching import instance_scores, overlap
    from fewlabel.segmentation.instances import split_instances

    pairs = []
    with torch.no_grad():
        for x, vol in whole:
            out = model(x).float()[0]
            gt = vol.labels
            pairs.append(
                (
                    torch.sigmoid(out[0]).cpu().numpy().reshape(gt.shape),
                    out[1].cpu().numpy().reshape(gt.shape),
                    gt,
                )
            )
    if not pairs:
        log.warning(
            "no validation image small enough for whole-image instance tuning; h is not tuned"
        )
        return {"h": None, "h_curve": [], "h_tuned_on": None}
    rows = []
    for h in H_GRID:
        tp = fp = fn = 0
        for prob, dist, gt in pairs:
            labels = split_instances(prob, dist, mask_threshold=mask_threshold, h=h)
            scores = instance_scores(overlap(gt, labels.reshape(gt.shape)), thresholds=(0.5,))
            tp, fp, fn = tp + scores["tp_50"], fp + scores["fp_50"], fn + scores["fn_50"]
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        rows.append({"h": h, "f1_50": f1, "tp": int(tp), "fp": int(fp), "fn": int(fn)})
    best = max(rows, key=lambda r: (r["f1_50"], -abs(r["h"] - 0.1)))
    return {"h": best["h"], "h_f1_50": best["f1_50"], "h_curve": rows, "h_tuned_on": tuned_on}


def tune_threshold(
    model: nn.Module,
    items: Sequence[tuple[torch.Tensor, torch.Tensor]],
    grid: Sequence[float],
    tuned_on: str,
) -> dict[str, Any]:
    """Mask threshold maximising the pooled Dice of ``σ(z) > t`` over the validation images."""
    rows = []
    with torch.no_grad():
        outs = [(torch.sigmoid(model(x).float()[:, 0]), y[:, 0]) for x, y in items]
    for t in sorted(float(v) for v in grid):
        num = den = 0.0
        for prob, mask in outs:
            a, b = dice_counts(prob, mask, t)
            num, den = num + a, den + b
        rows.append({"threshold": t, "dice": num / den if den else 1.0})
    best = max(rows, key=lambda r: (r["dice"], -abs(r["threshold"] - 0.5)))
    return {
        "mask_threshold": best["threshold"],
        "val_dice": best["dice"],
        "dice_curve": rows,
        "tuned_on": tuned_on,
    }


__all__ = ["H_GRID", "dice_counts", "tune_h", "tune_threshold"]
