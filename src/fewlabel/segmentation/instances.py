"""Instance splitting of a (mask probability, distance) prediction: h-maxima markers + watershed.

Seed procedure (mask + distance heads, ISL / few-image instance segmentation)::

    F       = {mask_prob > mask_threshold}                          foreground
    M       = h-maxima(distance, h) ∩ F, labelled per HMAX plateau   one marker per object
    labels  = watershed(−distance, M, mask=F)                        (6-connected flooding)
    [fill holes per object]  [remove objects with < min_size voxels]

Conventions: volumes are ZYX float arrays (2D → Z = 1); the output is ``uint32`` with 0 =
background and ids 1..N numbered in the raster order (global C-order linear index) of each
object's marker's first voxel. Outside ``F`` the distance is replaced by a constant at least
``2h + 1`` below every foreground value, so every connected foreground component holds at least
one marker and the markers inside ``F`` do not depend on that constant. Exact ties of the
distance are broken by a tiny (1e-12) pseudo-random function of the *global* voxel index, so
watershed fronts meeting on a plateau are resolved identically in a whole volume and in blocks.

Chunk-safe version (:func:`fewlabel.segmentation.instances_chunked.split_instances_chunked`),
three passes over output-chunk blocks:

A. each block reads block ± halo, computes the markers there and keeps the ones it *owns*:
   a marker is owned by the block whose inner region holds its first voxel (lowest global
   linear index) — so every marker is counted exactly once; the owned first-voxel indices of all
   blocks are gathered and sorted → global id = rank + 1 (unique, deterministic);
B. each block recomputes markers + watershed (+ hole filling) on block ± halo, maps its local
   markers to global ids through their first-voxel index and writes its inner region only
   (writers own whole chunks); per-id voxel counts are accumulated;
C. only if ``min_size > 0``: ids of objects smaller than ``min_size`` become 0 and the remaining
   ids are renumbered consecutively (same rule as the whole-volume path).

(The implementation fuses A and B: one markers + watershed pass writes local ids and reports the
owned first voxels, then a cheap pass maps local ids to global ids; same result.)

When every object (including the saddles that decide its h-maxima) lies within ``halo`` voxels of
any block it touches — i.e. objects are smaller than the halo — pass B sees each object, its
marker and all competing neighbours exactly as the whole-volume computation does, and the
chunked labelling equals :func:`split_instances` voxel for voxel (ids included).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from fewlabel.config import InstancesConfig, parse
from fewlabel.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity for markers
_TIE_EPS = 1e-12


def _check_values(
    mask_threshold: Any, h: Any, min_size: Any, halo: Sequence[int] = (0, 0, 0)
) -> None:
    """The instance parameters checked by :class:`~fewlabel.config.InstancesConfig`, with
    numbers only ('auto' values are resolved from thresholds.json by the stage first)."""
    for name, value in (("mask_threshold", mask_threshold), ("h", h)):
        if isinstance(value, str):
            raise ConfigError(
                f"{name} {value!r} must be a number here ('auto' is resolved from "
                "the segmenter's thresholds.json by resolve_auto_parameters).",
                fix=f"pass the tuned {name} (a number).",
            )
    parse(InstancesConfig, mask_threshold=mask_threshold, h=h, min_size=min_size, halo=halo)


FALLBACK_H = 0.1  #: ``h`` for 'auto' when the segmenter tuned none (no whole validation image)


def resolve_auto_parameters(
    params: InstancesConfig, model_dir: str | Path | None, *, sample: str | None = None
) -> tuple[InstancesConfig, dict[str, str]]:
    """``params`` with ``'auto'`` mask_threshold / h taken from the segmenter's thresholds.json.

    Returns the resolved params and, per key, where its value came from (``"config"``, the
    thresholds file, or the fallback). A model without a tuned ``h`` (no whole validation
    image) falls back to :data:`FALLBACK_H` with a warning. ConfigError when a value is
    'auto' and no ``model_dir`` is given.
    """
    from fewlabel.detection.log.baseline import read_threshold, read_thresholds

    keys = ("mask_threshold", "h")
    auto = [k for k in keys if getattr(params, k) == "auto"]
    sources = {k: "config" for k in keys}
    if not auto:
        return params, sources
    if not model_dir:
        raise ConfigError(
            f"{' and '.join(auto)} 'auto' needs the segmenter model folder.",
            sample=sample,
            fix="pass --model-dir, or give numbers.",
        )
    path = f"{model_dir}/thresholds.json"
    changes: dict[str, float] = {}
    if "mask_threshold" in auto:
        changes["mask_threshold"] = read_threshold(model_dir, "mask_threshold")
        sources["mask_threshold"] = path
    if "h" in auto:
        if read_thresholds(model_dir).get("h") is None:
            log.warning(
                "sample %s: %s has no tuned h (no whole validation image); using h = %g",
                sample,
                path,
                FALLBACK_H,
            )
            changes["h"], sources["h"] = FALLBACK_H, "default (no tuned value)"
        else:
            changes["h"], sources["h"] = read_threshold(model_dir, "h"), path
    resolved = type(params).model_validate({**params.model_dump(), **changes})
    return resolved, sources


# --------------------------------------------------------------------------- core (one region)
def _linear_index(
    origin: Sequence[int], shape: Sequence[int], global_shape: Sequence[int]
) -> np.ndarray:
    """Global C-order linear index of every voxel of the region ``origin + [0, shape)``."""
    gz, gy, gx = (int(s) for s in global_shape)
    z = np.arange(origin[0], origin[0] + shape[0], dtype=np.int64)[:, None, None]
    y = np.arange(origin[1], origin[1] + shape[1], dtype=np.int64)[None, :, None]
    x = np.arange(origin[2], origin[2] + shape[2], dtype=np.int64)[None, None, :]
    return (z * gy + y) * gx + x


def _tie_break(lin: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from global indices (splitmix64)."""
    x = lin.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _markers(
    mask_prob: np.ndarray,
    distance: np.ndarray,
    *,
    mask_threshold: float,
    h: float,
    origin: Sequence[int],
    global_shape: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Foreground, labelled h-maxima markers (local ids 1..n) and each marker's first voxel,
    computed on the whole region at once (the reference for
    :func:`~fewlabel.segmentation.instances_sparse.segment_sparse`).

    Returns ``(fg, distance64, marker_labels, first_index)`` where ``first_index[i - 1]`` is the
    lowest global linear index among the voxels of local marker ``i``.
    """
    fg = np.asarray(mask_prob) > mask_threshold
    dist = np.asarray(distance, dtype=np.float64)
    if not fg.any():
        return fg, dist, np.zeros(fg.shape, np.int32), np.zeros(0, np.int64)
    low = _floor_value(dist[fg], h)
    lifted = np.where(fg, dist, low)
    labels, n = _h_maxima_labels(lifted, h)
    labels[~fg] = 0
    return (
        fg,
        dist,
        labels.astype(np.int32, copy=False),
        _first_voxels(labels, n, origin, global_shape),
    )


def _floor_value(values: np.ndarray, h: float) -> float:
    """The constant that replaces the distance outside the foreground (>= 2h + 1 below it)."""
    if not np.isfinite(values).all():
        raise InputDataError(
            "distance map has NaN/Inf values inside the foreground.",
            fix="check the prediction (model output) for non-finite values.",
        )
    return min(float(values.min()), 0.0) - 2.0 * h - 1.0


def _first_voxels(
    labels: np.ndarray, n: int, origin: Sequence[int], global_shape: Sequence[int]
) -> np.ndarray:
    """Lowest global linear index of the voxels of each label 1..n (``labels`` at ``origin``)."""
    coords = np.nonzero(labels)
    ids = labels[coords]
    lin = (
        ((coords[0].astype(np.int64) + origin[0]) * global_shape[1] + coords[1] + origin[1])
        * global_shape[2]
        + coords[2]
        + origin[2]
    )
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ids, lin)
    return first[1:]


def _h_maxima_labels(image: np.ndarray, h: float) -> tuple[np.ndarray, int]:
    """Labelled h-maxima: ``skimage.morphology.h_maxima`` tops, grouped by HMAX plateau.

    As in ``h_maxima``: ``HMAX = R^δ_f(f − h − res)`` (reconstruction by dilation, 26-connected,
    ``res`` = float resolution) and the tops are ``f − HMAX ≥ h``. Tops of equal height joined
    by a path that stays above ``max − h`` lie on one regional-maximum plateau of HMAX (Soille's
    h-maxima transform) and get ONE label, so exact ties never split an object. Tops of dynamic
    exactly ``h`` (on no maximal plateau) keep their own connected-component label.
    """
    from skimage.morphology import local_maxima, reconstruction

    resolution = 2 * np.finfo(image.dtype).resolution * np.abs(image)
    hmax = reconstruction(image - h - resolution, image, method="dilation", footprint=_FULL)
    tops = (image - hmax) >= h
    plateaus, n = ndi.label(
        local_maxima(hmax, footprint=_FULL, allow_borders=True), structure=_FULL
    )
    labels = np.where(tops, plateaus, 0)
    # tops whose dynamic is exactly h sit on a non-maximal HMAX plateau: keep them as they are
    alone, n_alone = ndi.label(tops & (labels == 0), structure=_FULL)
    labels = np.where(alone > 0, alone + n, labels)
    n += n_alone
    used = np.unique(labels[labels > 0])
    lookup = np.zeros(n + 1, dtype=np.int32)
    lookup[used] = np.arange(1, len(used) + 1, dtype=np.int32)
    return lookup[labels], len(used)


def _fill_holes(labels: np.ndarray, order: np.ndarray) -> None:
    """Per object (in ``order`` of local ids), set enclosed background voxels to its id, in
    place."""
    slices = ndi.find_objects(labels)
    shape = labels.shape
    for lab in order:
        sl = slices[lab - 1] if lab - 1 < len(slices) else None
        if sl is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, shape))
        sub = labels[grown]
        obj = sub == lab
        if shape[0] == 1:
            filled = ndi.binary_fill_holes(obj[0])[None]
        else:
            filled = ndi.binary_fill_holes(obj)
        sub[filled & (sub == 0)] = lab


def _drop_small(sizes: np.ndarray, min_size: int) -> np.ndarray:
    """Lookup old id → new id (0 for objects with < ``min_size`` voxels), consecutive, order
    kept."""
    keep = sizes >= max(int(min_size), 0)
    keep[0] = False
    lookup = np.cumsum(keep).astype(np.uint32)
    lookup[~keep] = 0
    return lookup


def split_instances(
    mask_prob: np.ndarray,
    distance: np.ndarray,
    *,
    mask_threshold: float = 0.5,
    h: float = 0.1,
    min_size: int = 0,
    fill_holes: bool = False,
) -> np.ndarray:
    """Instance labels (ZYX ``uint32``) from a mask probability and a distance map (seed procedure).

    Markers are the h-maxima (height ``h``) of the distance inside ``mask_prob > mask_threshold``,
    labelled 26-connected; a 6-connected watershed of ``−distance`` from the markers, restricted
    to the foreground, gives the objects; optional per-object hole filling and removal of objects
    with fewer than ``min_size`` voxels. Ids follow the raster order of the markers' first voxels.
    """
    mask_prob = np.asarray(mask_prob)
    distance = np.asarray(distance)
    if mask_prob.ndim == 2:
        mask_prob, distance = mask_prob[None], distance[None]
    if mask_prob.shape != distance.shape or mask_prob.ndim != 3:
        raise InputDataError(
            f"mask {mask_prob.shape} and distance {distance.shape} must be "
            "ZYX arrays of the same shape."
        )
    _check_values(mask_threshold, h, min_size)
    from fewlabel.segmentation.instances_sparse import segment_sparse  # imports this module

    labels, first = segment_sparse(
        mask_prob,
        distance,
        mask_threshold=mask_threshold,
        h=h,
        fill_holes=fill_holes,
        origin=(0, 0, 0),
        global_shape=mask_prob.shape,
    )
    lookup = np.zeros(len(first) + 1, dtype=np.uint32)
    lookup[np.argsort(first, kind="stable") + 1] = np.arange(1, len(first) + 1, dtype=np.uint32)
    out = lookup[labels]
    if min_size > 0 and len(first):
        sizes = np.bincount(out.ravel(), minlength=len(first) + 1)
        out = _drop_small(sizes, min_size)[out]
    return out
