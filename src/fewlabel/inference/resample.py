"""Prediction on the model's training grid (nnU-Net's target spacing, Isensee et al. 2021).

A network learns its filters in voxels: DM-DetNet3D trained on z steps of 0.4 µm sees a spot
spread over a third more planes at 0.3 µm. :func:`training_grid` is the per-axis median voxel
size of the training volumes (recorded as ``voxel_size_um`` in the model folder's
training.json); :class:`Resampled` is a lazy view of a volume on that grid, read region by
region; :func:`points_to_image` maps voxel coordinates found on the grid back to the image's.

The grid of an axis of ``n`` voxels of size ``v`` resampled to size ``g`` has
``floor((n - 1) v / g) + 1`` planes at source positions ``k g / v`` (first planes aligned):
physical positions ``k g`` µm stay those of the image, so ``z_um`` is unchanged and the NGFF
scale of the output places it over the image in napari and Fiji.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.normalize import _as_slices

log = logging.getLogger(__name__)

TOLERANCE = 0.05
"""Relative voxel-size difference below which an axis is not resampled."""


def training_grid(voxel_sizes: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """Per-axis median of the training volumes' ZYX voxel sizes (µm)."""
    sizes = np.asarray([tuple(v)[-3:] for v in voxel_sizes], dtype=float)
    return tuple(float(m) for m in np.median(sizes, axis=0))  # type: ignore[return-value]


def target_grid(
    voxel_size: Sequence[float], grid: Sequence[float] | None
) -> tuple[float, float, float] | None:
    """The voxel size to predict on: ``grid`` where an axis differs from ``voxel_size`` by more
    than :data:`TOLERANCE` (other axes keep the image's), None when nothing needs resampling."""
    if grid is None:
        return None
    own = tuple(float(v) for v in voxel_size[-3:])
    out = tuple(
        float(g) if abs(float(g) - v) > TOLERANCE * v else v for g, v in zip(grid, own, strict=True)
    )
    return None if out == own else out  # type: ignore[return-value]


def warn_other_grid(
    model_dir: str | Path, voxel_size: Sequence[float], sample: str, why: str
) -> bool:
    """Log a warning when a volume's voxel size differs by more than :data:`TOLERANCE` from
    the training grid a model folder's ``training.json`` records (``voxel_size_um``); ``why``
    says what may not carry over and the fix. True when it warned; silent for folders that
    record no grid (their errors are named where the folder is loaded)."""
    path = Path(model_dir) / "training.json"
    try:
        grid = json.loads(path.read_text()).get("voxel_size_um") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return False
    if target_grid(voxel_size, grid) is None:
        return False
    log.warning(
        "sample %s: the voxel size %s µm differs by more than %d %% from the training grid %s "
        "µm; %s",
        sample,
        [round(float(v), 4) for v in voxel_size[-3:]],
        round(TOLERANCE * 100),
        grid,
        why,
    )
    return True


def grid_shape(shape: Sequence[int], voxel_size: Sequence[float], grid: Sequence[float]) -> tuple:
    """ZYX shape of a ``shape`` volume of ``voxel_size`` on ``grid``."""
    return tuple(
        int(math.floor((n - 1) * v / g + 1e-9)) + 1
        for n, v, g in zip(shape[-3:], voxel_size[-3:], grid, strict=True)
    )


