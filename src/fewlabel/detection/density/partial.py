"""Partial point annotation for the density detector: what is known, the loss mask, tuning.

Real point annotations are sparse: the user clicks some particles and leaves others. Treating
every unclicked voxel as background (the DM-DetNet3D target of Spilger et al. 2020) teaches
the network to suppress real particles and pushes the tuned threshold up. Here the user states
what is fully annotated (``detection.targets.annotation`` and the sheet column
``annotated_region``) and the loss and threshold tuning only use what is known:

* **clicks**: an ellipsoid neighbourhood of every click (``click_radius_um``, default 4 target
  σ per axis) is known: the Gaussian and its background ring count as in the full loss;
* **fully annotated regions** (a box CSV or a mask image, or ``full`` = the whole volume): every
  voxel inside counts, as in today's (full) loss;
* outside the ROI (``roi.enabled``), where no particle lies, voxels are background as usual;
* **unlabelled** voxels (the rest: inside the ROI, or everywhere without one) are never taken
  as certain background: they enter a non-negative PU risk (Kiryo et al. 2017, nnPU eq. 5; the PU
  particle picking of Bepler et al. 2019 §2.3) with class prior ``unlabelled_prior``, see
  :class:`fewlabel.detection.density.awing.DensityLoss`.

The weight map written by ``make_density_targets`` encodes all three: ``W > 0`` known voxel (its
AWing weight, seed eq. 2), ``W < 0`` unlabelled voxel (weight ``|W|``), ``W = 0`` ignored.

Threshold tuning (:func:`known_sweep`) then pools recall on the clicks (detections anywhere)
with precision inside the fully annotated regions; without any region the precision is taken
inside the click neighbourhoods only (a local precision: it cannot see false positives far from
the clicks) and this is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.errors import InputDataError

log = logging.getLogger(__name__)

CLICK_RADIUS_SIGMAS = 4.0
"""Default click neighbourhood: the ellipsoid of this many target σ per axis."""
EDGE_TOLERANCE = 1e-6
"""A voxel on the ellipsoid's surface is inside, whatever the rounding of µm / voxel size
(0.3 µm / 0.1 µm = 2.9999999999999996 voxels)."""
BOX_COLUMNS = ("z0", "y0", "x0", "z1", "y1", "x1")
REGION_KEYWORDS = ("full", "none")
MASK_SUFFIXES = (".tif", ".tiff", ".npy")


# --------------------------------------------------------------------------- regions
def region_kind(spec: str | None, default: str) -> str:
    """'full', 'clicks' or 'regions' for a sheet ``annotated_region`` value and the config
    default (``detection.targets.annotation``)."""
    value = (spec or "").strip()
    if not value:
        return default
    if value == "full":
        return "full"
    if value == "none":
        return "clicks"
    return "regions"


def read_boxes(path: str | Path, *, sample: str | None = None) -> np.ndarray:
    """Boxes ``z0,y0,x0,z1,y1,x1`` (voxels; start inclusive, end exclusive) of a CSV."""
    try:
        table = pd.read_csv(path, comment="#")
    except Exception as exc:
        raise InputDataError(
            f"cannot read the annotated-region CSV ({exc}).",
            sample=sample,
            path=path,
            fix="write one box per line with header z0,y0,x0,z1,y1,x1 (voxels).",
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(
            f"annotated-region CSV lacks column(s) {missing}; it has {list(table.columns)}.",
            sample=sample,
            path=path,
            fix="header z0,y0,x0,z1,y1,x1 (voxels; z1,y1,x1 exclusive), one box per line.",
        )
    boxes = table[list(BOX_COLUMNS)].to_numpy(np.float64)
    bad = ~np.all(np.isfinite(boxes), axis=1) | np.any(boxes[:, 3:] <= boxes[:, :3], axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"annotated-region box on data line {row + 1} {boxes[row].tolist()} is empty or "
            "not numeric (every end must exceed its start).",
            sample=sample,
            path=path,
            fix="give z0 < z1, y0 < y1, x0 < x1 in voxels.",
        )
    return boxes


def load_region(
    spec: str | None, shape: Sequence[int], *, sample: str | None = None
) -> np.ndarray | None:
    """Boolean mask of the fully annotated region of one volume (None: no region).

    ``spec``: ``full`` (whole volume), ``none``/empty (no region), a CSV of boxes
    (:func:`read_boxes`) or a mask image (.tif/.tiff/.npy, non-zero = annotated) of ``shape``.
    """
    value = (spec or "").strip()
    shape = tuple(int(s) for s in shape)
    if value in ("", "none"):
        return None
    if value == "full":
        return np.ones(shape, dtype=bool)
    path = Path(value)
    if path.suffix.lower() == ".csv":
        boxes = read_boxes(path, sample=sample)
        mask = np.zeros(shape, dtype=bool)
        for box in boxes:
            lo = np.clip(np.floor(box[:3]).astype(int), 0, shape)
            hi = np.clip(np.ceil(box[3:]).astype(int), 0, shape)
            if np.any(hi <= lo):
                raise InputDataError(
                    f"annotated-region box {box.tolist()} lies outside the volume {shape}.",
                    sample=sample,
                    path=path,
                    fix="give boxes in voxels of this volume (z,y,x order).",
                )
            mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
        return mask
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        data = np.asarray(tifffile.imread(path))
    elif path.suffix.lower() == ".npy":
        data = np.load(path)
    else:
        raise InputDataError(
            f"annotated region {value!r} is neither 'full', 'none', a .csv of boxes nor a "
            f"mask image ({', '.join(MASK_SUFFIXES)}).",
            sample=sample,
            path=path,
        )
    data = np.squeeze(data)
    if tuple(data.shape) != shape:
        raise InputDataError(
            f"annotated-region mask has shape {data.shape}, the volume {shape}.",
            sample=sample,
            path=path,
            fix="give a mask of the image's ZYX shape (non-zero = fully annotated).",
        )
    return data != 0


def click_neighbourhood(
    shape: Sequence[int],
    points: np.ndarray,
    radius_voxels: Sequence[float],
    *,
    origin: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Union of the ellipsoids of semi-axes ``radius_voxels`` (z, y, x) around every point,
    on the grid of ``shape`` whose first voxel is ``origin`` (volume coordinates)."""
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=bool)
    r = np.maximum(np.asarray(radius_voxels, dtype=np.float64), 1e-9)
    org = np.asarray(origin, dtype=np.int64)
    for point in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        lo = np.maximum(np.floor(point - r).astype(np.int64) - org, 0)
        hi = np.minimum(np.ceil(point + r).astype(np.int64) + 1 - org, shape)
        if np.any(hi <= lo):
            continue
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        grids = np.ogrid[region]
        dist = sum(
            ((g + o - p) / ra) ** 2 for g, o, p, ra in zip(grids, org, point, r, strict=True)
        )
        out[region] |= dist <= 1.0 + EDGE_TOLERANCE
    return out


