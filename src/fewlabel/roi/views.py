"""Lazy block-wise views of the ROI operators: smoothing, quantisation, CLAHE.

:class:`SmoothedView` (Gaussian denoising), :class:`QuantisedView` (clipping to CLAHE grey
levels), :class:`ClaheView` and :class:`CorrectedView` (clipping + CLAHE) compute any
requested block from the source grown by the operator's reach, so block-wise results equal
whole-volume results (see :mod:`fewlabel.roi`, "Block processing and exactness").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from fewlabel.blocks import expand_block
from fewlabel.roi.correction import LEVELS, _squeezed_clahe, quantise


class _LazyView(ABC):
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

    @abstractmethod
    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        """The exact values of ``block`` (start/stop slices inside the volume)."""


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
        outer, inner = expand_block(block, self.radius, self.shape)
        data = np.asarray(self.source[outer], dtype=np.float32)
        if any(s > 0 for s in self.sigma):
            data = ndimage.gaussian_filter(data, self.sigma, mode="reflect", truncate=4.0)
        return data[inner]


class QuantisedView(_LazyView):
    """:func:`quantise` of ``source`` (pointwise): uint16 CLAHE grey levels 0..LEVELS."""

    def __init__(self, source: Any, low: float, high: float) -> None:
        super().__init__(source)
        self.low, self.high = float(low), float(high)
        self.dtype = np.dtype(np.uint16)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        return quantise(np.asarray(self.source[block]), self.low, self.high)


class ClaheView(_LazyView):
    """CLAHE (:func:`fewlabel.roi.clahe.clahe_levels`) of uint16 grey levels, block-wise exact.

    ``view[block]`` builds the region histograms from ``source`` over :func:`clahe_context`
    (0.5 to 1.5 CLAHE regions per side, start snapped to the region grid) and interpolates
    only the block's voxels, so the result equals the same block of whole-volume CLAHE.
    """

    def __init__(self, source: Any, kernel: Sequence[int], clip_limit: float) -> None:
        super().__init__(source)
        self.kernel = tuple(int(k) for k in kernel)
        self.clip_limit = float(clip_limit)
        self.dtype = np.dtype(np.uint16)

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
        inner = [
            slice(b.start - o.start, b.stop - o.start) for b, o in zip(block, outer, strict=True)
        ]
        levels = np.asarray(self.source[outer], dtype=np.uint16)
        return _squeezed_clahe(levels, self.kernel, self.clip_limit, inner)


class CorrectedView(_LazyView):
    """Histogram-corrected intensities (:func:`correct_block`), float32 in [0, 1].

    :class:`ClaheView` of :class:`QuantisedView` of ``source``: block-wise exact.
    """

    def __init__(
        self, source: Any, low: float, high: float, kernel: Sequence[int], clip_limit: float
    ) -> None:
        super().__init__(source)
        self.low, self.high, self.clip_limit = float(low), float(high), float(clip_limit)
        self.kernel = tuple(int(k) for k in kernel)
        self.levels = ClaheView(QuantisedView(source, low, high), kernel, clip_limit)

    @property
    def max_tile_bytes(self) -> int:
        return self.levels.max_tile_bytes

    @max_tile_bytes.setter
    def max_tile_bytes(self, value: int) -> None:
        self.levels.max_tile_bytes = int(value)

    def _compute(self, block: tuple[slice, ...]) -> np.ndarray:
        out = self.levels[block].astype(np.float32)
        out *= np.float32(1.0 / LEVELS)
        return out


def clahe_tile_bytes(shape: Sequence[int], kernel: Sequence[int], nbins: int = 256) -> int:
    """Approximate peak memory (bytes) of CLAHE (:mod:`fewlabel.roi.clahe`) on a tile.

    ~12 bytes per voxel (padded copy, float32 quantisation) plus ~32 per histogram bin of
    every contextual region (``nbins`` int64 counts per region, clipped and mapped copies):
    with small regions the histograms dominate (1-voxel regions on a 0.7 M-voxel tile: ~5 GB).
    """
    regions = math.prod(
        -(-int(s) // max(int(k), 1)) + 1 for s, k in zip(shape, kernel, strict=True)
    )
    return 12 * math.prod(int(s) for s in shape) + 32 * nbins * regions


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
    "ClaheView",
    "CorrectedView",
    "QuantisedView",
    "SmoothedView",
    "clahe_context",
    "clahe_tile_bytes",
]
