"""The run report: one self-contained HTML file (tables, plots, overlays, provenance).

Every figure is a matplotlib (Agg) PNG embedded as a ``data:image/png;base64`` URI and the CSS is
inline, so the file opens offline and can be mailed around. Sections appear only when their
inputs are given (:class:`ReportInputs`); a listed file that does not exist is an error.

Large volumes are never loaded whole: maximum-intensity projections (MIPs) are computed block by
block over whole chunks and max-pooled on the fly to at most ``MAX_PX`` pixels per side,

    MIP_z[i, j] = max_{z, y ∈ [i f, (i+1) f), x ∈ [j f, (j+1) f)} I[z, y, x],

with one pooling factor ``f = ⌈max(Y, X) / MAX_PX⌉`` (so pixels stay square); slices are read
with stride ``f``. Points are drawn in voxel coordinates on an image whose extent is the full
volume, so no coordinate is rescaled by hand.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

MAX_PX = 1024  #: largest side (pixels) of a computed projection or slice
DPI = 80  #: figure resolution
MAX_POINTS_DRAWN = 20000  #: per marker layer; more points are subsampled for display
BLOCK_VOXELS = 1 << 25  #: voxels read at once when projecting (≈ 64 MiB of uint16)
CURVE_TSV = "curve.tsv"
THRESHOLDS_JSON = "thresholds.json"
TRAINING_JSON = "training.json"
POOLED_ROWS = ("ALL", "MEAN", "POOLED", "pooled", "all", "mean")

# marker styles (colour-blind-friendly pairs: green/magenta, red/yellow)
GT_STYLE = {"marker": "o", "facecolors": "none", "edgecolors": "#00e676", "linewidths": 1.0}
PRED_STYLE = {"marker": "+", "c": "#ff40ff", "linewidths": 1.0}
FN_STYLE = {"marker": "s", "facecolors": "none", "edgecolors": "#ff1744", "linewidths": 1.4}
FP_STYLE = {"marker": "x", "c": "#ffd600", "linewidths": 1.4}
GT_OUTLINE = (0.0, 0.9, 0.46)  # RGB of ground-truth instance outlines
PRED_OUTLINE = (1.0, 0.25, 1.0)  # RGB of predicted instance outlines
ROI_OUTLINE = (0.0, 0.9, 1.0)

DETECTION_SAMPLE_KEYS = {"sample": True, "image": True, "pred": True, "gt": False,
                         "matches": False}
SEGMENTATION_SAMPLE_KEYS = {"sample": True, "image": False, "gt_labels": False,
                            "pred_labels": False, "target": False, "pred_fluorescence": False,
                            "metrics_tsv": False}


# --------------------------------------------------------------------------- inputs
@dataclass
class ReportInputs:
    """What goes into the report; every field is optional and omits its section when unset.

    Paths are strings or :class:`~pathlib.Path`. ``roi_jsons``: ROI summaries, the sample is the
    parent folder name; ``roi_masks``: sample → ROI mask OME-Zarr; ``detection_samples``: dicts
    ``sample, image, pred`` and optional ``gt, matches``; ``segmentation_samples``: dicts
    ``sample`` and optional ``image, gt_labels, pred_labels, target, pred_fluorescence,
    metrics_tsv``; ``images``: sample → image OME-Zarr used behind ROI outlines when no other
    input names the sample's image.
    """

    title: str | None = None
    config: dict[str, Any] | None = None
    sample_sheet: str | Path | None = None
    summary_tsv: str | Path | None = None
    provenance_json: str | Path | None = None
    roi_jsons: list[str | Path] = field(default_factory=list)
    roi_masks: dict[str, str | Path] = field(default_factory=dict)
    images: dict[str, str | Path] = field(default_factory=dict)
    detection_summary_tsv: str | Path | None = None
    detection_model_dir: str | Path | None = None
    detection_samples: list[dict[str, Any]] = field(default_factory=list)
    isl_model_dir: str | Path | None = None
    segmenter_model_dir: str | Path | None = None
    segmentation_summary_tsv: str | Path | None = None
    segmentation_samples: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ReportInputs:
        """Build from a plain dict (e.g. the CLI's JSON); unknown keys / bad types → ConfigError."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown report input(s) {unknown}; allowed: {sorted(known)}.",
                              fix="check the spelling of the --inputs-json keys.")
        for key in ("roi_jsons", "detection_samples", "segmentation_samples"):
            if values.get(key) is None:
                values.pop(key, None)
            elif not isinstance(values[key], list):
                raise ConfigError(f"report input '{key}' must be a list, got "
                                  f"{type(values[key]).__name__}.")
        for key in ("roi_masks", "images", "config"):
            if values.get(key) is None:
                values.pop(key, None)
            elif not isinstance(values[key], dict):
                raise ConfigError(f"report input '{key}' must be a JSON object, got "
                                  f"{type(values[key]).__name__}.")
        inputs = cls(**values)
        inputs.validate_structure()
        return inputs

    def validate_structure(self) -> None:
        """Check the per-sample dicts (required keys, no unknown keys)."""
        for key, spec in (("detection_samples", DETECTION_SAMPLE_KEYS),
                          ("segmentation_samples", SEGMENTATION_SAMPLE_KEYS)):
            for index, entry in enumerate(getattr(self, key)):
                if not isinstance(entry, Mapping):
                    raise ConfigError(f"report input {key}[{index}] must be an object with keys "
                                      f"{list(spec)}.")
                unknown = sorted(set(entry) - set(spec))
                missing = [k for k, required in spec.items() if required and not entry.get(k)]
                if unknown or missing:
                    raise ConfigError(
                        f"report input {key}[{index}]: "
                        + (f"unknown key(s) {unknown}; " if unknown else "")
                        + (f"missing {missing}; " if missing else "")
                        + f"allowed keys {list(spec)} (required: "
                        f"{[k for k, r in spec.items() if r]}).",
                        sample=entry.get("sample"))

    def listed_files(self) -> list[tuple[str, str | None, Path]]:
        """Every listed path as ``(what, sample, path)``."""
        out: list[tuple[str, str | None, Path]] = []
        for name in ("sample_sheet", "summary_tsv", "provenance_json", "detection_summary_tsv",
                     "detection_model_dir", "isl_model_dir", "segmenter_model_dir",
                     "segmentation_summary_tsv"):
            value = getattr(self, name)
            if value:
                out.append((name, None, Path(value)))
        out += [("roi_jsons", Path(p).parent.name, Path(p)) for p in self.roi_jsons]
        out += [("roi_masks", s, Path(p)) for s, p in self.roi_masks.items()]
        out += [("images", s, Path(p)) for s, p in self.images.items()]
        for key in ("detection_samples", "segmentation_samples"):
            for entry in getattr(self, key):
                for item, value in entry.items():
                    if item != "sample" and value:
                        out.append((f"{key}.{item}", str(entry.get("sample")), Path(value)))
        return out