def click_radius_voxels(
    sigma_voxels: Sequence[float],
    click_radius_um: float | Sequence[float] | None,
    voxel_size: Sequence[float],
) -> tuple[float, float, float]:
    """Neighbourhood semi-axes (voxels): ``click_radius_um`` (one radius or z, y, x semi-axes,
    µm) / voxel size, else 4 σ."""
    if click_radius_um is None:
        return tuple(CLICK_RADIUS_SIGMAS * float(s) for s in sigma_voxels)  # type: ignore[return-value]
    radii = [click_radius_um] * 3 if np.isscalar(click_radius_um) else click_radius_um
    return tuple(float(r) / float(v) for r, v in zip(radii, voxel_size[-3:], strict=True))  # type: ignore[arg-type, return-value]


def partial_weight(
    weight: np.ndarray,
    known: np.ndarray,
    *,
    unlabelled_weight: float,
    roi: np.ndarray | None = None,
) -> np.ndarray:
    """Encode the loss mask in the AWing weight map: known voxels keep ``weight``; the others
    are unlabelled (``-unlabelled_weight``; 0 = ignored) inside ``roi`` (everywhere when None),
    while voxels outside the ROI, where no particle lies, keep ``weight`` (background)."""
    keep = known if roi is None else (known | ~roi)
    out = np.where(keep, weight, np.float32(0.0)).astype(np.float32)
    if unlabelled_weight > 0:
        out[~keep] = -np.float32(unlabelled_weight)
    return out


# --------------------------------------------------------------------------- tuning
@dataclass
class KnownVolume:
    """What is known of one validation volume for threshold tuning."""

    sample: str
    clicks: np.ndarray  # (N, 3) voxels
    precision_mask: np.ndarray | None  # voxels whose detections count for precision
    precision_source: str  # full | regions | click-neighbourhoods
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)


