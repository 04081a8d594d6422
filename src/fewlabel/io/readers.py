"""Reading inputs (TIFF, OME-TIFF, ImageJ hyperstacks, Zarr, OME-Zarr) and writing OME-Zarr.

All volumes are exposed as ZYX (2D inputs become Z=1). Outputs are NGFF 0.5 OME-Zarr
(zarr v3, Blosc-zstd) written to a temporary path and renamed when complete, so a crashed job
never leaves an output that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import zarr
from zarr.codecs import BloscCodec

from fewlabel.errors import InputDataError

log = logging.getLogger(__name__)

VoxelSize = tuple[float, float, float]
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
NGFF_VERSION = "0.5"


# --------------------------------------------------------------------------- atomic outputs
@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` only if the block succeeds.

    Works for files and directories (Zarr stores). On failure the temporary path is removed,
    so no half-written output ever carries the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.exists() or final.is_symlink():
        _remove(final)
    os.replace(tmp, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --------------------------------------------------------------------------- OME-Zarr
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
    multiscales = _multiscales(dict(group.attrs))
    if not multiscales:
        raise InputDataError("Zarr group has no OME 'multiscales' metadata.", sample=sample,
                             path=path)
    dataset = multiscales[0]["datasets"][0]
    scale = _scale_of(dataset)
    array = group[dataset["path"]]
    voxel = tuple(float(v) for v in scale[-3:]) if scale else (1.0, 1.0, 1.0)
    return OmeZarrVolume(array=array, voxel_size=voxel, attrs=dict(group.attrs))  # type: ignore[arg-type]


def _multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        return list(attrs["ome"].get("multiscales", []))
    return list(attrs.get("multiscales", []))


def _scale_of(dataset: dict[str, Any]) -> list[float] | None:
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


# --------------------------------------------------------------------------- input reading
@dataclass
class InputVolume:
    """A lazily readable input image seen as ZYX for one channel.

    ``source`` is any array supporting numpy-style slicing in the file's own axis order
    ``axes`` (letters from ``TCZYXS``); ``read(zyx_slices)`` returns a ZYX numpy block.
    """

    source: Any
    axes: str
    channel_index: int | None
    voxel_size: VoxelSize | None
    path: Path
    _closer: Any = None

    @property
    def shape(self) -> tuple[int, int, int]:
        sizes = dict(zip(self.axes, self.source.shape, strict=True))
        return (sizes.get("Z", 1), sizes["Y"], sizes["X"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    def read(self, zyx: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Read a ZYX block (all of it when ``zyx`` is None)."""
        zyx = zyx or (slice(None), slice(None), slice(None))
        index: list[Any] = []
        kept: list[str] = []
        for axis in self.axes:
            if axis == "Z":
                index.append(zyx[0])
                kept.append("Z")
            elif axis == "Y":
                index.append(zyx[1])
                kept.append("Y")
            elif axis == "X":
                index.append(zyx[2])
                kept.append("X")
            elif axis in "CS":
                index.append(self.channel_index or 0)
            else:  # T (size 1 checked at open)
                index.append(0)
        block = np.asarray(self.source[tuple(index)])
        if "Z" not in kept:
            block = block[None]
            kept.insert(0, "Z")
            block = block[zyx[0]]
        return np.transpose(block, [kept.index(a) for a in "ZYX"])

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()


def _parse_channel(channel: str | int | None, names: Sequence[str], size: int, *, sample: str | None,
                   path: Path) -> int:
    if channel is None or (isinstance(channel, str) and channel.strip() == ""):
        if size > 1:
            raise InputDataError(
                f"image has {size} channels but the sample sheet names none.", sample=sample,
                path=path, fix=f"set the 'channel' column to an index 0..{size - 1}"
                + (f" or a name from {list(names)}" if names else "") + ".")
        return 0
    text = str(channel).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < size:
            raise InputDataError(f"channel {index} is out of range (image has {size} channels).",
                                 sample=sample, path=path, fix=f"use an index 0..{size - 1}.")
        return index
    if text in names:
        return list(names).index(text)
    raise InputDataError(f"channel '{text}' not found; channels are {list(names) or size}.",
                         sample=sample, path=path, fix="use a channel index or one of the names.")


def _check_axes(axes: str, shape: Sequence[int], *, sample: str | None, path: Path) -> str:
    axes = axes.upper()
    unknown = [a for a in axes if a not in "TCZYXS"]
    if "Y" not in axes or "X" not in axes or unknown:
        if len(shape) == 2:
            return "YX"
        if len(shape) == 3:
            return "ZYX"
        raise InputDataError(
            f"{len(shape)}D array of shape {tuple(shape)} with no axis information (axes "
            f"'{axes}').", sample=sample, path=path,
            fix="save it as OME-TIFF / ImageJ hyperstack / OME-Zarr with axes, or as a plain "
                "3D ZYX stack per channel.")
    for axis, size in zip(axes, shape, strict=True):
        if axis == "T" and size != 1:
            raise InputDataError(f"time series with {size} time points is not supported.",
                                 sample=sample, path=path, fix="export one time point per sample.")
    if "C" in axes and "S" in axes:
        raise InputDataError("image has both a channel and an RGB sample axis.", sample=sample,
                             path=path, fix="export a single-channel image.")
    return axes


