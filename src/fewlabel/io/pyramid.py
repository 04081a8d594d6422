"""Multiscale pyramids of OME-Zarr outputs (NGFF 0.5), built chunk by chunk.

Level ``0`` stays the full-resolution array that every fewlabel reader uses. Volumes of at
least ``min_voxels`` voxels get levels ``1, 2, ...``: each halves y and x (an axis of size 1
is kept) and halves z too when the z voxel then stays at most 2× the in-plane voxel (so
anisotropic stacks keep their z planes until the in-plane voxel has caught up), until the
largest side is at most ``max_side`` (:func:`plan_pyramid`).

Each level is computed from the previous one, one output chunk at a time (memory: one chunk
and the 2×2(×2) chunks under it, never a whole volume; :func:`downsample_array`):

* ``mean`` (intensities, probabilities, targets): the mean of each 2×2(×2) window (windows cut
  by the volume border average the voxels they have); integer images are rounded to their
  dtype. A window's mean lies at the window centre, so these levels carry a translation of
  ``(f − 1) / 2`` previous-level voxels per axis on top of the scale.
* ``nearest`` (labels, masks): the first voxel of each window (stride), so ids and classes are
  copied, never averaged; no translation (the window's first voxel sits on the level-0 grid).

Whole-array and chunked results are equal bit for bit: windows never straddle an output
chunk, and each output voxel is computed from the same inputs in the same order
(:func:`downsample`).

The settings (``ingest.pyramid_min_voxels`` / ``pyramid_max_side``) travel with the data: an
output records them in ``attrs['fewlabel']['pyramid']`` and a stage writing outputs derived
from an input uses the input's record (:func:`pyramid_settings` ``like=``), so one config key
governs the whole chain although only rule ``ingest_volume`` passes it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.blocks import block_grid

log = logging.getLogger(__name__)

#: pyramid only for volumes of at least this many voxels (``ingest.pyramid_min_voxels``)
DEFAULT_PYRAMID_MIN_VOXELS = 2**24
#: levels are added until the largest side is at most this (``ingest.pyramid_max_side``)
DEFAULT_PYRAMID_MAX_SIDE = 256
METHODS = ("mean", "nearest")
#: ``attrs['fewlabel']['kind']`` values whose voxels are ids or classes: ``nearest`` levels
NEAREST_KINDS = frozenset({"labels", "roi", "mask"})


@dataclass(frozen=True)
class PyramidSettings:
    """When and how far to build pyramids, and how many threads build them."""

    min_voxels: int = DEFAULT_PYRAMID_MIN_VOXELS
    max_side: int = DEFAULT_PYRAMID_MAX_SIDE
    workers: int = 1

    def record(self, method: str) -> dict[str, Any]:
        """The ``attrs['fewlabel']['pyramid']`` entry of an output using these settings."""
        return {"method": method, "min_voxels": self.min_voxels, "max_side": self.max_side}


_SETTINGS: ContextVar[PyramidSettings | None] = ContextVar(
    "fewlabel_pyramid_settings", default=None
)


def current_pyramid_settings() -> PyramidSettings:
    """The settings that :func:`fewlabel.io.create_ome_zarr` records for a new output."""
    return _SETTINGS.get() or PyramidSettings()


@contextlib.contextmanager
def pyramid_settings(
    *,
    like: str | Path | None = None,
    min_voxels: int | None = None,
    max_side: int | None = None,
    workers: int | None = None,
) -> Iterator[PyramidSettings]:
    """Pyramid settings of the OME-Zarr outputs created inside the block.

    ``like``: an OME-Zarr (e.g. the stage's input image) whose recorded settings are taken
    (ignored when it records none or cannot be read); explicit values override them.
    """
    settings = current_pyramid_settings()
    if like is not None:
        recorded = recorded_pyramid_settings(like)
        if recorded is not None:
            settings = replace(recorded, workers=settings.workers)
    changes = {
        key: int(value)
        for key, value in (("min_voxels", min_voxels), ("max_side", max_side), ("workers", workers))
        if value is not None
    }
    settings = replace(settings, **changes)
    check_settings(settings)
    token = _SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _SETTINGS.reset(token)


def check_settings(settings: PyramidSettings) -> None:
    """ValueError for settings no pyramid can be built with."""
    if settings.min_voxels < 0 or settings.max_side < 1 or settings.workers < 1:
        raise ValueError(f"invalid pyramid settings {settings}")


def recorded_pyramid_settings(path: str | Path) -> PyramidSettings | None:
    """The pyramid settings recorded in an OME-Zarr's ``attrs['fewlabel']['pyramid']``."""
    import zarr

    try:
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        record = attrs["fewlabel"]["pyramid"]
        return PyramidSettings(
            min_voxels=int(record["min_voxels"]), max_side=int(record["max_side"])
        )
    except Exception:  # not an OME-Zarr, or written before pyramids: the defaults apply
        return None


def pyramid_method(pyramid: str | None, *, label_image: bool, kind: str | None) -> str | None:
    """``'mean'``, ``'nearest'`` or None (no pyramid) for :func:`create_ome_zarr`'s
    ``pyramid`` argument: ``'auto'`` is ``nearest`` for label images and ids/classes
    (:data:`NEAREST_KINDS`), else ``mean``."""
    if pyramid is None:
        return None
    if pyramid == "auto":
        return "nearest" if label_image or kind in NEAREST_KINDS else "mean"
    if pyramid not in METHODS:
        raise ValueError(f"pyramid must be 'auto', {' or '.join(METHODS)} or None; got {pyramid!r}")
    return pyramid


@dataclass(frozen=True)
class PyramidLevel:
    """One level below full resolution: ZYX downsampling factors against the previous level,
    shape, and its scale and translation (physical units) for the NGFF metadata."""

    factors: tuple[int, int, int]
    shape: tuple[int, int, int]
    scale: tuple[float, float, float]
    translation: tuple[float, float, float]


def plan_pyramid(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    *,
    method: str = "mean",
    min_voxels: int = DEFAULT_PYRAMID_MIN_VOXELS,
    max_side: int = DEFAULT_PYRAMID_MAX_SIDE,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
) -> list[PyramidLevel]:
    """The levels below full resolution of a ZYX volume (empty below ``min_voxels`` voxels).

    Each level halves y and x (axes of size > 1) and z when ``2 · vz ≤ 2 · v_yx`` after
    halving, i.e. the z voxel stays at most twice the (geometric mean) in-plane voxel; levels
    are added while the largest side exceeds ``max_side`` and some axis can still shrink.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or len(voxel_size) != 3:
        raise ValueError(f"expected a ZYX shape and voxel size, got {shape} and {voxel_size}")
    if math.prod(shape) < min_voxels:
        return []
    levels: list[PyramidLevel] = []
    cur_shape = list(shape)
    cur_voxel = [float(v) for v in voxel_size]
    while max(cur_shape) > max_side:
        fy = 2 if cur_shape[1] > 1 else 1
        fx = 2 if cur_shape[2] > 1 else 1
        in_plane = math.sqrt(cur_voxel[1] * fy * cur_voxel[2] * fx)
        fz = 2 if cur_shape[0] > 1 and cur_voxel[0] <= in_plane * (1 + 1e-9) else 1
        factors = (fz, fy, fx)
        if factors == (1, 1, 1):
            break
        cur_shape = [-(-n // f) for n, f in zip(cur_shape, factors)]
        cur_voxel = [v * f for v, f in zip(cur_voxel, factors)]
        # a mean's centre moves by (f - 1) / 2 old voxels per step: (voxel_k - voxel_0) / 2 in all
        shift = [
            t + ((v - v0) / 2 if method == "mean" else 0.0)
            for t, v, v0 in zip(translation, cur_voxel, voxel_size)
        ]
        levels.append(
            PyramidLevel(
                factors=factors,
                shape=tuple(cur_shape),  # type: ignore[arg-type]
                scale=_tidy(cur_voxel),
                translation=_tidy(shift),
            )
        )
    return levels


def _tidy(values: Sequence[float]) -> tuple[float, float, float]:
    """Floats rounded to 12 significant digits (0.15, not 0.15000000000000002)."""
    return tuple(float(f"{float(v):.12g}") for v in values)  # type: ignore[return-value]


def downsample(data: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """One pyramid step of an in-memory array: ``factors`` per axis (output shape
    ``ceil(shape / factors)``); ``mean`` of each window (border windows: of the voxels they
    have; integers rounded) or ``nearest`` (each window's first voxel). Keeps the dtype."""
    data = np.asarray(data)
    factors = tuple(int(f) for f in factors)
    if len(factors) != data.ndim:
        raise ValueError(f"{len(factors)} factors for a {data.ndim}D array")
    if method == "nearest" or data.dtype == np.bool_:
        return np.ascontiguousarray(data[tuple(slice(None, None, f) for f in factors)])
    if method != "mean":
        raise ValueError(f"unknown downsampling method {method!r}")
    out_shape = tuple(-(-n // f) for n, f in zip(data.shape, factors))
    total = np.zeros(out_shape, np.float64)
    for offsets in itertools.product(*(range(f) for f in factors)):
        part = data[tuple(slice(o, None, f) for o, f in zip(offsets, factors))]
        total[tuple(slice(0, s) for s in part.shape)] += part
    count = np.ones((1,) * data.ndim, np.float64)
    for axis, (n, f, m) in enumerate(zip(data.shape, factors, out_shape)):
        per_axis = np.minimum(f, n - f * np.arange(m)).astype(np.float64)
        count = count * per_axis.reshape([-1 if a == axis else 1 for a in range(data.ndim)])
    mean = total / count
    if data.dtype.kind in "iu":
        mean = np.rint(mean)
    return mean.astype(data.dtype)


def downsample_array(
    source: Any, target: Any, factors: Sequence[int], method: str, *, workers: int = 1
) -> None:
    """Write ``downsample(source, factors, method)`` into ``target`` one target chunk at a
    time (each reads only the source region under it; windows never straddle two chunks,
    so the result equals the whole-array :func:`downsample`)."""
    factors = tuple(int(f) for f in factors)
    shape = tuple(int(s) for s in source.shape)
    expected = tuple(-(-n // f) for n, f in zip(shape, factors))
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} != {expected}")
    chunks = tuple(int(c) for c in (getattr(target, "chunks", None) or target.shape))

    def one(block: tuple[slice, ...]) -> None:
        region = tuple(
            slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(block, factors, shape)
        )
        target[block] = downsample(np.asarray(source[region]), factors, method)

    blocks = block_grid(expected, chunks)
    if workers <= 1:
        for block in blocks:
            one(block)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, blocks))


def _transform(dataset: Mapping[str, Any], kind: str) -> list[float] | None:
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == kind:
            return [float(v) for v in transform[kind]]
    return None


def build_pyramid(path: str | Path, *, workers: int | None = None) -> int:
    """Add (or rebuild) the lower-resolution levels of the OME-Zarr at ``path``.

    Follows the group's ``attrs['fewlabel']['pyramid']`` record (method, min_voxels,
    max_side; nothing to do without one): levels below full resolution that an earlier
    attempt left (listed or not) are removed first, so the call is idempotent. Level ``k``
    is array ``str(k)`` with level 0's chunks (clipped to its shape), dtype, fill value and
    codecs; the ``multiscales`` datasets get each level's scale (and translation for
    ``mean``). Returns the number of levels added.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    fewlabel = dict(attrs.get("fewlabel") or {})
    record = fewlabel.get("pyramid")
    if not record:
        return 0
    method = record.get("method", "mean")
    ome = dict(attrs["ome"])
    multiscales = [dict(m) for m in ome["multiscales"]]
    multiscale = multiscales[0]
    datasets = list(multiscale["datasets"])
    base_dataset = datasets[0]
    base = group[base_dataset["path"]]
    lead = base.ndim - 3
    scale = _transform(base_dataset, "scale") or [1.0] * base.ndim
    shift = _transform(base_dataset, "translation") or [0.0] * base.ndim
    levels = plan_pyramid(
        tuple(base.shape[lead:]),
        scale[lead:],
        method=method,
        min_voxels=int(record.get("min_voxels", DEFAULT_PYRAMID_MIN_VOXELS)),
        max_side=int(record.get("max_side", DEFAULT_PYRAMID_MAX_SIDE)),
        translation=shift[lead:],
    )
    stale = {d["path"] for d in datasets[1:]} | {k for k in group.array_keys() if k.isdigit()}
    for key in stale - {base_dataset["path"]}:
        if key in group:
            del group[key]
    workers = workers or current_pyramid_settings().workers
    new_datasets = [base_dataset]
    previous = base
    for index, level in enumerate(levels, start=1):
        shape = (*base.shape[:lead], *level.shape)
        array = group.create_array(
            str(index),
            shape=shape,
            chunks=tuple(min(int(c), s) for c, s in zip(base.chunks, shape)),
            dtype=base.dtype,
            fill_value=base.fill_value,
            compressors=base.compressors,
            dimension_names=base.metadata.dimension_names,
            overwrite=True,
        )
        downsample_array(previous, array, (1,) * lead + level.factors, method, workers=workers)
        transforms: list[dict[str, Any]] = [
            {"type": "scale", "scale": [*scale[:lead], *level.scale]}
        ]
        if any(level.translation) or any(shift):
            transforms.append(
                {"type": "translation", "translation": [*shift[:lead], *level.translation]}
            )
        new_datasets.append({"path": str(index), "coordinateTransformations": transforms})
        previous = array
    multiscale["datasets"] = new_datasets
    if levels:
        multiscale["type"] = method
        multiscale["metadata"] = {
            "description": "2x2(x2) window "
            + ("mean" if method == "mean" else "first voxel (stride)")
            + " of the previous level, computed chunk by chunk",
            "method": "fewlabel.io.pyramid.downsample",
        }
    else:
        multiscale.pop("type", None)
        multiscale.pop("metadata", None)
    ome["multiscales"] = [multiscale, *multiscales[1:]]
    fewlabel["pyramid"] = {**record, "levels": len(new_datasets)}
    group.attrs.update({"ome": ome, "fewlabel": fewlabel})
    if levels:
        log.info(
            "%s: %d pyramid level(s) (%s) down to %s",
            Path(path).name,
            len(levels),
            method,
            levels[-1].shape,
        )
    return len(levels)
