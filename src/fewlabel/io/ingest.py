"""Ingest: stream an input image into a chunked OME-Zarr, validating values on the way."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.errors import InputDataError
from fewlabel.io.atomic import atomic_path
from fewlabel.io.omezarr import VoxelSize, create_ome_zarr
from fewlabel.io.readers import open_input_volume

log = logging.getLogger(__name__)


def slab_ranges(size: int, step: int) -> list[slice]:
    """Consecutive ``slice`` objects of length ``step`` covering ``range(size)``."""
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def ingest_volume(
    src: str | Path,
    dst: str | Path,
    *,
    sample: str,
    voxel_size: Sequence[float] | None,
    chunks: Sequence[int],
    channel: str | int | None = None,
    compression_level: int = 3,
    kind: str = "image",
    max_block_bytes: int = 256 * 2**20,
) -> dict[str, Any]:
    """Stream an input image into a chunked OME-Zarr, validating values on the way.

    Reads chunk-aligned bands (chunk depth × a multiple of the chunk height × full width), so
    memory stays below about ``max_block_bytes`` whatever the plane size.
    ``kind='image'`` rejects NaN/Inf and constant volumes; ``kind='labels'`` requires integers
    and writes uint32; ``kind='target'`` behaves like an image.
    """
    volume = open_input_volume(src, channel=channel, sample=sample)
    try:
        voxel = resolve_voxel_size(voxel_size, volume.voxel_size, sample=sample, path=volume.path)
        dtype = _output_dtype(volume.dtype, kind=kind, sample=sample, path=volume.path)
        shape = volume.shape
        stats = {"min": np.inf, "max": -np.inf, "sum": 0.0, "count": 0}
        with atomic_path(dst) as tmp:
            out = create_ome_zarr(tmp, shape, dtype, chunks, voxel, name=f"{sample}:{kind}",
                                  compression_level=compression_level,
                                  extra_attrs={"sample": sample, "source": str(src), "kind": kind})
            band = _band_rows(out.chunks, shape, volume.dtype.itemsize, max_block_bytes)
            for zslab in slab_ranges(shape[0], out.chunks[0]):
                for yband in slab_ranges(shape[1], band):
                    block = volume.read((zslab, yband, slice(None)))
                    _validate_block(block, zslab, yband, kind=kind, sample=sample,
                                    path=volume.path)
                    stats["min"] = min(stats["min"], float(block.min()))
                    stats["max"] = max(stats["max"], float(block.max()))
                    stats["sum"] += float(block.sum(dtype=np.float64))
                    stats["count"] += block.size
                    out[zslab, yband] = block.astype(dtype, copy=False)
            if kind != "labels" and stats["min"] == stats["max"]:
                raise InputDataError(
                    f"constant volume (every voxel = {stats['min']:g}); nothing to detect.",
                    sample=sample, path=volume.path,
                    fix="check the channel selection and the file.")
    finally:
        volume.close()
    log.info("ingested %s %s -> %s shape=%s voxel=%s", kind, src, dst, shape, voxel)
    return {"sample": sample, "kind": kind, "shape": list(shape), "dtype": str(np.dtype(dtype)),
            "voxel_size": list(voxel), "min": stats["min"], "max": stats["max"],
            "mean": stats["sum"] / max(stats["count"], 1), "source": str(src)}


def _band_rows(chunks: Sequence[int], shape: Sequence[int], itemsize: int,
               max_block_bytes: int) -> int:
    """Rows per read: the largest multiple of the chunk height that fits the byte budget."""
    row_bytes = int(chunks[0]) * int(shape[2]) * max(itemsize, 4)
    multiple = max(1, max_block_bytes // max(1, row_bytes * int(chunks[1])))
    return int(chunks[1]) * multiple


def resolve_voxel_size(
    sheet: Sequence[float] | None, file_value: VoxelSize | None, *, sample: str | None, path: Path
) -> VoxelSize:
    """The sheet's voxel size wins; else the file's; else a clear error."""
    if sheet is not None:
        voxel = tuple(float(v) for v in sheet)
        if file_value is not None and not np.allclose(voxel, file_value, rtol=1e-3):
            log.warning("sample %s: sheet voxel size %s differs from file metadata %s; using the "
                        "sheet", sample, voxel, file_value)
        return voxel  # type: ignore[return-value]
    if file_value is not None:
        return file_value
    raise InputDataError("no voxel size in the sample sheet and none in the file metadata.",
                         sample=sample, path=path,
                         fix="fill the 'voxel_size' column as z,y,x in µm, e.g. 1.0,0.1,0.1.")


def _output_dtype(dtype: np.dtype, *, kind: str, sample: str | None, path: Path) -> np.dtype:
    if kind == "labels":
        if dtype.kind not in "uib":
            raise InputDataError(f"label image has non-integer dtype {dtype}.", sample=sample,
                                 path=path, fix="save instance labels as an integer image.")
        return np.dtype(np.uint32)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        return dtype
    if dtype.kind in "ui":
        return np.dtype(np.float32)
    raise InputDataError(f"unsupported pixel type {dtype}.", sample=sample, path=path,
                         fix="save as uint8, uint16 or float32.")


def _validate_block(block: np.ndarray, zslab: slice, yband: slice, *, kind: str,
                    sample: str | None, path: Path) -> None:
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if bad.any():
            z, y, x = np.argwhere(bad)[0]
            raise InputDataError(
                f"{int(bad.sum())} NaN/Inf voxels in planes {zslab.start}..{zslab.stop - 1} "
                f"(first at z={z + zslab.start}, y={y + yband.start}, x={x}).", sample=sample,
                path=path,
                fix="replace non-finite values (e.g. with the background level) before ingest.")
    if kind == "labels" and block.dtype.kind == "i" and block.min() < 0:
        raise InputDataError("label image has negative labels.", sample=sample, path=path,
                             fix="labels must be 0 (background) or positive object ids.")
