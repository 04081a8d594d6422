"""Histogram correction: percentile clipping + CLAHE on a global grid, and lazy block-wise views.

:class:`SmoothedView` (Gaussian denoising) and :class:`CorrectedView` (clipping + CLAHE) compute
any requested block from the source grown by the operator's reach, so block-wise results equal
whole-volume results (see :mod:`fewlabel.roi`, "Block processing and exactness").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fewlabel.config import RoiConfig
from fewlabel.roi.kernels import kernel_voxels

log = logging.getLogger(__name__)

LEVELS = 2**14 - 1
"""Corrected intensities are CLAHE grey levels 0..LEVELS (skimage's 2¹⁴ levels);
x = level/LEVELS."""


def _clahe_core() -> tuple[Any, int]:
    """skimage's CLAHE core (no per-image stretching) and its grey-level count, if usable."""
    try:
        from skimage.exposure import _adapthist

        core, levels = _adapthist._clahe, int(_adapthist.NR_OF_GRAY)
        probe = core(np.zeros((4, 4), np.uint16), [2, 2], 0.01, 256)
        if np.shape(probe) != (4, 4):
            raise TypeError("unexpected CLAHE core output")
        return core, levels
    except Exception:  # any API change: fall back to the public function
        log.warning(
            "scikit-image CLAHE core unavailable; using equalize_adapthist per block "
            "(block-wise ROI then only approximates whole-volume ROI)"
        )
        return None, 0


_CLAHE_CORE, _CLAHE_LEVELS = _clahe_core()


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
    the *global* range [0, 1] and equalised by the core of
    :func:`skimage.exposure.equalize_adapthist` (identical algorithm, without the public
    function's stretching of each input and output to its own min/max, which would make
    blocks disagree). Size-1 axes are dropped (2D images get 2D CLAHE).
    """
    x = np.asarray(block, dtype=np.float32)
    x = x - np.float32(low)  # new array: never modify the caller's block
    x *= np.float32(1.0 / (high - low))
    np.clip(x, 0.0, 1.0, out=x)
    squeeze = tuple(a for a in range(x.ndim) if x.shape[a] == 1)
    kern = [int(k) for a, k in enumerate(kernel) if a not in squeeze]
    image = np.squeeze(x, axis=squeeze)
    if image.ndim == 0:
        return x
    if _CLAHE_CORE is not None:
        levels = _CLAHE_LEVELS - 1  # == LEVELS
        image *= np.float32(levels)
        quantised = np.rint(image).astype(np.uint16)
        del x, image
        out = _CLAHE_CORE(quantised, kern, clip_limit, nbins)
        del quantised
        out = out.astype(np.float32)
        out *= np.float32(1.0 / levels)
    else:  # pragma: no cover - only with an incompatible scikit-image
        from skimage.exposure import equalize_adapthist

        if image.max() <= image.min():
            return x
        out = equalize_adapthist(image, kernel_size=kern, clip_limit=clip_limit, nbins=nbins)
    return np.asarray(out, dtype=np.float32).reshape(block.shape)


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


class _LazyView:
    """Read-only ZYX array computed block by block from ``source`` (numpy-style slicing)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.shape = tuple(int(s) for s in source.shape)
        self.chunks = tuple(getattr(source, "chunks", None) or self.shape)
        self.ndim = 3
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if key is Ellipsis:
            key = (slice(None),) * 3
        if (
            not isinstance(key, tuple)
            or len(key) != 3
            or not all(isinstance(k, slice) and k.step in (None, 1) for k in key)
        ):
            raise IndexError(f"{type(self).__name__} supports only [z0:z1, y0:y1, x0:x1]")
        block = tuple(slice(*sl.indices(n)[:2]) for sl, n in zip(key, self.shape, strict=True))
        return self._compute(block)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        raise NotImplementedError


class SmoothedView(_LazyView):
    """``gaussian_filter(source, σ)`` (reflect at the volume border), float32, block-wise exact.

    A block is computed from the source grown by the filter radius ``int(4σ + 0.5)`` per axis,
    so it equals the same block of the whole-volume filter.
    """

    def __init__(self, source: Any, sigma_voxels: Sequence[float]) -> None:
        super().__init__(source)
        self.sigma = tuple(float(s) for s in sigma_voxels)
        self.radius = tuple(int(4.0 * s + 0.5) for s in self.sigma)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        outer = tuple(
            slice(max(b.start - r, 0), min(b.stop + r, n))
            for b, r, n in zip(block, self.radius, self.shape, strict=True)
        )
        data = np.asarray(self.source[outer], dtype=np.float32)
        if any(s > 0 for s in self.sigma):
            data = ndimage.gaussian_filter(data, self.sigma, mode="reflect", truncate=4.0)
        return data[
            tuple(
                slice(b.start - o.start, b.stop - o.start)
                for b, o in zip(block, outer, strict=True)
            )
        ]


class CorrectedView(_LazyView):
    """Histogram-corrected intensities (:func:`correct_block`), float32 in [0, 1].

    ``view[block]`` reads ``source`` over :func:`clahe_context` (0.5 to 1.5 CLAHE regions per
    side, start snapped to the region grid), so the result equals the same block of
    whole-volume correction.
    """

    def __init__(
        self, source: Any, low: float, high: float, kernel: Sequence[int], clip_limit: float
    ) -> None:
        super().__init__(source)
        self.low, self.high, self.clip_limit = float(low), float(high), float(clip_limit)
        self.kernel = tuple(int(k) for k in kernel)

    max_tile_bytes: int = 100_000_000
    """Blocks whose CLAHE work (:func:`clahe_tile_bytes`) exceeds this are computed in halves;
    exact either way, the split only trades memory for some recomputed context."""

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        outer = tuple(
            clahe_context(b, k, n) for b, k, n in zip(block, self.kernel, self.shape, strict=True)
        )
        sizes = [b.stop - b.start for b in block]
        tile = [o.stop - o.start for o in outer]
        if clahe_tile_bytes(tile, self.kernel) > self.max_tile_bytes and max(sizes) > 1:
            axis = int(np.argmax(sizes))
            mid = block[axis].start + sizes[axis] // 2
            halves = [
                tuple(slice(b.start, mid) if a == axis else b for a, b in enumerate(block)),
                tuple(slice(mid, b.stop) if a == axis else b for a, b in enumerate(block)),
            ]
            return np.concatenate([self._compute(h) for h in halves], axis=axis)
        out = correct_block(
            np.asarray(self.source[outer]), self.low, self.high, self.kernel, self.clip_limit
        )
        return out[
            tuple(
                slice(b.start - o.start, b.stop - o.start)
                for b, o in zip(block, outer, strict=True)
            )
        ]


def clahe_tile_bytes(shape: Sequence[int], kernel: Sequence[int], nbins: int = 256) -> int:
    """Approximate peak memory of skimage's CLAHE core on a tile of ``shape`` (bytes).

    ~50 bytes per voxel (padded copies, interpolation) plus ~32 per histogram bin of every
    contextual region (``nbins`` int64 counts per region, clipped and mapped copies): with
    small regions the histograms dominate (1-voxel regions on a 0.7 M-voxel tile: ~5 GB).
    """
    regions = math.prod(
        -(-int(s) // max(int(k), 1)) + 1 for s, k in zip(shape, kernel, strict=True)
    )
    return 50 * math.prod(int(s) for s in shape) + 32 * nbins * regions


def clahe_context(block: slice, k: int, size: int) -> slice:
    """The input range CLAHE needs to compute ``block`` exactly along one axis (region ``k``).

    skimage's CLAHE anchors regions ``[jk, (j+1)k)`` at the array origin and maps a voxel
    ``p`` by interpolating the mappings of regions ``J-1`` and ``J``, ``J = ⌊(p + ⌊k/2⌋)/k⌋``.
    The context therefore starts at the region boundary ``(J(start) - 1)k`` (a multiple of
    ``k``, so the grid is the whole volume's) and ends after region ``J(stop - 1)``: 0.5 to 1.5
    regions per side, clipped to the volume (whose border CLAHE treats the same way then).
    """
    start = max(((block.start + k // 2) // k - 1) * k, 0)
    stop = min((((block.stop - 1) + k // 2) // k + 2) * k, size)
    return slice(start, stop)


__all__ = [
    "FALLBACK_CLAHE_VOXELS",
    "LEVELS",
    "MIN_CLAHE_AXIS_VOXELS",
    "MIN_CLAHE_REGION_VOXELS",
    "MIN_SMOOTH_SIGMA_VOXELS",
    "CorrectedView",
    "SmoothedView",
    "clahe_context",
    "clahe_tile_bytes",
    "checked_clahe_kernel",
    "checked_smooth_sigma",
    "clahe_kernel_voxels",
    "correct_block",
]