def _tiff_voxel_size(tf: tifffile.TiffFile) -> VoxelSize | None:
    try:
        if tf.is_ome and tf.ome_metadata:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tf.ome_metadata)
            pixels = next(el for el in root.iter() if el.tag.endswith("Pixels"))
            sx = pixels.get("PhysicalSizeX")
            sy = pixels.get("PhysicalSizeY")
            if sx and sy:
                return (float(pixels.get("PhysicalSizeZ") or 1.0), float(sy), float(sx))
        if tf.is_imagej and tf.imagej_metadata is not None:
            page = tf.pages[0]
            xres = page.tags.get("XResolution")
            yres = page.tags.get("YResolution")
            if xres is not None and yres is not None:
                sx = xres.value[1] / xres.value[0]
                sy = yres.value[1] / yres.value[0]
                sz = float(tf.imagej_metadata.get("spacing", 1.0))
                return (sz, float(sy), float(sx))
    except Exception:  # noqa: BLE001 - metadata is optional; the sheet can give the voxel size
        log.warning("could not parse voxel size from %s", tf.filename)
    return None


def _tiff_channel_names(tf: tifffile.TiffFile) -> list[str]:
    names: list[str] = []
    if tf.is_ome and tf.ome_metadata:
        import xml.etree.ElementTree as ET

        with contextlib.suppress(ET.ParseError):
            root = ET.fromstring(tf.ome_metadata)
            names = [el.get("Name", "") for el in root.iter() if el.tag.endswith("}Channel")]
    if tf.is_imagej and tf.imagej_metadata and "Labels" in tf.imagej_metadata:
        labels = tf.imagej_metadata["Labels"]
        names = list(labels) if isinstance(labels, list) else names
    return [n for n in names if n]


def open_input_volume(
    path: str | Path, *, channel: str | int | None = None, sample: str | None = None
) -> InputVolume:
    """Open any supported input lazily as a ZYX view of one channel.

    Supported: TIFF, OME-TIFF, ImageJ hyperstacks (via ``tifffile`` ``aszarr``, never loaded
    whole), plain Zarr arrays, OME-Zarr (NGFF 0.4 / 0.5) images.
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError("file does not exist.", sample=sample, path=path,
                             fix="check the 'image' column of the sample sheet.")
    name = path.name.lower()
    if name.endswith(ZARR_SUFFIXES) or (path.is_dir() and (path / "zarr.json").exists()) or (
        path.is_dir() and ((path / ".zgroup").exists() or (path / ".zarray").exists())
    ):
        return _open_zarr_input(path, channel=channel, sample=sample)
    if name.endswith(TIFF_SUFFIXES):
        return _open_tiff_input(path, channel=channel, sample=sample)
    raise InputDataError(f"unsupported file type '{path.suffix}'.", sample=sample, path=path,
                         fix="use .tif/.tiff/.ome.tif or a .zarr/.ome.zarr store.")


def _open_tiff_input(path: Path, *, channel: str | int | None, sample: str | None) -> InputVolume:
    try:
        tf = tifffile.TiffFile(path)
        series = tf.series[0]
        axes = series.axes
        shape = tuple(series.shape)
        store = series.aszarr()
        source = zarr.open(store, mode="r")
        if isinstance(source, zarr.Group):  # pyramidal: take level 0
            source = source["0"]
    except InputDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tifffile failure is an unreadable input
        raise InputDataError(f"unreadable or truncated TIFF ({type(exc).__name__}: {exc}).",
                             sample=sample, path=path,
                             fix="re-export the image; check the copy is complete.") from exc
    if not (tf.is_ome or tf.is_imagej):
        axes = _generic_tiff_axes(axes, shape)
    axes = _check_axes(axes, shape, sample=sample, path=path)
    channel_size = dict(zip(axes, shape, strict=True)).get("C") or dict(
        zip(axes, shape, strict=True)).get("S") or 1
    channel_index = _parse_channel(channel, _tiff_channel_names(tf), channel_size, sample=sample,
                                   path=path)
    volume = InputVolume(source=source, axes=axes, channel_index=channel_index,
                         voxel_size=_tiff_voxel_size(tf), path=path, _closer=tf)
    _probe_readable(volume, sample=sample)
    return volume


def _generic_tiff_axes(axes: str, shape: Sequence[int]) -> str:
    """Plain TIFFs: 2D → YX, 3D → ZYX unless RGB(A) samples last; 4D+ stays unknown."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if axes.endswith("S") and shape[-1] in (3, 4) else "ZYX"
    return "Q" * len(shape)