def known_volume(
    sample: str,
    clicks: np.ndarray,
    shape: Sequence[int],
    attrs: dict[str, Any],
    *,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
) -> KnownVolume:
    """The :class:`KnownVolume` of a validation volume from its density target's attributes
    (``annotation``, ``annotated_region``, ``click_radius_voxels``; absent = full)."""
    kind = attrs.get("annotation", "full")
    scale3 = tuple(float(s) for s in scale)
    if kind == "full":
        return KnownVolume(sample, clicks, None, "full", scale3)  # type: ignore[arg-type]
    region = load_region(attrs.get("annotated_region"), shape, sample=sample)
    if region is not None and region.any():
        return KnownVolume(sample, clicks, region, "regions", scale3)  # type: ignore[arg-type]
    radius = attrs.get("click_radius_voxels") or [CLICK_RADIUS_SIGMAS] * 3
    near = click_neighbourhood(shape, clicks, radius)
    return KnownVolume(sample, clicks, near, "click-neighbourhoods", scale3)  # type: ignore[arg-type]


def known_counts(vol: KnownVolume, pred: np.ndarray, gate: float) -> tuple[int, int, int, int]:
    """(matched clicks, clicks, true detections, detections) counted where they are known.

    Recall: every detection may match a click (one-to-one, Hungarian, ``gate`` in the units of
    ``vol.scale``). Precision: only detections inside ``vol.precision_mask`` (all when None),
    true = matched to a click.
    """
    from fewlabel.metrics.detection import match_points, points_in_mask

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    res = match_points(vol.clicks, pred, max_distance=gate, scale=vol.scale)
    matched_pred = np.zeros(len(pred), dtype=bool)
    if len(res.pairs):
        matched_pred[res.pairs[:, 1].astype(int)] = True
    counted = np.ones(len(pred), dtype=bool)
    if vol.precision_mask is not None:
        counted = points_in_mask(vol.precision_mask, pred)
    return int(res.tp), len(vol.clicks), int((matched_pred & counted).sum()), int(counted.sum())


def known_sweep(
    tables: Sequence[pd.DataFrame],
    vols: Sequence[KnownVolume],
    *,
    gate: float,
    candidates: Sequence[float],
) -> tuple[float, pd.DataFrame]:
    """Threshold maximising F1 of pooled click recall and pooled known-region precision.

    ``tables``: per volume the peaks (``z, y, x, score``) at the lowest candidate; a threshold
    ``t`` keeps ``score > t`` (as :func:`fewlabel.metrics.detection.sweep_thresholds`). Returns
    the best threshold (:func:`fewlabel.metrics.thresholds.choose_threshold_row`) and one row
    per candidate (threshold, precision, recall, f1, counts, precision_source).
    """
    from fewlabel.metrics.thresholds import choose_threshold_row

    rows = []
    sources = sorted({v.precision_source for v in vols})
    for t in sorted(float(c) for c in candidates):
        tp_r = n_clicks = tp_p = n_det = 0
        for table, vol in zip(tables, vols, strict=True):
            kept = table.loc[table["score"] > t, ["z", "y", "x"]].to_numpy(np.float64)
            a, b, c, d = known_counts(vol, kept, gate)
            tp_r, n_clicks, tp_p, n_det = tp_r + a, n_clicks + b, tp_p + c, n_det + d
        recall = tp_r / n_clicks if n_clicks else 0.0
        precision = tp_p / n_det if n_det else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows.append(
            {
                "threshold": t,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "matched_clicks": tp_r,
                "clicks": n_clicks,
                "true_in_known": tp_p,
                "detections_in_known": n_det,
                "precision_source": "+".join(sources),
            }
        )
    table = pd.DataFrame(rows)
    if not len(table):
        return math.nan, table
    counts = [table[k] for k in ("true_in_known", "detections_in_known", "matched_clicks")]
    row = choose_threshold_row(table, *counts, table["clicks"])
    return float(table["threshold"].iloc[row]), table


def tuned_with(vols: Sequence[KnownVolume]) -> str:
    """How a threshold tuned on ``vols`` was counted: ``full``, or
    ``clicks-recall+<precision sources>-precision`` (logged by :func:`check_sources`)."""
    if all(v.precision_source == "full" for v in vols):
        return "full"
    return f"clicks-recall+{check_sources(vols)}-precision"


def check_sources(vols: Sequence[KnownVolume]) -> str:
    """Log (and return) which precision source threshold tuning uses."""
    sources = sorted({v.precision_source for v in vols})
    text = "+".join(sources)
    if sources == ["full"]:
        log.info("threshold tuning: fully annotated validation volumes (precision everywhere)")
    elif "click-neighbourhoods" in sources:
        log.warning(
            "threshold tuning: recall on the clicks, precision only inside click "
            "neighbourhoods for %s (no fully annotated region given: false positives far "
            "from the clicks are not seen; give an annotated_region to measure precision)",
            [v.sample for v in vols if v.precision_source == "click-neighbourhoods"],
        )
    else:
        log.info(
            "threshold tuning: recall on the clicks, precision inside the fully annotated "
            "regions (%s)",
            text,
        )
    return text
