"""Matplotlib (Agg) figures of the report, each returned as a ``data:image/png;base64`` URI.

Points are drawn in voxel coordinates on an image whose extent is the full volume, so no
coordinate is rescaled by hand.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.errors import InputDataError
from fewlabel.io.omezarr import zyx_view
from fewlabel.report.projections import (
    MAX_PX,
    max_projection,
    pooling_factors,
    strided_slice,
)

DPI = 80  #: figure resolution
MAX_POINTS_DRAWN = 20000  #: per marker layer; more points are subsampled for display

# marker styles (colour-blind-friendly pairs: green/magenta, red/yellow)
GT_STYLE = {"marker": "o", "facecolors": "none", "edgecolors": "#00e676", "linewidths": 1.0}
PRED_STYLE = {"marker": "+", "c": "#ff40ff", "linewidths": 1.0}
FN_STYLE = {"marker": "s", "facecolors": "none", "edgecolors": "#ff1744", "linewidths": 1.4}
FP_STYLE = {"marker": "x", "c": "#ffd600", "linewidths": 1.4}
UNSCORED_STYLE = {"marker": "+", "c": "#9e9e9e", "linewidths": 1.0}
GT_OUTLINE = (0.0, 0.9, 0.46)  # RGB of ground-truth instance outlines
PRED_OUTLINE = (1.0, 0.25, 1.0)  # RGB of predicted instance outlines
ROI_OUTLINE = (0.0, 0.9, 1.0)


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


def _limits(
    image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)
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


def _panel_size(
    rows_um: float, cols_um: float, width: float = 7.0, limits: tuple[float, float] = (0.8, 8.0)
) -> tuple[float, float]:
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
    unscored: np.ndarray | None = None  # outside the test volume's annotated region

    def layers(self) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        """(label, points, style) in drawing order."""
        if self.tp_gt is not None:
            spec = [
                ("GT matched (TP)", self.tp_gt, GT_STYLE),
                ("prediction matched (TP)", self.tp_pred, PRED_STYLE),
                ("FN: missed GT", self.fn, FN_STYLE),
                ("FP: false prediction", self.fp, FP_STYLE),
            ]
            if self.unscored is not None and len(self.unscored):
                spec.append(("prediction, not scored", self.unscored, UNSCORED_STYLE))
        else:
            spec = [("ground truth", self.gt, GT_STYLE), ("prediction", self.pred, PRED_STYLE)]
        return [
            (label, np.zeros((0, 3)) if pts is None else pts, style)
            for label, pts, style in spec
            if pts is not None or label.startswith("pred")
        ]


def detection_figures(
    image: Any,
    voxel_size: Sequence[float],
    layers: PointLayers,
    *,
    sample: str,
    max_px: int = MAX_PX,
) -> list[tuple[str, str]]:
    """z-MIP (and y-MIP when Z > 1) of ``image`` with GT / predicted / FP / FN markers.

    Returns ``[(caption, data_uri), ...]``.
    """
    vz, vy, vx = (float(v) for v in voxel_size)
    shape = tuple(int(s) for s in zyx_view(image).shape)
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
        ax.imshow(
            mip,
            cmap="gray",
            vmin=low,
            vmax=high,
            extent=_extent(mip.shape, factors),
            aspect=aspect,
            interpolation="antialiased",
        )
        handles = []
        for label, points, style in drawn:
            shown = _thin(np.asarray(points, float).reshape(-1, 3))
            note = (
                f" ({len(points)})"
                if len(shown) == len(points)
                else f" ({len(shown)} of {len(points)} drawn)"
            )
            handles.append(
                ax.scatter(shown[:, cx], shown[:, cy], s=size, label=label + note, **style)
            )
        ax.set_xlim(-0.5, shape[2] - 0.5)
        ax.set_ylim(shape[cy] - 0.5, -0.5)
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)" if axis == 0 else "z (voxels)")
        ax.set_title(f"{sample}: {name}", fontsize=10)
        if handles:
            ax.legend(
                handles=handles,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize=8,
                frameon=False,
                borderaxespad=0.0,
            )
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


def outline_figure(
    background: list[tuple[str, np.ndarray | None]],
    outlines: list[list[tuple[str, np.ndarray, Sequence[float]]]],
    *,
    factors: Sequence[int],
    aspect: float,
    title: str,
) -> str:
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
            ax.imshow(
                _outline_rgba(labels, rgb), extent=extent, aspect=aspect, interpolation="nearest"
            )
            legend[label] = rgb
        ax.set_title(panel, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    if legend:
        fig.legend(
            handles=_legend_patches(legend.items()),
            loc="lower center",
            ncol=len(legend),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
    return figure_uri(fig)


CURVE_BOOKKEEPING = ("epoch", "seconds", "best", "lr")
"""Curve columns that are not plotted: the x axis, wall-clock time (differs between identical
runs, and is no score), the best-epoch flag and a learning rate (as ``plot_curve`` of the model
folder's curve.png)."""


def curve_panels(curve: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The columns of a training curve that :func:`curve_figure` plots: losses (left panel) and
    scores (right panel); :data:`CURVE_BOOKKEEPING` columns (epoch, seconds, best) are not."""
    columns = [
        c
        for c in curve.columns
        if c not in CURVE_BOOKKEEPING and pd.api.types.is_numeric_dtype(curve[c])
    ]
    losses = [c for c in columns if "loss" in c.lower()]
    return losses, [c for c in columns if c not in losses]


def curve_figure(curve: pd.DataFrame, title: str) -> str:
    """Every numeric column of a training curve against ``epoch`` (losses left, log axis)."""
    from matplotlib.ticker import MaxNLocator

    x = curve["epoch"] if "epoch" in curve.columns else pd.Series(range(1, len(curve) + 1))
    losses, others = curve_panels(curve)
    groups = [g for g in (losses, others) if g]
    fig, axes = _figure(4.6 * max(1, len(groups)), 3.0, ncols=max(1, len(groups)))
    for ax, group in zip(axes, groups or [[]], strict=True):
        for column in group:
            ax.plot(x, curve[column], marker=".", markersize=3, label=column)
        values = curve[group].to_numpy(float) if group else np.zeros(0)
        finite = values[np.isfinite(values)]
        if (
            group is losses
            and finite.size
            and (finite > 0).all()
            and finite.max() / finite.min() > 20
        ):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if group is losses else "value")
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return figure_uri(fig)


def f1_figure(table: pd.DataFrame, chosen: float | None) -> str:
    """Pooled F1 (and P, R when present) against the detection threshold."""
    fig, axes = _figure(5.0, 3.0)
    ax = axes[0]
    for column in ("f1", "precision", "recall"):
        if column in table.columns:
            ax.plot(
                table["threshold"],
                table[column],
                label=column,
                linewidth=2.0 if column == "f1" else 1.0,
            )
    if chosen is not None and math.isfinite(chosen):
        ax.axvline(chosen, color="k", linestyle="--", linewidth=1, label=f"chosen {chosen:.4g}")
    ax.set_xlabel("detection threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("validation F1 vs threshold", fontsize=10)
    return figure_uri(fig)


def _isl_figure(
    sample: str, panels: list[tuple[str, Any]], aspect: float, max_px: int = MAX_PX
) -> str:
    """Middle z-slices of label-free input, fluorescence target and prediction side by side."""
    n = len(panels)
    first_shape = zyx_view(panels[0][1]).shape
    width, height = _panel_size(
        first_shape[1] * aspect, first_shape[2], width=3.6, limits=(1.2, 5.0)
    )
    fig, axes = _figure(width * n, height + 0.4, ncols=n)
    for ax, (title, array) in zip(axes, panels, strict=True):
        view = zyx_view(array)
        f = pooling_factors(view.shape[1:], max_px)
        plane = strided_slice(view, view.shape[0] // 2, f)
        low, high = _limits(plane)
        ax.imshow(
            plane,
            cmap="gray" if title.startswith("input") else "magma",
            vmin=low,
            vmax=high,
            extent=_extent(plane.shape, f),
            aspect=aspect,
        )
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{sample}: middle z-slice", fontsize=10)
    return figure_uri(fig)


def _segmentation_overlay(
    sample: str, image: Any, gt: Any, pred: Any, voxel: Sequence[float], max_px: int
) -> str:
    reference = zyx_view(image if image is not None else (gt if gt is not None else pred))
    shape = tuple(int(s) for s in reference.shape)
    factors = pooling_factors(shape[1:], max_px)
    z = shape[0] // 2
    labelled = [
        (name, arr, rgb)
        for name, arr, rgb in (("ground truth", gt, GT_OUTLINE), ("prediction", pred, PRED_OUTLINE))
        if arr is not None
    ]
    for name, arr, _ in labelled:
        if tuple(zyx_view(arr).shape) != shape:
            raise InputDataError(
                f"{name} labels have shape {tuple(zyx_view(arr).shape)} but the image has {shape}.",
                sample=sample,
                fix="pass labels of the same volume.",
            )
    background = [
        (f"z = {z} (middle slice)", None if image is None else strided_slice(image, z, factors))
    ]
    outlines = [[(name, strided_slice(arr, z, factors), rgb) for name, arr, rgb in labelled]]
    if shape[0] > 1:
        background.append(
            (
                "z-MIP (labels: max)",
                None if image is None else max_projection(image, 0, factors=factors)[0],
            )
        )
        outlines.append(
            [(name, max_projection(arr, 0, factors=factors)[0], rgb) for name, arr, rgb in labelled]
        )
    return outline_figure(
        background,
        outlines,
        factors=factors,
        aspect=float(voxel[1]) / float(voxel[2]),
        title=f"{sample}: instance outlines",
    )
