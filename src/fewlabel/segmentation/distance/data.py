"""Data helpers shared by ISL pretraining, segmenter training and prediction.

Items (``{sample, image, ...}`` dicts from the CLI), label-free images opened with their
per-image percentile range (:class:`NormalisedImage`), the 2D "planes as channels" view
(:class:`PlanesAsChannels`: a ZYX array with K planes fed as K channels), the batch layouts
the U-Nets take, and the Pearson correlation used for validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr
from fewlabel.normalize import apply_range, percentile_range

IN_MEMORY_MAX_VOXELS = 64_000_000
"""Training/validation images up to this size are read into memory; larger ones lazily."""
VAL_WHOLE_MAX_VOXELS = 2_000_000
"""Validation images up to this size are predicted whole; larger ones on fixed crops."""
PLANES_AS_CHANNELS = "planes_as_channels"


# --------------------------------------------------------------------------- items
def coerce_items(items: Sequence[Any], keys: Sequence[str], what: str) -> list[dict[str, str]]:
    """Validate a list of item dicts ``{sample, <keys>...}`` (sample defaults to item<i>)."""
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{what} item {index} must be a mapping with keys "
                f"{['sample', *keys]}; got {item!r}."
            )
        missing = [k for k in keys if not item.get(k)]
        extra = sorted(set(item) - {"sample", *keys})
        if missing or extra:
            raise ConfigError(
                f"{what} item {index} ({item.get('sample', '?')}): missing "
                f"{missing}, unknown {extra}.",
                fix=f"give {{sample, {', '.join(keys)}}} per item.",
            )
        out.append(
            {"sample": str(item.get("sample") or f"item{index}"), **{k: str(item[k]) for k in keys}}
        )
    names = [i["sample"] for i in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} items have duplicate sample names: {names}.")
    return out


class PlanesAsChannels:
    """A ``(K, 1, Y, X)`` view of a ZYX array with K planes (planes → channels), read lazily.

    Supports the indexing used by the crop sampler and the tiled engine:
    ``view[c_slice, z_slice, y_slice, x_slice]`` with ``z_slice`` within ``range(1)``.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        k, y, x = (int(s) for s in array.shape[-3:])
        self.shape = (k, 1, y, x)
        self.ndim = 4
        self.dtype = getattr(array, "dtype", np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple) or len(key) != 4:
            key = tuple(key) if isinstance(key, tuple) else (key,)
            key = key + (slice(None),) * (4 - len(key))
        c, z, y, x = key
        data = np.asarray(self.array[c, y, x])[:, None]
        return data[:, z]


def load_array(array: Any) -> Any:
    """The array in memory when it is small enough, else the lazy (Zarr) array."""
    if math.prod(array.shape) <= IN_MEMORY_MAX_VOXELS:
        return np.asarray(array[...])
    return array


@dataclass
class NormalisedImage:
    """A label-free input image with its percentile range and its model-facing view."""

    sample: str
    path: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    array: Any  # ZYX (3D) or PlanesAsChannels view (2D)
    low: float
    high: float

    def normalise(self, block: np.ndarray) -> np.ndarray:
        return apply_range(block, self.low, self.high)


def open_input_image(
    sample: str, path: str, *, dims: int, percentiles: Sequence[float], planes: int | None = None
) -> NormalisedImage:
    """Open a label-free image, check it and compute its percentile range (seed normalisation)."""
    volume = open_ome_zarr(path, sample=sample)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise InputDataError(
            f"the label-free image must be a single-channel ZYX volume; got shape {shape}.",
            sample=sample,
            path=path,
            fix="ingest one channel (sample sheet column 'channel').",
        )
    if dims == 2 and planes is not None and shape[0] != planes:
        raise InputDataError(
            f"2D (planes as channels) model needs {planes} focal plane(s); the image has "
            f"{shape[0]} (shape {shape}).",
            sample=sample,
            path=path,
            fix="give every 2D sample the same number of planes (Z), or use dims: 3.",
        )
    low, high = percentile_range(volume.array, percentiles)
    array = load_array(volume.array)
    view = PlanesAsChannels(array) if dims == 2 else array
    return NormalisedImage(
        sample=sample,
        path=str(path),
        shape=shape,  # type: ignore[arg-type]
        voxel_size=volume.voxel_size,
        array=view,
        low=low,
        high=high,
    )


def expected_target_shape(image_shape: Sequence[int], dims: int) -> tuple[int, int, int]:
    """The target's ZYX shape: the image's (3D) or one plane of the image's Y, X (2D)."""
    z, y, x = (int(s) for s in image_shape)
    return (z, y, x) if dims == 3 else (1, y, x)


def to_model_input(
    batch: np.ndarray | torch.Tensor, dims: int, device: str | torch.device
) -> torch.Tensor:
    """``(B, Z, Y, X)`` (3D) → ``(B, 1, Z, Y, X)``; ``(B, K, 1, Y, X)`` (2D) → ``(B, K, Y, X)``."""
    tensor = (
        batch
        if isinstance(batch, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    )
    tensor = tensor.unsqueeze(1) if dims == 3 else tensor[:, :, 0]
    return tensor.to(device, non_blocking=True)


def to_model_target(batch: np.ndarray, dims: int, device: str | torch.device) -> torch.Tensor:
    """Target batch → ``(B, C, [Z,] Y, X)``: ``(B, Z, Y, X)`` or ``(B, C, Z, Y, X)`` (3D);
    ``(B, 1, Y, X)`` or ``(B, C, 1, Y, X)`` (2D)."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    if dims == 3:
        if tensor.dim() == 4:
            tensor = tensor.unsqueeze(1)
    elif tensor.dim() == 5:
        tensor = tensor[:, :, 0]
    return tensor.to(device, non_blocking=True)


def train_crop(params: Any, dims: int) -> tuple[int, int, int]:
    """The crop used by the sampler (2D: one plane of the planes-as-channels view)."""
    crop = tuple(int(c) for c in params.crop)
    return crop if dims == 3 else (1, crop[1], crop[2])  # type: ignore[return-value]


def flip_axes(params: Any, dims: int) -> tuple[int, ...]:
    return (0, 1, 2) if (params.flip_z and dims == 3) else (1, 2)


def pearson(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Pearson correlation ``cov(a, b) / (σ_a σ_b)`` over all elements (0 if one is constant)."""
    x = torch.as_tensor(a).double().flatten()
    y = torch.as_tensor(b).double().flatten()
    x = x - x.mean()
    y = y - y.mean()
    denom = torch.sqrt((x * x).sum() * (y * y).sum())
    if not bool(denom > 0):
        return 0.0
    return float((x * y).sum() / denom)


__all__ = [
    "IN_MEMORY_MAX_VOXELS",
    "PLANES_AS_CHANNELS",
    "VAL_WHOLE_MAX_VOXELS",
    "NormalisedImage",
    "PlanesAsChannels",
    "coerce_items",
    "expected_target_shape",
    "flip_axes",
    "load_array",
    "open_input_image",
    "pearson",
    "to_model_input",
    "to_model_target",
    "train_crop",
]
