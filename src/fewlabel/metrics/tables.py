"""Metric tables over samples: per-sample TSVs → summary rows (pooled ``ALL``, macro ``MEAN``).

Detection (:func:`aggregate_metrics`, :func:`write_tsv`, :func:`write_matches`) and segmentation
(:func:`aggregate_segmentation`, :func:`read_metric_tables`, :func:`write_metrics_tsv`): reading
the per-sample TSVs written by the evaluate stages, pooling them, and writing TSVs atomically.
The per-sample metrics themselves live in :mod:`fewlabel.metrics.detection` and
:mod:`fewlabel.metrics.segmentation`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.metrics.detection import METRIC_COLUMNS, MatchResult, prf
from fewlabel.metrics.segmentation import counting_errors

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- detection
def write_matches(
    res: MatchResult,
    g: np.ndarray,
    p: np.ndarray,
    path: str | Path,
    *,
    scored: np.ndarray | None = None,
) -> None:
    """Write one sample's matches CSV atomically (columns: see
    :func:`fewlabel.metrics.detection.evaluate_sample`); unmatched predictions where
    ``scored`` is False are ``unscored``, not ``fp``."""
    from fewlabel.io import atomic_path

    unmatched = np.asarray(res.unmatched_pred, dtype=int)
    outside = np.zeros(len(unmatched), dtype=bool) if scored is None else ~scored[unmatched]

    gi = res.pairs[:, 0].astype(int)
    pi = res.pairs[:, 1].astype(int)
    nan3 = np.full((0, 3), np.nan)
    parts = [
        ("tp", gi, pi, res.pairs[:, 2], g[gi] if len(gi) else nan3, p[pi] if len(pi) else nan3),
        (
            "fn",
            res.unmatched_gt,
            np.full(len(res.unmatched_gt), -1),
            np.full(len(res.unmatched_gt), np.nan),
            g[res.unmatched_gt],
            np.full((len(res.unmatched_gt), 3), np.nan),
        ),
        *(
            (
                status,
                np.full(len(which), -1),
                which,
                np.full(len(which), np.nan),
                np.full((len(which), 3), np.nan),
                p[which],
            )
            for status, which in (("fp", unmatched[~outside]), ("unscored", unmatched[outside]))
        ),
    ]
    frames = []
    for status, gidx, pidx, dist, gc, pc in parts:
        gc = np.asarray(gc, float).reshape(-1, 3)
        pc = np.asarray(pc, float).reshape(-1, 3)
        frames.append(
            pd.DataFrame(
                {
                    "status": [status] * len(gidx),
                    "gt_index": np.asarray(gidx, int),
                    "pred_index": np.asarray(pidx, int),
                    "distance": np.asarray(dist, float),
                    "gt_z": gc[:, 0],
                    "gt_y": gc[:, 1],
                    "gt_x": gc[:, 2],
                    "pred_z": pc[:, 0],
                    "pred_y": pc[:, 1],
                    "pred_x": pc[:, 2],
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


def write_tsv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as TSV atomically."""
    from fewlabel.io import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN")