def _open_zarr_input(path: Path, *, channel: str | int | None, sample: str | None) -> InputVolume:
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(f"unreadable Zarr store ({exc}).", sample=sample, path=path) from exc
    voxel: VoxelSize | None = None
    names: list[str] = []
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = _multiscales(attrs)
        if not multiscales:
            raise InputDataError("Zarr group without OME 'multiscales' metadata.", sample=sample,
                                 path=path, fix="point the sheet at the array inside the group.")
        ms = multiscales[0]
        dataset = ms["datasets"][0]
        array = node[dataset["path"]]
        axes = "".join(a["name"] if isinstance(a, str) else a["name"] for a in ms.get("axes", []))
        axes = axes.upper() if axes else "Q" * array.ndim
        scale = _scale_of(dataset)
        if scale:
            spatial = [s for a, s in zip(axes, scale, strict=False) if a in "ZYX"]
            voxel = tuple(float(v) for v in ([1.0] * (3 - len(spatial)) + spatial))  # type: ignore[assignment]
        omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
        names = [c.get("label", "") for c in omero.get("channels", [])]
    else:
        array = node
        dims = getattr(array.metadata, "dimension_names", None)
        axes = "".join(d.upper() for d in dims) if dims and all(dims) else "Q" * array.ndim
    shape = tuple(array.shape)
    axes = _check_axes(axes, shape, sample=sample, path=path)
    channel_size = dict(zip(axes, shape, strict=True)).get("C", 1)
    channel_index = _parse_channel(channel, [n for n in names if n], channel_size, sample=sample,
                                   path=path)
    return InputVolume(source=array, axes=axes, channel_index=channel_index, voxel_size=voxel,
                       path=path)


def _probe_readable(volume: InputVolume, *, sample: str | None) -> None:
    """Read the last plane so truncated files fail now, not halfway through a write."""
    z = volume.shape[0]
    try:
        volume.read((slice(z - 1, z), slice(None), slice(None)))
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(f"unreadable or truncated image data ({type(exc).__name__}: {exc}).",
                             sample=sample, path=volume.path,
                             fix="re-export the image; check the copy is complete.") from exc


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


# --------------------------------------------------------------------------- points
POINT_COLUMNS = ("z", "y", "x")


def read_points_csv(path: str | Path, *, shape: Sequence[int] | None = None,
                    sample: str | None = None, allow_empty: bool = False) -> pd.DataFrame:
    """Read and validate a points CSV (``z,y,x[,...]`` voxels, 0-based; 2D files may omit z).

    Checks: file exists and parses, has the columns, values are finite, and (given ``shape``)
    every point lies inside the volume (within half a voxel of its border).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError("points file does not exist.", sample=sample, path=path,
                             fix="check the 'points' column of the sample sheet.")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(f"cannot parse points CSV ({exc}).", sample=sample, path=path) from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if table.empty and len(table.columns) == 0 and not allow_empty:
        raise InputDataError("points file is empty.", sample=sample, path=path,
                             fix="annotate at least one point (header z,y,x) or remove the "
                                 "'points' entry.")
    if "z" not in table.columns and {"y", "x"} <= set(table.columns):
        table.insert(0, "z", 0.0)
    missing = [c for c in POINT_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(f"points CSV lacks column(s) {missing}; it has {list(table.columns)}.",
                             sample=sample, path=path,
                             fix="use a header 'z,y,x' with voxel coordinates, 0-based.")
    if len(table) == 0 and not allow_empty:
        raise InputDataError("points file holds no points.", sample=sample, path=path,
                             fix="annotate at least one point or remove the 'points' entry.")
    coords = table[list(POINT_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(f"{int(bad.sum())} point(s) with missing or non-numeric "
                             f"coordinates (first at data row {row + 1}).", sample=sample,
                             path=path, fix="every row needs numeric z,y,x.")
    if shape is not None:
        upper = np.asarray(shape, float) - 0.5
        outside = ((coords < -0.5) | (coords > upper)).any(axis=1)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise InputDataError(
                f"{int(outside.sum())} point(s) outside the volume of shape {tuple(shape)} "
                f"(first at data row {row + 1}: z,y,x={coords[row].tolist()}).", sample=sample,
                path=path, fix="coordinates are 0-based voxels in z,y,x order; check the axis "
                               "order and units (not µm).")
    table[list(POINT_COLUMNS)] = coords
    return table


def write_points_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a points table atomically (``z,y,x`` first)."""
    cols = list(POINT_COLUMNS) + [c for c in table.columns if c not in POINT_COLUMNS]
    with atomic_path(path) as tmp:
        table[cols].to_csv(tmp, index=False, float_format="%.4f")


def read_image(path: str | Path, *, sample: str | None = None) -> np.ndarray:
    """Read a whole small image (any supported format) as a ZYX numpy array."""
    volume = open_input_volume(path, sample=sample)
    try:
        return volume.read()
    finally:
        volume.close()