def check_inputs_exist(inputs: ReportInputs) -> None:
    """Raise :class:`InputDataError` naming the first listed file that does not exist."""
    for what, sample, path in inputs.listed_files():
        if not path.exists():
            raise InputDataError(f"report input '{what}' does not exist.", sample=sample,
                                 path=path, fix="run the stage that writes it, or drop it from "
                                                "the report inputs.")


# --------------------------------------------------------------------------- projections
class _ChannelView:
    """A ZYX view of channel ``c`` of a CZYX array (zarr arrays have no lazy views)."""

    def __init__(self, array: Any, channel: int = 0) -> None:
        self.array, self.channel = array, channel
        self.shape = tuple(array.shape[1:])
        self.chunks = tuple(getattr(array, "chunks", array.shape)[1:])
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(self.channel, *key)])


def _zyx(array: Any) -> Any:
    if array.ndim == 4:
        return _ChannelView(array, 0)
    if array.ndim == 3:
        return array
    if array.ndim == 2:
        return np.asarray(array)[None]
    raise ValueError(f"expected a ZYX or CZYX array, got shape {array.shape}")


def pooling_factors(shape2d: Sequence[int], max_px: int = MAX_PX, *, square: bool = True
                    ) -> tuple[int, int]:
    """Integer pooling factors so that ``ceil(side / f) <= max_px`` (equal when ``square``)."""
    fa, fb = (max(1, math.ceil(int(s) / max_px)) for s in shape2d)
    if square:
        fa = fb = max(fa, fb)
    return fa, fb


def _block_shape(shape: Sequence[int], chunks: Sequence[int], budget: int) -> list[int]:
    block = [max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True)]
    grew = True
    while grew:
        grew = False
        for i in range(len(block)):
            if block[i] < shape[i] and math.prod(block) * 2 <= budget:
                block[i] = min(block[i] * 2, int(shape[i]))
                grew = True
    return block


def _pool_into(out: np.ndarray, part: np.ndarray, starts: Sequence[int],
               factors: Sequence[int]) -> None:
    """Max-pool ``part`` (2D, global offset ``starts``) into ``out`` bins of ``factors``."""
    for axis in (0, 1):
        bins = (np.arange(part.shape[axis]) + starts[axis]) // factors[axis]
        first = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        part = np.maximum.reduceat(part, first, axis=axis)
        if axis == 0:
            rows = bins[first]
        else:
            cols = bins[first]
    region = out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    np.maximum(region, part, out=region)