class Resampled:
    """Lazy view of a ZYX (or CZYX) array on another voxel grid, read region by region.

    ``order`` 1: linear interpolation along each axis in turn (z, y, x), float32; ``order`` 0:
    nearest plane (masks), the source dtype. Each read fetches only the source planes its
    region needs, and every voxel is computed from the same values in the same order whatever
    the region, so any region equals the same region of the whole view.
    """

    def __init__(
        self, source: Any, voxel_size: Sequence[float], grid: Sequence[float], order: int = 1
    ) -> None:
        if order not in (0, 1):
            raise ValueError(f"order must be 0 or 1, got {order}")
        self.source, self.order = source, order
        src = tuple(int(s) for s in source.shape)
        self.lead = len(src) - 3
        spatial = grid_shape(src, voxel_size, grid)
        self.shape = src[: self.lead] + spatial
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32) if order == 1 else np.dtype(source.dtype)
        self.chunks = None
        # source position of every output plane, per axis
        self.positions = [
            np.arange(m) * (float(g) / float(v))
            for m, v, g in zip(spatial, voxel_size[-3:], grid, strict=True)
        ]
        self.sizes = src[self.lead :]
        self.same = [float(g) == float(v) for v, g in zip(voxel_size[-3:], grid, strict=True)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def _axis(self, axis: int, sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(low index, high index, weight of high) of the output planes ``sl`` along ``axis``."""
        pos = self.positions[axis][sl]
        n = self.sizes[axis]
        if self.order == 0 or self.same[axis]:  # an axis left as it is: its own planes
            low = np.minimum(np.floor(pos + 0.5).astype(int), n - 1)
            return low, low, np.zeros(len(pos), np.float32)
        low = np.minimum(np.floor(pos + 1e-9).astype(int), n - 1)
        high = np.minimum(low + 1, n - 1)
        return low, high, (pos - low).astype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, drop = _as_slices(key, self.shape)
        lead, spatial = slices[: self.lead], slices[self.lead :]
        plans = [self._axis(a, s) for a, s in enumerate(spatial)]
        if any(len(low) == 0 for low, _, _ in plans):
            out = np.zeros(tuple(s.stop - s.start for s in slices), self.dtype)
            return out.squeeze(axis=drop) if drop else out
        box = tuple(slice(int(lo.min()), int(hi.max()) + 1) for lo, hi, _ in plans)
        data = np.asarray(self.source[lead + box])
        data = data.astype(np.float32) if self.order == 1 else data
        for axis, (low, high, w) in enumerate(plans):
            ax = self.lead + axis
            base = box[axis].start
            if self.same[axis]:  # the box already holds exactly these planes
                continue
            lo = np.take(data, low - base, axis=ax)
            if self.order == 1:
                hi = np.take(data, high - base, axis=ax)
                shape = [1] * data.ndim
                shape[ax] = len(w)
                wt = w.reshape(shape)
                lo = (1.0 - wt) * lo + wt * hi
            data = lo
        return data.squeeze(axis=drop) if drop else data


def points_to_image(
    zyx: np.ndarray, grid: Sequence[float], image_voxel_size: Sequence[float]
) -> np.ndarray:
    """Voxel coordinates (N, 3) on ``grid`` → the image's voxel coordinates (same µm)."""
    scale = np.asarray(grid, float) / np.asarray(image_voxel_size[-3:], float)
    return np.asarray(zyx, float) * scale


class OnGrid:
    """An opened image seen on another grid: ``array`` (a :class:`Resampled` view),
    ``voxel_size`` (the grid) and ``attrs`` as the image's."""

    def __init__(self, image: Any, grid: Sequence[float]) -> None:
        self.array = Resampled(image.array, image.voxel_size, grid)
        self.voxel_size = tuple(float(g) for g in grid)
        self.attrs = image.attrs

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def on_grid(image: Any, grid: Sequence[float] | None) -> tuple[Any, dict[str, Any] | None]:
    """``image`` (an opened OME-Zarr) on the model's ``grid`` where it differs (else itself),
    and what to record in the prediction's attributes (None: not resampled)."""
    target = target_grid(image.voxel_size, grid)
    if target is None:
        return image, None
    info = {
        "voxel_size": list(target),
        "image_voxel_size": [float(v) for v in image.voxel_size],
        "image_shape": [int(s) for s in image.array.shape[-3:]],
    }
    return OnGrid(image, target), info


def roi_on_grid(roi: Any, info: dict[str, Any] | None) -> Any:
    """An ROI mask checked on the image grid (:func:`fewlabel.inference.gating.open_roi`),
    seen on the prediction grid (nearest plane) when the image was resampled."""
    if roi is None or info is None:
        return roi
    return Resampled(roi, info["image_voxel_size"], info["voxel_size"], order=0)


def grid_tile_error(
    error: Any, image_shape: Sequence[int], image_voxel: Sequence[float], grid: Sequence[float]
) -> Any:
    """``error`` (a too-small volume, :func:`fewlabel.inference.geometry.check_fits_tile`)
    saying that the shape is the one on the training grid, and the other fix."""
    from fewlabel.errors import InputDataError

    return InputDataError(
        f"{error.problem} That is its shape on the model's training grid {list(grid)} µm "
        f"(detection.predict.model_grid); the image is {tuple(int(n) for n in image_shape)} "
        f"voxels of {[float(v) for v in image_voxel]} µm.",
        sample=error.sample,
        path=error.path,
        fix=f"{error.fix} Or set detection.predict.model_grid: false (the image's own grid).",
    )