def aggregate_metrics(tsv_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-sample metric TSVs and append a pooled and a macro-mean row.

    ``ALL`` (micro): TP/FP/FN/n summed, P/R/F1 from the sums, RMSE pooled over all matched pairs
    ``sqrt(Σ tp_i · rmse_i² / Σ tp_i)``; precision from the scored predictions
    ``Σ tp_scored_i / Σ pred_scored_i`` (= Σ TP / (Σ TP + Σ FP) when every volume is fully
    annotated). ``MEAN`` (macro): unweighted mean over samples of P/R/F1/RMSE (NaN RMSEs skipped)
    and of the counts. Tables written before ``pred_scored`` existed count every prediction.
    """
    from fewlabel.errors import InputDataError

    frames = []
    for path in tsv_paths:
        path = Path(path)
        if not path.exists():
            raise InputDataError(
                "metrics table not found.",
                path=path,
                fix="run evaluate-detection for this sample first.",
            )
        frame = pd.read_csv(path, sep="\t")
        if "pred_scored" not in frame.columns and {"tp", "fp"} <= set(frame.columns):
            frame = frame.assign(pred_scored=frame["tp"] + frame["fp"], tp_scored=frame["tp"])
            frame["scored_in"] = "volume"
        missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
        if missing:
            raise InputDataError(
                f"not a detection metrics table (missing columns {missing}).",
                path=path,
                fix="pass TSVs written by evaluate-detection.",
            )
        frames.append(frame[list(METRIC_COLUMNS)])
    if not frames:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    per = pd.concat(frames, ignore_index=True)
    per["sample"] = per["sample"].astype(str)
    tp, fp, fn, tp_scored = (int(per[c].sum()) for c in ("tp", "fp", "fn", "tp_scored"))
    precision, recall, f1 = prf(tp, fp, fn, tp_scored)
    scored_in = per["scored_in"].astype(str).unique()
    rm = per["rmse"].to_numpy(float)
    w = per["tp"].to_numpy(float)
    ok = np.isfinite(rm) & (w > 0)
    pooled_rmse = float(np.sqrt((w[ok] * rm[ok] ** 2).sum() / w[ok].sum())) if ok.any() else np.nan
    gates = per["gate"].unique()
    units = per["gate_unit"].astype(str).unique()
    gate = float(gates[0]) if len(gates) == 1 else np.nan
    unit = units[0] if len(units) == 1 else "mixed"
    pooled = {
        "sample": "ALL",
        "n_gt": int(per["n_gt"].sum()),
        "n_pred": int(per["n_pred"].sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "rmse": pooled_rmse,
        "gate": gate,
        "gate_unit": unit,
        "pred_scored": int(per["pred_scored"].sum()),
        "tp_scored": tp_scored,
        "scored_in": scored_in[0] if len(scored_in) == 1 else "mixed",
    }
    macro: dict[str, Any] = {"sample": "MEAN"}
    counts = ("n_gt", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "pred_scored")
    for column in (*counts, "tp_scored"):
        macro[column] = float(per[column].astype(float).mean())
    macro["rmse"] = float(np.nanmean(rm)) if np.isfinite(rm).any() else np.nan
    macro["gate"], macro["gate_unit"] = gate, unit
    macro["scored_in"] = pooled["scored_in"]
    return pd.concat([per, pd.DataFrame([pooled, macro])], ignore_index=True)[list(METRIC_COLUMNS)]


# --------------------------------------------------------------------------- segmentation
POOLING_COLUMNS = ("fg_intersection", "fg_union", "seg_sum", "mucov_sum")
"""Per-sample sums behind fg_iou, SEG and MUCov (with n_gt): what the ALL row pools."""

NOT_POOLED = ("pcc", "centre_gate_um")
"""Per-image quantities without a pooled value (ALL row: undefined; see the MEAN row)."""

UNDEFINED = "n/a"
"""How an undefined value is written in the metric TSVs (pandas reads it back as NaN)."""


def aggregate_segmentation(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-sample rows + ``ALL`` (pooled) + ``MEAN`` (macro) rows.

    ``ALL``: TP/FP/FN and object counts summed over samples, ``ap_t`` / ``ap_mean`` / F1 from the
    pooled counts (the dataset-level StarDist convention); foreground IoU = total intersection /
    total union; SEG and MUCov = mean over all GT objects pooled (``seg_sum`` / ``mucov_sum``
    over ``n_gt``; undefined without GT objects); centre RMSE over all matched pairs
    ``sqrt(Σ tp_i · rmse_i² / Σ tp_i)``. :data:`NOT_POOLED` columns stay undefined there.
    ``MEAN``: unweighted mean over samples of every numeric column, plus the counting errors over
    samples (``count_mae``, ``count_median_ae``, ``count_mean_error``, ``count_mpe_percent``
    from n_gt, n_pred). Tables from before the pooling columns existed leave fg_iou/SEG/MUCov
    of ALL undefined, with a warning naming the stage to rerun.
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
                (pooled["precision_50"], pooled["recall_50"], pooled["f1_50"]) = prf(
                    int(tp), int(fp), int(fn)
                )
        if aps:
            pooled["ap_mean"] = float(np.mean(aps))
        if {"centre_tp", "centre_fp", "centre_fn"} <= set(per.columns):
            tp, fp, fn = (int(per[c].sum()) for c in ("centre_tp", "centre_fp", "centre_fn"))
            pooled.update({"centre_tp": tp, "centre_fp": fp, "centre_fn": fn})
            (pooled["centre_precision"], pooled["centre_recall"], pooled["centre_f1"]) = prf(
                tp, fp, fn
            )
            if "centre_rmse_um" in per.columns:
                rmse = per["centre_rmse_um"].to_numpy(np.float64)
                matched = per["centre_tp"].to_numpy(np.float64)
                keep = np.isfinite(rmse) & (matched > 0)
                total = float(matched[keep].sum())
                pooled["centre_rmse_um"] = (
                    math.sqrt(float((matched[keep] * rmse[keep] ** 2).sum()) / total)
                    if total
                    else np.nan
                )
        pooled.update(_pooled_overlaps(per))
    extra = pd.DataFrame([pooled, macro])
    columns = list(per.columns) + [c for c in extra.columns if c not in per.columns]
    return pd.concat([per, extra], ignore_index=True)[columns]


def _pooled_overlaps(per: pd.DataFrame) -> dict[str, float]:
    """Pooled fg_iou, SEG and MUCov (and the pooling sums) of the ALL row."""
    out: dict[str, float] = {}
    if {"fg_intersection", "fg_union"} <= set(per.columns):
        inter = float(per["fg_intersection"].sum())
        union = float(per["fg_union"].sum())
        out.update({"fg_intersection": inter, "fg_union": union})
        out["fg_iou"] = inter / union if union else 1.0  # no foreground anywhere: agreement
    elif "fg_iou" in per.columns:
        log.warning(
            "per-sample metrics lack fg_intersection/fg_union (written by an older version): "
            "the ALL row's fg_iou is undefined; rerun evaluate_segmentation to pool it"
        )
    n_gt = float(per["n_gt"].sum())
    for score, total in (("seg", "seg_sum"), ("mucov", "mucov_sum")):
        if total in per.columns:
            summed = float(per[total].sum())
            out[total] = summed
            out[score] = summed / n_gt if n_gt else np.nan  # no GT object: undefined
        elif score in per.columns:
            log.warning(
                "per-sample metrics lack %s (written by an older version): the ALL row's %s "
                "is undefined; rerun evaluate_segmentation to pool it",
                total,
                score,
            )
    return out


def write_metrics_tsv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a segmentation metrics table as TSV atomically; undefined values (no GT objects,
    no fluorescence target, per-image quantities in the pooled row) read :data:`UNDEFINED`."""
    from fewlabel.io import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep=UNDEFINED)


def read_metric_tables(paths: Sequence[str | Path]) -> list[pd.DataFrame]:
    """Read per-sample segmentation metric TSVs (each with a ``sample`` column)."""
    from fewlabel.errors import InputDataError

    frames = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputDataError(
                "metrics table not found.",
                path=path,
                fix="run evaluate_segmentation for this sample first.",
            )
        frame = pd.read_csv(path, sep="\t")
        if "sample" not in frame.columns:
            raise InputDataError(
                "not a segmentation metrics table (no 'sample' column).",
                path=path,
                fix="pass TSVs written by evaluate_segmentation.",
            )
        frames.append(frame)
    samples = pd.concat([f["sample"].astype(str) for f in frames]) if frames else pd.Series([])
    duplicated = sorted(set(samples[samples.duplicated()]))
    if duplicated:
        raise InputDataError(
            f"sample(s) {duplicated} appear in more than one metrics table.",
            fix="pass each sample's table once.",
        )
    return frames
