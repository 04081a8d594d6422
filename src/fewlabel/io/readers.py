"""Input readers: TIFF, OME-TIFF, ImageJ hyperstacks, Zarr and OME-Zarr as lazy ZYX views.

Every input is opened as an :class:`InputVolume` (one channel, ZYX, 2D inputs become Z=1) that
reads blocks on demand; axis order, channel selection and voxel size come from the file's own
metadata, and bad files fail with an :class:`~fewlabel.errors.InputDataError` naming the fix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from fewlabel.errors import InputDataError
from fewlabel.io.axes import (
    apply_declared_axes,
    check_axes,
    declared_axes,
    generic_tiff_axes,
)
from fewlabel.io.omezarr import (
    VoxelSize,
    dataset_scale,
    full_resolution_level,
    read_multiscales,
)

log = logging.getLogger(__name__)

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")


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


def _parse_channel(
    channel: str | int | None, names: Sequence[str], size: int, *, sample: str | None, path: Path
) -> int:
    if channel is None or (isinstance(channel, str) and channel.strip() == ""):
        if size > 1:
            raise InputDataError(
                f"image has {size} channels but the sample sheet names none.",
                sample=sample,
                path=path,
                fix=f"set the 'channel' column to an index 0..{size - 1}"
                + (f" or a name from {list(names)}" if names else "")
                + ".",
            )
        return 0
    text = str(channel).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < size:
            raise InputDataError(
                f"channel {index} is out of range (image has {size} channels).",
                sample=sample,
                path=path,
                fix=f"use an index 0..{size - 1}.",
            )
        return index
    if text in names:
        return list(names).index(text)
    raise InputDataError(
        f"channel '{text}' not found; channels are {list(names) or size}.",
        sample=sample,
        path=path,
        fix="use a channel index or one of the names.",
    )


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
    except Exception:
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
    path: str | Path,
    *,
    channel: str | int | None = None,
    sample: str | None = None,
    axes: str | None = None,
) -> InputVolume:
    """Open any supported input lazily as a ZYX view of one channel.

    Supported: TIFF, OME-TIFF, ImageJ hyperstacks (via ``tifffile`` ``aszarr``, never loaded
    whole), plain Zarr arrays, OME-Zarr (NGFF 0.4 / 0.5) images. ``axes`` (the sheet's
    ``axes`` column, e.g. ``"ZCYX"``; None/"" = the file's own) overrides the file's axis
    order; its length must equal the data's number of dimensions.
    """
    path = Path(path)
    declared = declared_axes(axes, sample=sample, path=path)
    if not path.exists():
        raise InputDataError(
            "file does not exist.",
            sample=sample,
            path=path,
            fix="check the 'image' column of the sample sheet.",
        )
    name = path.name.lower()
    if (
        name.endswith(ZARR_SUFFIXES)
        or (path.is_dir() and (path / "zarr.json").exists())
        or (path.is_dir() and ((path / ".zgroup").exists() or (path / ".zarray").exists()))
    ):
        return _open_zarr_input(path, channel=channel, sample=sample, axes=declared)
    if name.endswith(TIFF_SUFFIXES):
        return _open_tiff_input(path, channel=channel, sample=sample, axes=declared)
    raise InputDataError(
        f"unsupported file type '{path.suffix}'.",
        sample=sample,
        path=path,
        fix="use .tif/.tiff/.ome.tif or a .zarr/.ome.zarr store.",
    )


def _open_tiff_input(
    path: Path, *, channel: str | int | None, sample: str | None, axes: str | None = None
) -> InputVolume:
    declared = axes
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
    except Exception as exc:
        raise InputDataError(
            f"unreadable or truncated TIFF ({type(exc).__name__}: {exc}).",
            sample=sample,
            path=path,
            fix="re-export the image; check the copy is complete.",
        ) from exc
    if declared:
        axes = apply_declared_axes(declared, shape, axes, sample=sample, path=path)
    elif not (tf.is_ome or tf.is_imagej):
        axes = generic_tiff_axes(axes, shape)
    axes = check_axes(axes, shape, sample=sample, path=path)
    channel_size = (
        dict(zip(axes, shape, strict=True)).get("C")
        or dict(zip(axes, shape, strict=True)).get("S")
        or 1
    )
    channel_index = _parse_channel(
        channel, _tiff_channel_names(tf), channel_size, sample=sample, path=path
    )
    volume = InputVolume(
        source=source,
        axes=axes,
        channel_index=channel_index,
        voxel_size=_tiff_voxel_size(tf),
        path=path,
        _closer=tf,
    )
    try:
        _probe_readable(volume, series, sample=sample)
    except InputDataError:
        volume.close()
        raise
    return volume


def _open_zarr_input(
    path: Path, *, channel: str | int | None, sample: str | None, axes: str | None = None
) -> InputVolume:
    declared = axes
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputDataError(f"unreadable Zarr store ({exc}).", sample=sample, path=path) from exc
    voxel: VoxelSize | None = None
    names: list[str] = []
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = read_multiscales(attrs)
        if not multiscales:
            raise InputDataError(
                "Zarr group without OME 'multiscales' metadata.",
                sample=sample,
                path=path,
                fix="point the sheet at the array inside the group.",
            )
        ms = multiscales[0]
        dataset, array = full_resolution_level(node, ms, sample=sample, path=path)
        axes = "".join(a["name"] if isinstance(a, str) else a["name"] for a in ms.get("axes", []))
        axes = axes.upper() if axes else "Q" * array.ndim
        if declared:
            axes = apply_declared_axes(declared, array.shape, axes, sample=sample, path=path)
        scale = dataset_scale(dataset)
        if scale:
            spatial = [s for a, s in zip(axes, scale, strict=False) if a in "ZYX"]
            voxel = tuple(float(v) for v in ([1.0] * (3 - len(spatial)) + spatial))  # type: ignore[assignment]
        omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
        names = [c.get("label", "") for c in omero.get("channels", [])]
    else:
        array = node
        dims = getattr(array.metadata, "dimension_names", None)
        axes = "".join(d.upper() for d in dims) if dims and all(dims) else "Q" * array.ndim
        if declared:
            axes = apply_declared_axes(declared, array.shape, axes, sample=sample, path=path)
    shape = tuple(array.shape)
    axes = check_axes(axes, shape, sample=sample, path=path)
    channel_size = dict(zip(axes, shape, strict=True)).get("C", 1)
    channel_index = _parse_channel(
        channel, [n for n in names if n], channel_size, sample=sample, path=path
    )
    return InputVolume(
        source=array, axes=axes, channel_index=channel_index, voxel_size=voxel, path=path
    )


PROBE_MAX_BYTES = 4 * 2**20


def _probe_readable(volume: InputVolume, series: Any, *, sample: str | None) -> None:
    """Fail now, not halfway through a write, when a TIFF's image data is cut or corrupt.

    Bounded whatever the plane size or what the header claims: (1) the byte ranges the series
    declares (contiguous data, or the strips/tiles of its first and last page) must lie inside
    the file, without reading them; (2) the last strip/tile of the last plane is decoded when
    it holds at most ``PROBE_MAX_BYTES`` (compressed files, whose cut data step 1 cannot see).
    """
    path = volume.path
    size = path.stat().st_size
    try:
        ends: list[int] = []
        if series.dataoffset is not None:
            ends.append(int(series.dataoffset) + int(series.nbytes))
        else:
            for page in {id(p): p for p in (series.pages[0], series.pages[-1])}.values():
                if page is not None:
                    ends.extend(
                        int(o) + int(n)
                        for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)
                        if n
                    )
    except Exception as exc:
        raise InputDataError(
            f"unreadable TIFF structure ({type(exc).__name__}: {exc}).",
            sample=sample,
            path=path,
            fix="re-export the image; check the copy is complete.",
        ) from exc
    if ends and max(ends) > size:
        raise InputDataError(
            f"truncated image data: the file declares {volume.shape} voxels of {volume.dtype} "
            f"with data up to byte {max(ends)}, but it has only {size} bytes.",
            sample=sample,
            path=path,
            fix="re-export the image; check the copy is complete (compare sizes).",
        )
    chunk_bytes = int(np.prod(series.keyframe.chunks)) * volume.dtype.itemsize
    if chunk_bytes > PROBE_MAX_BYTES:
        return
    z, y, x = volume.shape
    try:
        volume.read((slice(z - 1, z), slice(y - 1, y), slice(x - 1, x)))
    except Exception as exc:
        raise InputDataError(
            f"unreadable or truncated image data ({type(exc).__name__}: {exc}).",
            sample=sample,
            path=path,
            fix="re-export the image; check the copy is complete.",
        ) from exc


def read_image(path: str | Path, *, sample: str | None = None) -> np.ndarray:
    """Read a whole small image (any supported format) as a ZYX numpy array."""
    volume = open_input_volume(path, sample=sample)
    try:
        return volume.read()
    finally:
        volume.close()
