"""Ingest: stream an input image into a chunked OME-Zarr, validating values on the way."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.errors import InputDataError
from fewlabel.io.atomic import atomic_path
from fewlabel.io.omezarr import VoxelSize, create_ome_zarr, label_source, open_ome_zarr
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
    axes: str | None = None,
    compression_level: int = 3,
    kind: str = "image",
    max_block_bytes: int = 256 * 2**20,
    reference: str | Path | None = None,
) -> dict[str, Any]:
    """Stream an input image into a chunked OME-Zarr, validating values on the way.

    Reads chunk-aligned bands (chunk depth × a multiple of the chunk height × full width), so
    memory stays below about ``max_block_bytes`` whatever the plane size.
    ``kind='image'`` rejects NaN/Inf and constant volumes; ``kind='labels'`` requires integers
    and writes uint32; ``kind='target'`` behaves like an image.

    Labels are never changed silently: ids that all fit uint32 (0 ≤ id < 2³²) are copied as
    they are; 64-bit label images with larger ids are relabelled losslessly (a first streaming
    pass collects the distinct ids; they become 1..N in increasing order, 0 stays background;
    a warning gives the count and the summary records ``relabelled``); negative ids are an error.

    ``reference`` (the sample's ingested image OME-Zarr) makes ``labels``/``target`` inputs of
    another spatial (Z, Y, X) shape fail here, naming both files, instead of at training time.

    ``axes`` (the sheet's ``axes`` column, e.g. ``"ZCYX"``) overrides the file's axis order.
    Labels are written as an NGFF label image (``image-label``, source: ``reference``); large
    volumes get a multiscale pyramid (mean of intensities, nearest for labels) with the
    :func:`fewlabel.io.pyramid.pyramid_settings` in force.
    """
    volume = open_input_volume(src, channel=channel, sample=sample, axes=axes)
    relabel: dict[str, Any] | None = None
    try:
        voxel = resolve_voxel_size(voxel_size, volume.voxel_size, sample=sample, path=volume.path)
        dtype = _output_dtype(volume.dtype, kind=kind, sample=sample, path=volume.path)
        shape = volume.shape
        if reference is not None and kind in ("labels", "target"):
            _check_reference_shape(shape, reference, kind=kind, sample=sample, path=volume.path)
        stats = {"min": np.inf, "max": -np.inf, "sum": 0.0, "count": 0}
        with atomic_path(dst) as tmp:
            out = create_ome_zarr(
                tmp,
                shape,
                dtype,
                chunks,
                voxel,
                name=f"{sample}:{kind}",
                compression_level=compression_level,
                extra_attrs={"sample": sample, "source": str(src), "kind": kind},
                image_label=label_source(dst, reference) if kind == "labels" else None,
            )
            band = _band_rows(out.chunks, shape, volume.dtype.itemsize, max_block_bytes)
            bands = [
                (zslab, yband)
                for zslab in slab_ranges(shape[0], out.chunks[0])
                for yband in slab_ranges(shape[1], band)
            ]
            keys = None
            if kind == "labels":
                keys, relabel = _plan_label_ids(volume, bands, sample=sample, path=volume.path)
            for zslab, yband in bands:
                block = volume.read((zslab, yband, slice(None)))
                _validate_block(block, zslab, yband, kind=kind, sample=sample, path=volume.path)
                if keys is not None:  # lossless: every id is in keys, 0 maps to 0
                    block = np.searchsorted(keys, block).astype(np.uint32)
                stats["min"] = min(stats["min"], float(block.min()))
                stats["max"] = max(stats["max"], float(block.max()))
                stats["sum"] += float(block.sum(dtype=np.float64))
                stats["count"] += block.size
                out[zslab, yband] = block.astype(dtype, copy=False)
            if kind != "labels" and stats["min"] == stats["max"]:
                raise InputDataError(
                    f"constant volume (every voxel = {stats['min']:g}); nothing to detect.",
                    sample=sample,
                    path=volume.path,
                    fix="check the channel selection and the file.",
                )
    finally:
        volume.close()
    log.info("ingested %s %s -> %s shape=%s voxel=%s", kind, src, dst, shape, voxel)
    summary = {
        "sample": sample,
        "kind": kind,
        "shape": list(shape),
        "dtype": str(np.dtype(dtype)),
        "voxel_size": list(voxel),
        "min": stats["min"],
        "max": stats["max"],
        "mean": stats["sum"] / max(stats["count"], 1),
        "source": str(src),
    }
    if relabel is not None:
        summary["relabelled"] = relabel
    return summary


UINT32_LIMIT = 2**32


def _plan_label_ids(
    volume: Any, bands: Sequence[tuple[slice, slice]], *, sample: str | None, path: Path
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Decide how 64-bit label ids reach uint32 without loss (streaming, band by band).

    Returns ``(None, None)`` when every id fits uint32 (plain cast). Otherwise the sorted
    distinct ids with 0 first (``np.searchsorted(keys, block)`` maps them to 0..N) and a record
    for the summary. Negative ids are an :class:`InputDataError` naming the range.
    """
    dtype = volume.dtype
    if dtype.kind not in "iu" or np.iinfo(dtype).max < UINT32_LIMIT:
        return None, None  # (u)int8/16/32 fit once negatives are refused (per block)
    low, high = np.inf, -np.inf
    for zslab, yband in bands:
        block = volume.read((zslab, yband, slice(None)))
        if block.size:
            low, high = min(low, int(block.min())), max(high, int(block.max()))
    if low < 0:
        raise InputDataError(
            f"label image ({dtype}) has negative label ids (ids range {low}..{high}).",
            sample=sample,
            path=path,
            fix="labels must be 0 (background) or positive object ids; relabel the objects "
            "(e.g. skimage.segmentation.relabel_sequential) and save as uint32/uint16.",
        )
    if high < UINT32_LIMIT:
        return None, None
    ids = np.zeros(0, dtype)
    for zslab, yband in bands:
        block = volume.read((zslab, yband, slice(None)))
        ids = np.union1d(ids, np.unique(block))
    ids = ids[ids != 0]
    if len(ids) >= UINT32_LIMIT:
        raise InputDataError(
            f"label image has {len(ids)} distinct object ids; at most {UINT32_LIMIT - 1} fit "
            "uint32.",
            sample=sample,
            path=path,
            fix="split the volume into several samples.",
        )
    keys = np.concatenate([np.zeros(1, dtype), ids.astype(dtype, copy=False)])
    log.warning(
        "sample %s: label ids in %s span %d..%d, beyond uint32; relabelled %d objects "
        "losslessly to ids 1..%d in increasing order of the original id (0 stays "
        "background).",
        sample,
        path,
        int(ids[0]),
        high,
        len(ids),
        len(ids),
    )
    return keys, {
        "objects": int(len(ids)),
        "source_id_min": int(ids[0]),
        "source_id_max": int(high),
        "order": "increasing original id",
    }


def _check_reference_shape(
    shape: Sequence[int], reference: str | Path, *, kind: str, sample: str | None, path: Path
) -> None:
    """Labels/target must lie on the image's voxel grid: same spatial (Z, Y, X) shape."""
    ref_shape = tuple(int(s) for s in open_ome_zarr(reference, sample=sample).shape[-3:])
    if tuple(int(s) for s in shape) != ref_shape:
        raise InputDataError(
            f"{kind} image has shape (z, y, x) = {tuple(int(s) for s in shape)} but the sample's "
            f"image has {ref_shape} (ingested image: '{reference}').",
            sample=sample,
            path=path,
            fix=f"export the {kind} on the image's voxel grid (same crop, size and axis order) "
            f"or point the sheet's '{kind}' column at the matching file.",
        )


def _band_rows(
    chunks: Sequence[int], shape: Sequence[int], itemsize: int, max_block_bytes: int
) -> int:
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
            log.warning(
                "sample %s: sheet voxel size %s differs from file metadata %s; using the sheet",
                sample,
                voxel,
                file_value,
            )
        return voxel  # type: ignore[return-value]
    if file_value is not None:
        from fewlabel.config.sheet import check_voxel_size

        check_voxel_size(
            tuple(file_value), where="voxel size from the file's metadata", sample=sample, path=path
        )
        return file_value
    raise InputDataError(
        "no voxel size in the sample sheet and none in the file metadata.",
        sample=sample,
        path=path,
        fix="fill the 'voxel_size' column as z,y,x in µm, e.g. 1.0,0.1,0.1.",
    )


def _output_dtype(dtype: np.dtype, *, kind: str, sample: str | None, path: Path) -> np.dtype:
    if kind == "labels":
        if dtype.kind not in "uib":
            raise InputDataError(
                f"label image has non-integer dtype {dtype}.",
                sample=sample,
                path=path,
                fix="save instance labels as an integer image.",
            )
        return np.dtype(np.uint32)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        return dtype
    if dtype.kind in "ui":
        return np.dtype(np.float32)
    raise InputDataError(
        f"unsupported pixel type {dtype}.",
        sample=sample,
        path=path,
        fix="save as uint8, uint16 or float32.",
    )


def _validate_block(
    block: np.ndarray, zslab: slice, yband: slice, *, kind: str, sample: str | None, path: Path
) -> None:
    if block.dtype.kind == "f":
        bad = ~np.isfinite(block)
        if bad.any():
            z, y, x = np.argwhere(bad)[0]
            raise InputDataError(
                f"{int(bad.sum())} NaN/Inf voxels in planes {zslab.start}..{zslab.stop - 1} "
                f"(first at z={z + zslab.start}, y={y + yband.start}, x={x}).",
                sample=sample,
                path=path,
                fix="replace non-finite values (e.g. with the background level) before ingest.",
            )
    if kind == "labels" and block.dtype.kind == "i" and block.min() < 0:
        raise InputDataError(
            f"label image has negative label ids (lowest {int(block.min())} in planes "
            f"{zslab.start}..{zslab.stop - 1}).",
            sample=sample,
            path=path,
            fix="labels must be 0 (background) or positive object ids.",
        )
