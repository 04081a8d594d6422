"""Vectorised CLAHE core, voxel-for-voxel equal to scikit-image's, evaluated on a sub-block.

Contrast-limited adaptive histogram equalisation (Zuiderveld 1994, Graphics Gems IV) as
implemented by :func:`skimage.exposure.equalize_adapthist`'s core ``_clahe``: contextual
regions ``[j k, (j+1) k)`` anchored at the array origin (the array is extended at its end by
reflection to whole regions), a 256-bin histogram per region over grey levels ``q // 65``
(``q`` in 0..2¹⁴-1), each histogram clipped at ``c = max(1, ⌊clip_limit · Π k⌋)`` counts with
the excess redistributed, mapped by its cumulative sum ``⌊min(cumsum · 16383 / Π k, 16383)⌋``,
and every voxel ``p`` mapped by multilinear interpolation of the mappings of the two regions
around it per axis: ``J = ⌊(p + ⌊k/2⌋)/k⌋``, regions ``J-1`` and ``J`` (clamped), weights
``1 - f`` and ``f`` with ``f = ((p + ⌊k/2⌋) mod k)/k``.

Differences from scikit-image's function, none of which changes a value:

* histograms for all regions come from one ``bincount``, and the clipping is vectorised over
  regions (same integer arithmetic, same redistribution order);
* the interpolation is evaluated only for the voxels asked for (``inner``), not for the whole
  context tile, by gathering mapping values with precomputed flat indices instead of
  rearranging the tile into region blocks; the float64 products, their rounding to float32
  and the float32 accumulation run in scikit-image's order, so the uint16 output is identical
  (tested against ``skimage.exposure._adapthist._clahe``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

NR_OF_GRAY = 2**14
"""Grey levels of the CLAHE input and output (scikit-image's ``NR_OF_GRAY``)."""


def clip_histograms(hist: np.ndarray, clip: int) -> np.ndarray:
    """Clip each row of ``hist`` (regions × bins, int64) at ``clip`` and redistribute the excess.

    Zuiderveld's redistribution as in scikit-image's ``clip_histogram``, vectorised over rows:
    the excess is spread evenly (``excess // bins`` per bin below ``clip - excess // bins``),
    bins that would pass the limit are set to it, and what is left is handed out one count at
    a time to bins below the limit, every ``step``-th bin from bin 0, 1, ... (``step =
    max(1, #bins below limit // excess left)``) until nothing is left or a pass over all
    bins gives nothing away. Modifies and returns ``hist``.
    """
    nbins = hist.shape[1]
    over = hist > clip
    excess = np.where(over, hist - clip, 0).sum(axis=1)
    hist[over] = clip
    incr = excess // nbins
    upper = (clip - incr)[:, None]
    low = hist < upper
    excess -= low.sum(axis=1) * incr
    hist += np.where(low, incr[:, None], 0)
    mid = (hist >= upper) & (hist < clip)
    excess += np.where(mid, hist - clip, 0).sum(axis=1)
    hist[mid] = clip
    bins = np.arange(nbins)
    active = np.flatnonzero(excess > 0)
    while active.size:  # one pass over the bins for every row that still has excess
        before = excess[active].copy()
        rows = active
        for index in range(nbins):
            h, left = hist[rows], excess[rows]
            under = h < clip
            step = np.maximum(1, under.sum(axis=1) // left)
            offset = bins - index
            picked = under & (offset >= 0) & (offset % step[:, None] == 0)
            h += picked
            left -= picked.sum(axis=1)
            hist[rows], excess[rows] = h, left
            rows = rows[left > 0]
            if not rows.size:
                break
        left = excess[active]
        active = active[(left > 0) & (left != before)]
    return hist


def region_maps(
    tile: np.ndarray, kernel: Sequence[int], clip_limit: float, nbins: int = 256
) -> np.ndarray:
    """Grey-level mapping (regions..., nbins) float64 of every contextual region of ``tile``.

    ``tile``: uint16 grey levels in 0..2¹⁴-1; regions ``[j k, (j+1) k)`` per axis, the tile
    reflected beyond its end to whole regions (padded exactly as scikit-image pads it).
    """
    k = [int(v) for v in kernel]
    n = [-(-int(s) // kk) for s, kk in zip(tile.shape, k, strict=True)]
    pad = [
        (kk // 2, (kk - s % kk) % kk + math.ceil(kk / 2))
        for kk, s in zip(k, tile.shape, strict=True)
    ]
    if any(p for pair in pad for p in pair):
        tile = np.pad(tile, pad, mode="reflect")
    tile = tile[tuple(slice(kk // 2, kk // 2 + nn * kk) for nn, kk in zip(n, k, strict=True))]
    per_row = math.prod(n[1:])  # regions in one row along axis 0
    shape2 = [v for nn, kk in zip(n[1:], k[1:], strict=True) for v in (nn, kk)]
    order = list(range(0, 2 * len(k) - 2, 2)) + list(range(1, 2 * len(k) - 2, 2))
    ids = (np.arange(per_row, dtype=np.int64) * nbins)[:, None]
    hist = np.empty((math.prod(n), nbins), np.int64)
    for j in range(n[0]):  # one row of regions at a time: temporaries ~8 bytes per row voxel
        binned = (tile[j * k[0] : (j + 1) * k[0]] // np.uint16(1 + NR_OF_GRAY // nbins)).astype(
            np.int64
        )
        rows = binned.reshape([k[0], *shape2]).transpose([0, *(o + 1 for o in order)])
        rows = np.moveaxis(rows.reshape(k[0], per_row, -1), 0, 1).reshape(per_row, -1) + ids
        hist[j * per_row : (j + 1) * per_row] = np.bincount(
            rows.ravel(), minlength=per_row * nbins
        ).reshape(per_row, nbins)
        del binned, rows
    elements = math.prod(k)
    clip = int(np.clip(clip_limit * elements, 1, None)) if clip_limit > 0 else elements
    hist = clip_histograms(hist, clip)
    out = np.cumsum(hist, axis=-1).astype(float)
    out *= (NR_OF_GRAY - 1) / elements
    np.clip(out, None, NR_OF_GRAY - 1, out=out)
    return out.astype(np.int64).astype(np.float64).reshape(*n, nbins)


def clahe_levels(
    tile: np.ndarray,
    kernel: Sequence[int],
    clip_limit: float,
    inner: Sequence[slice] | None = None,
    nbins: int = 256,
    slab: int = 4,
) -> np.ndarray:
    """CLAHE of ``tile`` (uint16 levels) evaluated on ``tile[inner]``; uint16 levels.

    Equals ``skimage.exposure._adapthist._clahe(tile, kernel, clip_limit, nbins)[inner]``;
    temporaries are bounded by ``slab`` planes of ``inner``.
    """
    tile = np.asarray(tile)
    ndim = tile.ndim
    k = [int(v) for v in kernel]
    box = tuple(inner) if inner is not None else tuple(slice(None) for _ in tile.shape)
    box = tuple(slice(*sl.indices(s)[:2]) for sl, s in zip(box, tile.shape, strict=True))
    maps = region_maps(tile, k, clip_limit, nbins)
    flat = maps.ravel()
    n = maps.shape[:ndim]
    strides = [math.prod(n[a + 1 :]) * nbins for a in range(ndim)]
    # per axis: flat offsets of regions J-1 / J (clamped) and their weights 1-f / f
    offsets, weights = [], []
    for a in range(ndim):
        p = np.arange(box[a].start, box[a].stop) + k[a] // 2
        j, r = p // k[a], p % k[a]
        f = np.arange(k[a]) / k[a]
        shape = [1] * ndim
        shape[a] = -1
        offsets.append([(np.clip(j + d, 0, n[a] - 1) * strides[a]).reshape(shape) for d in (-1, 0)])
        weights.append([((1 - f)[r]).reshape(shape), f[r].reshape(shape)])
    bins = tile[box] // np.uint16(1 + NR_OF_GRAY // nbins)
    result = np.empty(bins.shape, np.uint16)
    edges = list(itertools.product((0, 1), repeat=ndim))  # np.ndindex order, as skimage
    for z0 in range(0, bins.shape[0], slab):
        z = slice(z0, min(z0 + slab, bins.shape[0]))
        b = bins[z].astype(np.int64)
        acc = np.zeros(b.shape, np.float32)
        for edge in edges:
            index = b + offsets[0][edge[0]][z]
            for a in range(1, ndim):
                index += offsets[a][edge[a]]
            # skimage's weight: np.prod([w_x, w_y, w_z], 0) == (w_x * w_y) * w_z
            coeff = weights[ndim - 1][edge[ndim - 1]]
            if ndim == 1:
                coeff = coeff[z]
            for a in range(ndim - 2, -1, -1):
                coeff = coeff * (weights[a][edge[a]][z] if a == 0 else weights[a][edge[a]])
            acc += (np.take(flat, index) * coeff).astype(np.float32)
        result[z] = acc.astype(np.uint16)
    return result


__all__ = ["NR_OF_GRAY", "clahe_levels", "clip_histograms", "region_maps"]
