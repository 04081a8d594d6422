"""OME-Zarr (NGFF 0.5, zarr v3, Blosc-zstd): create, open and write ZYX / CZYX images.

Writers go through :func:`fewlabel.io.atomic.atomic_path`, so a crashed job never leaves an
output that looks finished. Readers accept any NGFF 0.4 / 0.5 image at its full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from fewlabel.errors import InputDataError
from fewlabel.io.atomic import atomic_path

VoxelSize = tuple[float, float, float]
NGFF_VERSION = "0.5"


def ome_metadata(
    voxel_size: Sequence[float], *, name: str, channel_axis: bool = False
) -> dict[str, Any]:
    """NGFF 0.5 ``ome`` attribute block for one ZYX (or CZYX) scale level at path ``0``."""
    axes = [
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    scale = [float(v) for v in voxel_size]
    if channel_axis:
        axes = [{"name": "c", "type": "channel"}, *axes]
        scale = [1.0, *scale]
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ],
    }


def create_ome_zarr(
    path: str | Path,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    voxel_size: Sequence[float],
    *,
    name: str = "image",
    fill_value: float | int = 0,
    compression_level: int = 3,
    extra_attrs: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create an empty OME-Zarr (group + array ``0``) ready for chunk-aligned writes.

    ``shape`` is ZYX (or CZYX, then ``chunks`` has 4 entries and the first is 1).
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(min(max(c, 1), max(s, 1))) for c, s in zip(chunks, shape, strict=True))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["ome"] = ome_metadata(voxel_size, name=name, channel_axis=len(shape) == 4)
    if extra_attrs:
        group.attrs["fewlabel"] = extra_attrs
    return group.create_array(
        "0",
        shape=shape,
        chunks=chunks,
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        compressors=BloscCodec(cname="zstd", clevel=compression_level, shuffle="bitshuffle"),
        dimension_names=(["c"] if len(shape) == 4 else []) + ["z", "y", "x"],
    )


@dataclass(frozen=True)
class OmeZarrVolume:
    """An opened OME-Zarr image: the full-resolution array and its voxel size (z, y, x) in µm."""

    array: zarr.Array
    voxel_size: VoxelSize
    attrs: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def open_ome_zarr(path: str | Path, *, sample: str | None = None, mode: str = "r") -> OmeZarrVolume:
    """Open an OME-Zarr written by fewlabel (or any NGFF 0.4/0.5 image) at its full resolution."""
    path = Path(path)
    if not path.exists():
        raise InputDataError("OME-Zarr not found.", sample=sample, path=path,
                             fix="run the stage that creates it or check the path.")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # noqa: BLE001 - report any zarr failure as an input error
        raise InputDataError(f"cannot open as OME-Zarr ({exc}).", sample=sample, path=path) from exc
    multiscales = read_multiscales(dict(group.attrs))
    if not multiscales:
        raise InputDataError("Zarr group has no OME 'multiscales' metadata.", sample=sample,
                             path=path)
    dataset = multiscales[0]["datasets"][0]
    scale = dataset_scale(dataset)
    array = group[dataset["path"]]
    voxel = tuple(float(v) for v in scale[-3:]) if scale else (1.0, 1.0, 1.0)
    return OmeZarrVolume(array=array, voxel_size=voxel, attrs=dict(group.attrs))  # type: ignore[arg-type]


def read_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``multiscales`` list of a group's attributes (NGFF 0.5 under ``ome``, or 0.4)."""
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        return list(attrs["ome"].get("multiscales", []))
    return list(attrs.get("multiscales", []))


def dataset_scale(dataset: dict[str, Any]) -> list[float] | None:
    """The ``scale`` of a multiscales dataset's coordinate transformations, if any."""
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            return list(transform["scale"])
    return None


def write_ome_zarr(
    path: str | Path,
    data: np.ndarray,
    voxel_size: Sequence[float],
    *,
    chunks: Sequence[int],
    name: str = "image",
    compression_level: int = 3,
    extra_attrs: dict[str, Any] | None = None,
) -> None:
    """Write an in-memory ZYX array to an OME-Zarr atomically (for small arrays and tests)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with atomic_path(path) as tmp:
        arr = create_ome_zarr(tmp, data.shape, data.dtype, chunks, voxel_size, name=name,
                              compression_level=compression_level, extra_attrs=extra_attrs)
        arr[...] = data
