"""Histogram correction: percentile clipping + CLAHE on a global grid, and kernel checks.

The lazy block-wise views built on these functions are in :mod:`fewlabel.roi.views`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.config import RoiConfig
from fewlabel.roi.clahe import clahe_levels
from fewlabel.roi.kernels import kernel_voxels

log = logging.getLogger(__name__)

LEVELS = 2**14 - 1
"""Corrected intensities are CLAHE grey levels 0..LEVELS (skimage's 2¹⁴ levels);
x = level/LEVELS."""


def _clahe_core() -> tuple[Any, int]:
    """scikit-image's CLAHE core and its grey-level count, if importable (the reference that
    :mod:`fewlabel.roi.clahe` is tested against; the pipeline does not use it)."""
    try:
        from skimage.exposure import _adapthist

        return _adapthist._clahe, int(_adapthist.NR_OF_GRAY)
    except Exception:  # pragma: no cover - private API moved
        return None, 0


_CLAHE_CORE, _CLAHE_LEVELS = _clahe_core()


def quantise(block: np.ndarray, low: float, high: float) -> np.ndarray:
    """``rint(clip((x − low)/(high − low), 0, 1) · LEVELS)`` as uint16 CLAHE grey levels."""
    x = np.asarray(block, dtype=np.float32)
    x = x - np.float32(low)  # new array: never modify the caller's block
    x *= np.float32(1.0 / (high - low))
    np.clip(x, 0.0, 1.0, out=x)
    x *= np.float32(LEVELS)
    return np.rint(x, out=x).astype(np.uint16)


def _squeezed_clahe(
    tile: np.ndarray, kernel: Sequence[int], clip_limit: float, inner: Sequence[slice]
) -> np.ndarray:
    """:func:`~fewlabel.roi.clahe.clahe_levels` of ``tile[inner]`` with size-1 axes of the tile
    dropped (a single plane gets 2-D CLAHE)."""
    squeeze = [a for a in range(tile.ndim) if tile.shape[a] == 1]
    keep = [a for a in range(tile.ndim) if a not in squeeze]
    if not keep:
        return np.asarray(tile[tuple(inner)], dtype=np.uint16)
    out = clahe_levels(
        np.squeeze(tile, axis=tuple(squeeze)),
        [int(kernel[a]) for a in keep],
        clip_limit,
        [inner[a] for a in keep],
    )
    return out.reshape([inner[a].stop - inner[a].start for a in range(tile.ndim)])


def correct_block(
    block: np.ndarray,
    low: float,
    high: float,
    kernel: Sequence[int],
    clip_limit: float,
    nbins: int = 256,
) -> np.ndarray:
    """Percentile clipping to [0, 1] then CLAHE; returns float32 in [0, 1] (ZYX).

    ``x' = clip((x − low)/(high − low), 0, 1)`` is quantised to CLAHE's 2¹⁴ grey levels over
    the *global* range [0, 1] (:func:`quantise`) and equalised by
    :func:`fewlabel.roi.clahe.clahe_levels` (scikit-image's CLAHE core, voxel for voxel,
    without the public function's stretching of each input and output to its own min/max,
    which would make blocks disagree). Size-1 axes are dropped (2D images get 2D CLAHE).
    """
    levels = quantise(block, low, high)
    inner = [slice(0, s) for s in levels.shape]
    out = _squeezed_clahe(levels, kernel, clip_limit, inner).astype(np.float32)
    out *= np.float32(1.0 / LEVELS)
    return out.reshape(np.shape(block))


MIN_CLAHE_AXIS_VOXELS = 2
"""A CLAHE region must span at least this many voxels along every axis the volume has."""
MIN_CLAHE_REGION_VOXELS = 64
"""... and hold at least this many voxels: below, its histogram is a handful of counts (a
1-voxel region maps every voxel to 0 or 1) and CLAHE's per-region work (a 256-bin histogram
per region) makes it slow and memory-hungry."""
FALLBACK_CLAHE_VOXELS = 8
"""Region side (voxels, clipped to the volume) used on every shorter axis when the configured
region is below the minimum."""
MIN_SMOOTH_SIGMA_VOXELS = 0.5
"""A pre-smoothing σ below this on every axis is a no-op (the filter's centre weight > 0.8);
it is then raised to this on those axes."""


def clahe_kernel_voxels(
    params: RoiConfig,
    voxel_size: Sequence[float],
    shape: Sequence[int],
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> tuple[int, int, int]:
    """CLAHE region size in voxels (z, y, x), see :func:`checked_clahe_kernel`."""
    return checked_clahe_kernel(params, voxel_size, shape, sample=sample, path=path)[0]


def checked_clahe_kernel(
    params: RoiConfig,
    voxel_size: Sequence[float],
    shape: Sequence[int],
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> tuple[tuple[int, int, int], dict[str, Any] | None]:
    """CLAHE region size in voxels (z, y, x) and the fallback applied to it, if any.

    µm / voxel size, rounded, within [1, shape] (or ``clahe_kernel_voxels``). The µm
    conversion is bounded (:func:`fewlabel.roi.kernels.kernel_voxels`: ConfigError naming
    ``roi.clahe_kernel_um`` for a voxel size in the wrong unit). A region shorter than
    :data:`MIN_CLAHE_AXIS_VOXELS` along an axis or smaller than
    :data:`MIN_CLAHE_REGION_VOXELS` in all (coarse voxels: 2 µm at 5 x 2 x 2 µm voxels is a
    1-voxel region) is raised to :data:`FALLBACK_CLAHE_VOXELS` on every shorter axis; the
    warning is logged and returned as ``{"key", "requested", "used", "unit", "reason"}``.
    """
    if params.clahe_kernel_voxels is not None:
        key = "roi.clahe_kernel_voxels"
        raw = [float(v) for v in params.clahe_kernel_voxels]
    else:
        key = "roi.clahe_kernel_um"
        raw = list(
            kernel_voxels(
                key,
                params.clahe_kernel_um or (),
                voxel_size,
                shape,
                sample=sample,
                path=path,
            )
        )
    sides = [max(int(s), 1) for s in shape]
    kernel = tuple(int(min(max(round(k), 1), s)) for k, s in zip(raw, sides, strict=True))
    short = [
        a
        for a, (k, s) in enumerate(zip(kernel, sides, strict=True))
        if k < min(s, MIN_CLAHE_AXIS_VOXELS)
    ]
    region = math.prod(kernel)
    if not short and region >= min(MIN_CLAHE_REGION_VOXELS, math.prod(sides)):
        return kernel, None  # type: ignore[return-value]
    used = tuple(min(max(k, FALLBACK_CLAHE_VOXELS), s) for k, s in zip(kernel, sides, strict=True))
    shown = (
        f"{tuple(params.clahe_kernel_um or ())} µm at voxel size "
        f"{tuple(float(v) for v in voxel_size)} µm"
        if params.clahe_kernel_voxels is None
        else "given in voxels"
    )
    reason = (
        f"the CLAHE region {key} ({shown}) is {kernel} voxels (z, y, x): "
        + (
            f"fewer than {MIN_CLAHE_AXIS_VOXELS} voxels along axis "
            + ", ".join("zyx"[a] for a in short)
            if short
            else f"{region} voxels in all, fewer than {MIN_CLAHE_REGION_VOXELS}"
        )
        + f", too small for a histogram (and slow); using {used} voxels instead. Fix: set "
        f"roi.clahe_kernel_um to a few object diameters (at least {FALLBACK_CLAHE_VOXELS} "
        "voxels per axis) or roi.clahe_kernel_voxels."
    )
    log.warning("sample %s: %s", sample, reason)
    adjustment = {
        "key": key,
        "requested": list(kernel),
        "used": list(used),
        "unit": "voxel",
        "reason": reason,
    }
    return used, adjustment  # type: ignore[return-value]


def checked_smooth_sigma(
    params: RoiConfig,
    voxel_size: Sequence[float],
    shape: Sequence[int],
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> tuple[tuple[float, ...], dict[str, Any] | None]:
    """Pre-smoothing σ in voxels (z, y, x) and the fallback applied to it, if any.

    ``roi.smooth_sigma_um`` / voxel size (bounded, :func:`kernel_voxels`). A positive σ below
    :data:`MIN_SMOOTH_SIGMA_VOXELS` on every axis the volume has (0.15 µm at 2 µm voxels is
    0.075 voxel: no smoothing at all) is raised to that on those axes, with a warning that is
    logged and returned as ``{"key", "requested", "used", "unit", "reason"}``.
    """
    key = "roi.smooth_sigma_um"
    sigma = kernel_voxels(key, params.smooth_sigma_um, voxel_size, shape, sample=sample, path=path)
    axes = [a for a, s in enumerate(shape) if int(s) > 1]
    if params.smooth_sigma_um <= 0 or not axes:
        return sigma, None
    if any(sigma[a] >= MIN_SMOOTH_SIGMA_VOXELS for a in axes):
        return sigma, None
    used = tuple(max(s, MIN_SMOOTH_SIGMA_VOXELS) if a in axes else s for a, s in enumerate(sigma))
    requested = tuple(round(s, 4) for s in sigma)
    reason = (
        f"{key} = {params.smooth_sigma_um:g} µm at voxel size "
        f"{tuple(float(v) for v in voxel_size)} µm is {requested} voxels (z, y, x), below "
        f"{MIN_SMOOTH_SIGMA_VOXELS} voxel on every axis: no smoothing at all; using σ = "
        f"{tuple(round(s, 4) for s in used)} voxels instead. Fix: set {key} to about half a "
        "voxel or more (or 0 to disable smoothing)."
    )
    log.warning("sample %s: %s", sample, reason)
    adjustment = {
        "key": key,
        "requested": list(sigma),
        "used": list(used),
        "unit": "voxel",
        "reason": reason,
    }
    return used, adjustment


__all__ = [
    "FALLBACK_CLAHE_VOXELS",
    "quantise",
    "LEVELS",
    "MIN_CLAHE_AXIS_VOXELS",
    "MIN_CLAHE_REGION_VOXELS",
    "MIN_SMOOTH_SIGMA_VOXELS",
    "checked_clahe_kernel",
    "checked_smooth_sigma",
    "clahe_kernel_voxels",
    "correct_block",
]
