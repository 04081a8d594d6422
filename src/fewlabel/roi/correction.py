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


def clahe_kernel_voxels(
    params: RoiConfig,
    voxel_size: Sequence[float],
    shape: Sequence[int],
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> tuple[int, int, int]:
    """CLAHE region size in voxels (z, y, x): µm / voxel size, rounded, within [1, shape].

    The µm conversion is bounded (:func:`fewlabel.roi.kernels.kernel_voxels`: ConfigError
    naming ``roi.clahe_kernel_um`` for a voxel size in the wrong unit).
    """
    if params.clahe_kernel_voxels is not None:
        raw = [float(v) for v in params.clahe_kernel_voxels]
    else:
        raw = list(
            kernel_voxels(
                "roi.clahe_kernel_um",
                params.clahe_kernel_um or (),
                voxel_size,
                shape,
                sample=sample,
                path=path,
            )
        )
    return tuple(
        int(min(max(round(k), 1), max(s, 1)))  # type: ignore[return-value]
        for k, s in zip(raw, shape, strict=True)
    )


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

    max_tile_voxels: int = 2_000_000
    """Blocks whose CLAHE context exceeds this are computed in halves (CLAHE needs ~50 bytes
    per context voxel, so ~100 MB per tile); exact either way, the split only trades memory
    for some recomputed context."""

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        outer = tuple(
            clahe_context(b, k, n) for b, k, n in zip(block, self.kernel, self.shape, strict=True)
        )
        sizes = [b.stop - b.start for b in block]
        if math.prod(o.stop - o.start for o in outer) > self.max_tile_voxels and max(sizes) > 1:
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
    "LEVELS",
    "CorrectedView",
    "SmoothedView",
    "clahe_context",
    "clahe_kernel_voxels",
    "correct_block",
]