def _lowest(dtype: np.dtype) -> Any:
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def max_projection(array: Any, axis: int = 0, *, max_px: int = MAX_PX,
                   factors: Sequence[int] | None = None, square: bool | None = None,
                   block_voxels: int = BLOCK_VOXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Block-wise maximum projection of a ZYX (or CZYX, channel 0) array along ``axis``.

    ``axis=0`` gives the YX top view, ``axis=1`` the ZX side view. The result is max-pooled by
    ``factors`` (default :func:`pooling_factors`, square for the top view) so each side is at most
    ``max_px``; returns ``(image, factors)``. Reads whole chunks, at most ``block_voxels`` voxels
    at a time, so memory stays bounded for any volume size.
    """
    array = _zyx(array)
    shape = tuple(int(s) for s in array.shape)
    kept = [a for a in range(3) if a != axis]
    shape2d = (shape[kept[0]], shape[kept[1]])
    if factors is None:
        factors = pooling_factors(shape2d, max_px, square=axis == 0 if square is None else square)
    factors = (int(factors[0]), int(factors[1]))
    dtype = np.dtype(array.dtype)
    out = np.full((math.ceil(shape2d[0] / factors[0]), math.ceil(shape2d[1] / factors[1])),
                  _lowest(dtype), dtype=dtype)
    chunks = getattr(array, "chunks", None) or shape
    block = _block_shape(shape, chunks, block_voxels)
    from fewlabel.blocks import block_grid

    for sl in block_grid(shape, block):
        part = np.asarray(array[sl]).max(axis=axis)
        _pool_into(out, part, (sl[kept[0]].start, sl[kept[1]].start), factors)
    return out, factors


def strided_slice(array: Any, z: int, factors: Sequence[int]) -> np.ndarray:
    """The YX plane ``z`` of a ZYX (or CZYX, channel 0) array, read with stride ``factors``."""
    array = _zyx(array)
    return np.asarray(array[int(z), ::int(factors[0]), ::int(factors[1])])


def _open_volume(path: str | Path, sample: str | None) -> Any:
    from fewlabel.io import open_ome_zarr

    return open_ome_zarr(path, sample=sample)


# --------------------------------------------------------------------------- figures
def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def figure_uri(fig: Any) -> str:
    """Render a matplotlib figure to a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _limits(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)
            ) -> tuple[float, float]:
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        high = low + 1.0
    return low, high


def _extent(shape2d: Sequence[int], factors: Sequence[int]) -> tuple[float, float, float, float]:
    """imshow extent in voxel coordinates of the full volume (pixel centres at integers)."""
    rows, cols = shape2d[0] * factors[0], shape2d[1] * factors[1]
    return (-0.5, cols - 0.5, rows - 0.5, -0.5)


def _panel_size(rows_um: float, cols_um: float, width: float = 7.0,
                limits: tuple[float, float] = (0.8, 8.0)) -> tuple[float, float]:
    ratio = rows_um / cols_um if cols_um > 0 else 1.0
    height = width * ratio
    if height > limits[1]:
        width, height = limits[1] / ratio, limits[1]
    return width, max(limits[0], height)


def _thin(points: np.ndarray, limit: int = MAX_POINTS_DRAWN, seed: int = 0) -> np.ndarray:
    if len(points) <= limit:
        return points
    rng = np.random.default_rng(seed)
    return points[np.sort(rng.choice(len(points), limit, replace=False))]


def _marker_size(n_total: int) -> float:
    return 28.0 if n_total < 300 else 14.0 if n_total < 3000 else 5.0


@dataclass
class PointLayers:
    """Point sets (N, 3) z, y, x in voxels to draw on a detection figure."""

    gt: np.ndarray | None = None
    pred: np.ndarray | None = None
    tp_gt: np.ndarray | None = None
    tp_pred: np.ndarray | None = None
    fn: np.ndarray | None = None
    fp: np.ndarray | None = None

    def layers(self) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        """(label, points, style) in drawing order."""
        if self.tp_gt is not None:
            spec = [("GT matched (TP)", self.tp_gt, GT_STYLE),
                    ("prediction matched (TP)", self.tp_pred, PRED_STYLE),
                    ("FN: missed GT", self.fn, FN_STYLE),
                    ("FP: false prediction", self.fp, FP_STYLE)]
        else:
            spec = [("ground truth", self.gt, GT_STYLE), ("prediction", self.pred, PRED_STYLE)]
        return [(label, np.zeros((0, 3)) if pts is None else pts, style)
                for label, pts, style in spec if pts is not None or label.startswith("pred")]


def detection_figures(image: Any, voxel_size: Sequence[float], layers: PointLayers, *,
                      sample: str, max_px: int = MAX_PX) -> list[tuple[str, str]]:
    """z-MIP (and y-MIP when Z > 1) of ``image`` with GT / predicted / FP / FN markers.

    Returns ``[(caption, data_uri), ...]``.
    """
    vz, vy, vx = (float(v) for v in voxel_size)
    shape = tuple(int(s) for s in _zyx(image).shape)
    drawn = layers.layers()
    n_total = sum(len(p) for _, p, _ in drawn)
    size = _marker_size(n_total)
    out = []
    views = [(0, "z-MIP (top view)", (2, 1), vy / vx, shape[1] * vy, shape[2] * vx)]
    if shape[0] > 1:
        views.append((1, "y-MIP (side view)", (2, 0), vz / vx, shape[0] * vz, shape[2] * vx))
    width = None
    for axis, name, (cx, cy), aspect, rows_um, cols_um in views:
        mip, factors = max_projection(image, axis, max_px=max_px)
        if width is None:  # about one screen pixel per pooled pixel, within [5.5, 9] inches
            width = float(np.clip(mip.shape[1] / DPI, 5.5, 9.0))
        fig, axes = _figure(*_panel_size(rows_um, cols_um, width=width, limits=(1.2, 10.0)))
        ax = axes[0]
        low, high = _limits(mip)
        ax.imshow(mip, cmap="gray", vmin=low, vmax=high, extent=_extent(mip.shape, factors),
                  aspect=aspect, interpolation="antialiased")
        handles = []
        for label, points, style in drawn:
            shown = _thin(np.asarray(points, float).reshape(-1, 3))
            note = f" ({len(points)})" if len(shown) == len(points) else \
                f" ({len(shown)} of {len(points)} drawn)"
            handles.append(ax.scatter(shown[:, cx], shown[:, cy], s=size, label=label + note,
                                      **style))
        ax.set_xlim(-0.5, shape[2] - 0.5)
        ax.set_ylim(shape[cy] - 0.5, -0.5)
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)" if axis == 0 else "z (voxels)")
        ax.set_title(f"{sample}: {name}", fontsize=10)
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                      frameon=False, borderaxespad=0.0)
        caption = f"{name}, pooled ×{factors[0]}×{factors[1]}" if max(factors) > 1 else name
        out.append((caption, figure_uri(fig)))
    return out


def _outline_rgba(labels: np.ndarray, rgb: Sequence[float]) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(np.asarray(labels), mode="inner") & (np.asarray(labels) > 0)
    rgba = np.zeros((*edges.shape, 4), dtype=np.float32)
    rgba[edges] = (*rgb, 1.0)
    return rgba


def _legend_patches(entries: Iterable[tuple[str, Sequence[float]]]) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(facecolor=(*rgb, 1.0), edgecolor="none", label=label) for label, rgb in entries]


def outline_figure(background: list[tuple[str, np.ndarray | None]],
                   outlines: list[list[tuple[str, np.ndarray, Sequence[float]]]], *,
                   factors: Sequence[int], aspect: float, title: str) -> str:
    """Panels of greyscale ``background`` images with coloured instance outlines on top.

    ``background[i] = (panel title, image or None)``; ``outlines[i]`` lists
    ``(legend label, label image, rgb)`` of the same (pooled) shape.
    """
    n = len(background)
    shapes = [img.shape for _, img in background if img is not None]
    shapes += [lab.shape for group in outlines for _, lab, _ in group]
    rows_um, cols_um = shapes[0][0] * aspect, shapes[0][1]
    width, height = _panel_size(rows_um, cols_um, width=4.2 if n > 1 else 7.0, limits=(1.2, 6.0))
    fig, axes = _figure(width * n, height + 0.5, ncols=n)
    legend: dict[str, Sequence[float]] = {}
    for ax, (panel, image), group in zip(axes, background, outlines, strict=True):
        shape = image.shape if image is not None else group[0][1].shape
        extent = _extent(shape, factors)
        if image is not None:
            low, high = _limits(image)
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, extent=extent, aspect=aspect)
        else:
            ax.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1, extent=extent, aspect=aspect)
        for label, labels, rgb in group:
            ax.imshow(_outline_rgba(labels, rgb), extent=extent, aspect=aspect,
                      interpolation="nearest")
            legend[label] = rgb
        ax.set_title(panel, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    if legend:
        fig.legend(handles=_legend_patches(legend.items()), loc="lower center", ncol=len(legend),
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    return figure_uri(fig)


def curve_figure(curve: pd.DataFrame, title: str) -> str:
    """Every numeric column of a training curve against ``epoch`` (losses left, log axis)."""
    from matplotlib.ticker import MaxNLocator

    x = curve["epoch"] if "epoch" in curve.columns else pd.Series(range(1, len(curve) + 1))
    columns = [c for c in curve.columns
               if c != "epoch" and pd.api.types.is_numeric_dtype(curve[c])]
    losses = [c for c in columns if "loss" in c.lower()]
    others = [c for c in columns if c not in losses]
    groups = [g for g in (losses, others) if g]
    fig, axes = _figure(4.6 * max(1, len(groups)), 3.0, ncols=max(1, len(groups)))
    for ax, group in zip(axes, groups or [[]], strict=True):
        for column in group:
            ax.plot(x, curve[column], marker=".", markersize=3, label=column)
        values = curve[group].to_numpy(float) if group else np.zeros(0)
        finite = values[np.isfinite(values)]
        if group is losses and finite.size and (finite > 0).all() and \
                finite.max() / finite.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if group is losses else "value")
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return figure_uri(fig)


def f1_curve_table(thresholds: Mapping[str, Any]) -> pd.DataFrame | None:
    """The ``f1_curve`` of a thresholds.json as a table (threshold, f1[, precision, recall]).

    Accepts a list of records, a dict of equal-length lists, or a list of ``[t, f1]`` pairs.
    """
    raw = thresholds.get("f1_curve")
    if raw is None:
        return None
    try:
        if isinstance(raw, Mapping):
            table = pd.DataFrame(dict(raw))
        elif raw and isinstance(raw[0], Mapping):
            table = pd.DataFrame(list(raw))
        else:
            table = pd.DataFrame(np.asarray(raw, float)[:, :2], columns=["threshold", "f1"])
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        log.warning("thresholds.json f1_curve has an unknown layout (%s); not plotted", exc)
        return None
    if not {"threshold", "f1"} <= set(table.columns) or table.empty:
        log.warning("thresholds.json f1_curve lacks 'threshold'/'f1'; not plotted")
        return None
    return table.apply(pd.to_numeric, errors="coerce").sort_values("threshold")


def f1_figure(table: pd.DataFrame, chosen: float | None) -> str:
    """Pooled F1 (and P, R when present) against the detection threshold."""
    fig, axes = _figure(5.0, 3.0)
    ax = axes[0]
    for column in ("f1", "precision", "recall"):
        if column in table.columns:
            ax.plot(table["threshold"], table[column], label=column,
                    linewidth=2.0 if column == "f1" else 1.0)
    if chosen is not None and math.isfinite(chosen):
        ax.axvline(chosen, color="k", linestyle="--", linewidth=1, label=f"chosen {chosen:.4g}")
    ax.set_xlabel("detection threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("validation F1 vs threshold", fontsize=10)
    return figure_uri(fig)


# --------------------------------------------------------------------------- tables
def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if v == int(v) and abs(v) < 1e9:
            return str(int(v))
        return f"{v:.3e}" if (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    text = str(value)
    return "–" if text in ("", "nan", "NaN") else text


def table_context(frame: pd.DataFrame, *, highlight: Iterable[str] = POOLED_ROWS,
                  key: str | None = "sample") -> dict[str, Any]:
    """A DataFrame as ``{columns, rows: [{cells, highlight}]}`` for the template's table macro."""
    marks = set(highlight)
    rows = []
    for record in frame.to_dict("records"):
        rows.append({"cells": [_cell(record[c]) for c in frame.columns],
                     "highlight": key is not None and str(record.get(key)) in marks})
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def _read_tsv(path: str | Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", comment=None)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user-facing input error
        raise InputDataError(f"cannot read {what} as TSV ({exc}).", path=path) from exc


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(f"cannot read {what} as JSON ({exc}).", path=path) from exc


def _scalars(mapping: Mapping[str, Any], max_chars: int = 300) -> pd.DataFrame:
    """Key/value rows of a JSON object (long lists summarised, nested objects as JSON)."""
    rows = []
    for key, value in mapping.items():
        if isinstance(value, list) and len(value) > 6:
            text = f"list of {len(value)} values"
        else:
            text = _cell(value)
            if len(text) > max_chars:
                text = text[:max_chars] + " …"
        rows.append({"key": str(key), "value": text})
    return pd.DataFrame(rows, columns=["key", "value"])


# --------------------------------------------------------------------------- matches
def read_matches(path: str | Path, gt: np.ndarray | None, pred: np.ndarray, *,
                 sample: str | None = None) -> PointLayers:
    """Split points into TP / FN / FP from a matches CSV of ``evaluate_sample``.

    Needs ``gt_index, pred_index`` (-1 or empty for unmatched); ``status`` (tp/fn/fp) and the
    coordinate columns ``gt_z..pred_x`` are used when present, otherwise the indices address the
    rows of ``gt`` / ``pred``.
    """
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=["gt_index", "pred_index"])
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(f"cannot parse matches CSV ({exc}).", sample=sample, path=path) \
            from exc
    missing = [c for c in ("gt_index", "pred_index") if c not in table.columns]
    if missing:
        raise InputDataError(f"matches CSV lacks column(s) {missing}; it has "
                             f"{list(table.columns)}.", sample=sample, path=path,
                             fix="pass the matches CSV written by evaluate-detection.")
    gi = pd.to_numeric(table["gt_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    pi = pd.to_numeric(table["pred_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    if "status" in table.columns:
        status = table["status"].astype(str).str.lower().to_numpy()
    else:
        status = np.where(gi < 0, "fp", np.where(pi < 0, "fn", "tp"))

    def coords(prefix: str, index: np.ndarray, source: np.ndarray | None, rows: np.ndarray
               ) -> np.ndarray:
        names = [f"{prefix}_{a}" for a in "zyx"]
        if all(n in table.columns for n in names):
            return table.loc[rows, names].to_numpy(float).reshape(-1, 3)
        idx = index[rows]
        if source is None or (idx.size and (idx.min() < 0 or idx.max() >= len(source))):
            raise InputDataError(
                f"matches CSV refers to {prefix} rows {idx.min() if idx.size else ''}.."
                f"{idx.max() if idx.size else ''} that the {prefix} points do not have.",
                sample=sample, path=path, fix="use the matches CSV of these very point files.")
        return source[idx].reshape(-1, 3)

    tp, fn, fp = (np.flatnonzero(status == s) for s in ("tp", "fn", "fp"))
    return PointLayers(gt=gt, pred=pred, tp_gt=coords("gt", gi, gt, tp),
                       tp_pred=coords("pred", pi, pred, tp), fn=coords("gt", gi, gt, fn),
                       fp=coords("pred", pi, pred, fp))


# --------------------------------------------------------------------------- sections
def _samples_section(inputs: ReportInputs) -> dict[str, Any] | None:
    frame: pd.DataFrame | None = None
    if inputs.sample_sheet:
        sheet = pd.read_csv(inputs.sample_sheet, sep="\t", dtype=str, comment="#",
                            keep_default_na=False)
        sheet.columns = [c.strip() for c in sheet.columns]
        if "sample" not in sheet.columns:
            raise InputDataError("sample sheet has no 'sample' column.", path=inputs.sample_sheet)
        frame = pd.DataFrame({"sample": sheet["sample"]})
        for column in ("split", "task"):
            if column in sheet.columns:
                frame[column] = sheet[column].replace("", "detect" if column == "task" else "")
        present = [c for c in ("points", "labels", "target") if c in sheet.columns]
        if present:
            frame["annotations"] = [", ".join(c for c in present if row[c]) or "–"
                                    for row in sheet.to_dict("records")]
        if "voxel_size" in sheet.columns:
            frame["voxel_size_um"] = sheet["voxel_size"]
    if inputs.summary_tsv:
        summary = _read_tsv(inputs.summary_tsv, "run summary")
        if "sample" not in summary.columns:
            raise InputDataError("run summary has no 'sample' column.", path=inputs.summary_tsv)
        wanted = [c for c in ("split", "shape_zyx", "voxel_size_um", "dtype")
                  if c in summary.columns]
        summary = summary[["sample", *wanted]].astype({"sample": str})
        if frame is None:
            frame = summary
        else:
            extra = [c for c in wanted if c != "split"]
            merged = frame.merge(summary[["sample", *extra]], on="sample", how="left",
                                 suffixes=("_sheet", ""))
            for column in extra:  # the summary wins; the sheet fills samples it lacks
                if f"{column}_sheet" in merged.columns:
                    sheet_values = merged.pop(f"{column}_sheet").replace("", np.nan)
                    merged[column] = merged[column].astype(object).fillna(sheet_values)
            frame = merged
    return None if frame is None else table_context(frame, highlight=())


def _model_context(folder: str | Path | None, label: str) -> dict[str, Any] | None:
    if not folder:
        return None
    folder = Path(folder)
    context: dict[str, Any] = {"label": label, "folder": str(folder), "curve": None,
                               "thresholds": None, "f1_figure": None, "training": None}
    curve_path = folder / CURVE_TSV
    if curve_path.exists():
        curve = _read_tsv(curve_path, "training curve")
        if not curve.empty:
            context["curve"] = curve_figure(curve, f"{label}: training curve")
    else:
        log.info("%s: no %s in %s", label, CURVE_TSV, folder)
    if (folder / THRESHOLDS_JSON).exists():
        thresholds = _read_json(folder / THRESHOLDS_JSON, "thresholds")
        if isinstance(thresholds, Mapping) and thresholds:
            scalars = _scalars({k: v for k, v in thresholds.items() if k != "f1_curve"})
            context["thresholds"] = table_context(scalars, key=None) if len(scalars) else None
            sweep = f1_curve_table(thresholds)
            if sweep is not None:
                chosen = thresholds.get("detection_threshold")
                context["f1_figure"] = f1_figure(sweep, None if chosen is None else float(chosen))
    if (folder / TRAINING_JSON).exists():
        training = _read_json(folder / TRAINING_JSON, "training summary")
        if isinstance(training, Mapping) and training:
            context["training"] = table_context(_scalars(training), key=None)
    return context


def _points(path: str | Path | None, sample: str) -> np.ndarray | None:
    if not path:
        return None
    from fewlabel.io import read_points_csv

    table = read_points_csv(path, sample=sample, allow_empty=True)
    return table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3)


def _detection_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (inputs.detection_summary_tsv or inputs.detection_model_dir
            or inputs.detection_samples):
        return None
    section: dict[str, Any] = {"table": None, "model": None, "samples": []}
    if inputs.detection_summary_tsv:
        section["table"] = table_context(_read_tsv(inputs.detection_summary_tsv,
                                                   "detection metrics"))
    section["model"] = _model_context(inputs.detection_model_dir, "detection model")
    for entry in inputs.detection_samples:
        sample = str(entry["sample"])
        log.info("report: detection figures of %s", sample)
        volume = _open_volume(entry["image"], sample)
        gt = _points(entry.get("gt"), sample)
        pred = _points(entry["pred"], sample)
        if entry.get("matches"):
            layers = read_matches(entry["matches"], gt, pred, sample=sample)
        else:
            layers = PointLayers(gt=gt, pred=pred)
        counts = {"GT": None if gt is None else len(gt), "predicted": len(pred)}
        if layers.tp_gt is not None:
            counts.update({"TP": len(layers.tp_gt), "FP": len(layers.fp), "FN": len(layers.fn)})
        figures = detection_figures(volume.array, volume.voxel_size, layers, sample=sample,
                                    max_px=max_px)
        legend = ("; green circles: matched ground truth, magenta +: matched predictions, red "
                  "squares: missed ground truth (FN), yellow ×: false predictions (FP)"
                  if layers.tp_gt is not None else
                  "; green circles: ground truth, magenta +: predictions (no matching given)"
                  if gt is not None else "; magenta +: predictions")
        section["samples"].append({"sample": sample, "shape": "×".join(map(str, volume.shape)),
                                   "counts": counts, "legend": legend,
                                   "figures": [{"caption": c, "uri": u} for c, u in figures]})
    return section


def _pcc(metrics: pd.DataFrame | None) -> float | None:
    if metrics is None or metrics.empty:
        return None
    for column in metrics.columns:
        if "pcc" in str(column).lower():
            value = pd.to_numeric(metrics[column], errors="coerce").dropna()
            if len(value):
                return float(value.iloc[0])
    return None


def _isl_figure(sample: str, panels: list[tuple[str, Any]], aspect: float,
                max_px: int = MAX_PX) -> str:
    """Middle z-slices of label-free input, fluorescence target and prediction side by side."""
    n = len(panels)
    first_shape = _zyx(panels[0][1]).shape
    width, height = _panel_size(first_shape[1] * aspect, first_shape[2], width=3.6,
                                limits=(1.2, 5.0))
    fig, axes = _figure(width * n, height + 0.4, ncols=n)
    for ax, (title, array) in zip(axes, panels, strict=True):
        view = _zyx(array)
        f = pooling_factors(view.shape[1:], max_px)
        plane = strided_slice(view, view.shape[0] // 2, f)
        low, high = _limits(plane)
        ax.imshow(plane, cmap="gray" if title.startswith("input") else "magma", vmin=low,
                  vmax=high, extent=_extent(plane.shape, f), aspect=aspect)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{sample}: middle z-slice", fontsize=10)
    return figure_uri(fig)


def _segmentation_overlay(sample: str, image: Any, gt: Any, pred: Any, voxel: Sequence[float],
                          max_px: int) -> str:
    reference = _zyx(image if image is not None else (gt if gt is not None else pred))
    shape = tuple(int(s) for s in reference.shape)
    factors = pooling_factors(shape[1:], max_px)
    z = shape[0] // 2
    labelled = [(name, arr, rgb) for name, arr, rgb in
                (("ground truth", gt, GT_OUTLINE), ("prediction", pred, PRED_OUTLINE))
                if arr is not None]
    for name, arr, _ in labelled:
        if tuple(_zyx(arr).shape) != shape:
            raise InputDataError(f"{name} labels have shape {tuple(_zyx(arr).shape)} but the "
                                 f"image has {shape}.", sample=sample,
                                 fix="pass labels of the same volume.")
    background = [(f"z = {z} (middle slice)",
                   None if image is None else strided_slice(image, z, factors))]
    outlines = [[(name, strided_slice(arr, z, factors), rgb) for name, arr, rgb in labelled]]
    if shape[0] > 1:
        background.append(("z-MIP (labels: max)",
                           None if image is None else max_projection(image, 0,
                                                                     factors=factors)[0]))
        outlines.append([(name, max_projection(arr, 0, factors=factors)[0], rgb)
                         for name, arr, rgb in labelled])
    return outline_figure(background, outlines, factors=factors,
                          aspect=float(voxel[1]) / float(voxel[2]),
                          title=f"{sample}: instance outlines")


def _segmentation_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (inputs.isl_model_dir or inputs.segmenter_model_dir
            or inputs.segmentation_summary_tsv or inputs.segmentation_samples):
        return None
    section: dict[str, Any] = {"table": None, "models": [], "samples": []}
    if inputs.segmentation_summary_tsv:
        section["table"] = table_context(_read_tsv(inputs.segmentation_summary_tsv,
                                                   "segmentation metrics"))
    for folder, label in ((inputs.isl_model_dir, "ISL model (label-free → fluorescence)"),
                          (inputs.segmenter_model_dir, "segmentation model")):
        context = _model_context(folder, label)
        if context is not None:
            section["models"].append(context)
    for entry in inputs.segmentation_samples:
        sample = str(entry["sample"])
        log.info("report: segmentation figures of %s", sample)
        vols = {k: _open_volume(entry[k], sample) for k in
                ("image", "gt_labels", "pred_labels", "target", "pred_fluorescence")
                if entry.get(k)}
        metrics = _read_tsv(entry["metrics_tsv"], "sample metrics") \
            if entry.get("metrics_tsv") else None
        pcc = _pcc(metrics)
        voxel = next(iter(vols.values())).voxel_size if vols else (1.0, 1.0, 1.0)
        aspect = float(voxel[1]) / float(voxel[2])
        figures = []
        if "target" in vols or "pred_fluorescence" in vols:
            panels = [(title, vols[key].array) for key, title in
                      (("image", "input (label-free)"), ("target", "fluorescence target"),
                       ("pred_fluorescence", "predicted fluorescence"
                        + (f" (PCC {pcc:.3f})" if pcc is not None else "")))
                      if key in vols]
            figures.append({"caption": "in-silico labelling", "uri":
                            _isl_figure(sample, panels, aspect, max_px)})
        if "gt_labels" in vols or "pred_labels" in vols:
            arr = {k: (vols[k].array if k in vols else None)
                   for k in ("image", "gt_labels", "pred_labels")}
            figures.append({"caption": "instance outlines", "uri": _segmentation_overlay(
                sample, arr["image"], arr["gt_labels"], arr["pred_labels"], voxel, max_px)})
        section["samples"].append({
            "sample": sample, "pcc": None if pcc is None else f"{pcc:.4f}",
            "metrics": None if metrics is None or metrics.empty else table_context(metrics),
            "figures": figures})
    return section


def _image_for(inputs: ReportInputs, sample: str, mask_attrs: Mapping[str, Any]) -> str | None:
    if sample in inputs.images:
        return str(inputs.images[sample])
    for entry in (*inputs.detection_samples, *inputs.segmentation_samples):
        if str(entry.get("sample")) == sample and entry.get("image"):
            return str(entry["image"])
    source = (mask_attrs.get("fewlabel") or {}).get("source")
    if source and Path(source).exists():
        return str(source)
    return None


def _roi_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (inputs.roi_jsons or inputs.roi_masks):
        return None
    rows = []
    for path in inputs.roi_jsons:
        data = _read_json(path, "ROI summary")
        if not isinstance(data, Mapping):
            raise InputDataError("ROI summary is not a JSON object.", path=path)
        rows.append({"sample": str(data.get("sample") or Path(path).parent.name),
                     "roi_fraction": data.get("roi_fraction"), "pi": data.get("pi"),
                     "min_batch_size": data.get("min_batch_size"),
                     "warnings": "; ".join(map(str, data.get("warnings") or [])) or "–"})
    table = table_context(pd.DataFrame(rows, columns=["sample", "roi_fraction", "pi",
                                                      "min_batch_size", "warnings"]),
                          highlight=()) if rows else None
    figures = []
    for sample, mask_path in inputs.roi_masks.items():
        log.info("report: ROI figure of %s", sample)
        mask = _open_volume(mask_path, sample)
        shape = tuple(int(s) for s in _zyx(mask.array).shape)
        factors = pooling_factors(shape[1:], max_px)
        image_path = _image_for(inputs, sample, mask.attrs)
        background = None
        if image_path is not None:
            image = _open_volume(image_path, sample)
            if tuple(_zyx(image.array).shape) == shape:
                background = max_projection(image.array, 0, factors=factors)[0]
            else:
                log.warning("ROI of %s: image shape %s differs from mask shape %s; mask only",
                            sample, _zyx(image.array).shape, shape)
        mip = max_projection(mask.array, 0, factors=factors)[0]
        uri = outline_figure([("z-MIP" if background is not None else "ROI mask (z-MIP)",
                               background if background is not None else mip.astype(np.float32))],
                             [[("ROI outline", (mip > 0).astype(np.uint8), ROI_OUTLINE)]],
                             factors=factors,
                             aspect=float(mask.voxel_size[1]) / float(mask.voxel_size[2]),
                             title=f"{sample}: ROI")
        figures.append({"sample": sample, "uri": uri})
    return {"table": table, "figures": figures}


def _provenance_section(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    versions = data.get("versions") or {}
    inputs = data.get("inputs") or {}
    return {
        "created": data.get("created"),
        "git_commit": data.get("git_commit"),
        "versions": table_context(pd.DataFrame(
            [{"package": k, "version": v} for k, v in versions.items()],
            columns=["package", "version"]), key=None) if versions else None,
        "inputs": table_context(pd.DataFrame(
            [{"input": k, "sha256": v} for k, v in inputs.items()],
            columns=["input", "sha256"]), key=None) if inputs else None,
    }


def _config_yaml(config: Mapping[str, Any] | None) -> str | None:
    if not config:
        return None
    import yaml

    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)


# --------------------------------------------------------------------------- entry point
def render_report(inputs: ReportInputs, *, max_px: int = MAX_PX) -> str:
    """The report HTML as a string (see :func:`build_report`)."""
    import jinja2

    inputs.validate_structure()
    check_inputs_exist(inputs)
    provenance = None
    if inputs.provenance_json:
        provenance = _read_json(inputs.provenance_json, "provenance record")
        if not isinstance(provenance, Mapping):
            raise InputDataError("provenance record is not a JSON object.",
                                 path=inputs.provenance_json)
    config = inputs.config if inputs.config else (provenance or {}).get("config")
    context = {
        "title": inputs.title or "fewlabel run report",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "created": (provenance or {}).get("created"),
        "samples": _samples_section(inputs),
        "config_yaml": _config_yaml(config),
        "detection": _detection_section(inputs, max_px),
        "segmentation": _segmentation_section(inputs, max_px),
        "roi": _roi_section(inputs, max_px),
        "provenance": _provenance_section(provenance),
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent.parent / "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def build_report(output: str | Path, *, inputs: ReportInputs, max_px: int = MAX_PX) -> None:
    """Write the self-contained HTML run report to ``output`` (atomically).

    Sections (each only when its inputs are given): header with the samples table and the
    configuration; detection (metric table with the pooled ``ALL`` row highlighted, training
    curve, tuned threshold and F1-vs-threshold sweep, per-sample z-/y-MIPs with GT, predictions,
    FP and FN); segmentation / ISL (metric tables, curves, ISL slices with PCC, instance
    outlines on the middle slice and the MIP); ROI (roi.json figures, outline on the MIP);
    provenance (versions, git commit, input checksums) and the metric definitions. Images are
    max-pooled to at most ``max_px`` pixels per side.

    Raises :class:`~fewlabel.errors.InputDataError` naming any listed input that is missing.
    """
    from fewlabel.io import atomic_path

    html = render_report(inputs, max_px=max_px)
    with atomic_path(output) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    log.info("wrote report %s (%.1f MB)", output, Path(output).stat().st_size / 1e6)
