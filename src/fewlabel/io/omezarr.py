"""OME-Zarr (NGFF 0.5, zarr v3, Blosc-zstd): create, open and write ZYX / CZYX images.

Writers go through :func:`fewlabel.io.atomic.atomic_path`, so a crashed job never leaves an
output that looks finished. Readers accept any NGFF 0.4 / 0.5 image at its full resolution.

Outputs are NGFF multiscale images: level ``0`` at full resolution, and for large volumes
lower-resolution levels added when the output is complete (:mod:`fewlabel.io.pyramid`).
Label images (instance ids) also carry NGFF ``image-label`` metadata, so ``ome_zarr.reader``
and napari (napari-ome-zarr) open them as labels. They are standalone label images (their own
group, ``image-label.source.image`` pointing at the sample's image), not a ``labels/`` group
inside the image: each is the output of another rule than the image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from fewlabel.errors import InputDataError
from fewlabel.io.atomic import atomic_path, on_commit
from fewlabel.io.pyramid import build_pyramid, current_pyramid_settings, pyramid_method

log = logging.getLogger(__name__)

VoxelSize = tuple[float, float, float]
NGFF_VERSION = "0.5"


def ome_metadata(
    voxel_size: Sequence[float],
    *,
    name: str,
    channel_axis: bool = False,
    image_label: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """NGFF 0.5 ``ome`` attribute block for one ZYX (or CZYX) scale level at path ``0``.

    ``image_label`` (a dict, possibly empty, e.g. ``{"source": {"image": "../image.ome.zarr"}}``)
    makes it a label image: ``ome['image-label'] = {"version": "0.5", **image_label}``.
    """
    axes = [
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    scale = [float(v) for v in voxel_size]
    if channel_axis:
        axes = [{"name": "c", "type": "channel"}, *axes]
        scale = [1.0, *scale]
    ome: dict[str, Any] = {
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
    if image_label is not None:
        ome["image-label"] = {"version": NGFF_VERSION, **image_label}
    return ome


def label_source(labels_path: str | Path, image_path: str | Path | None) -> dict[str, Any]:
    """``image_label`` for :func:`create_ome_zarr`: ``source.image`` is the relative path
    from the label image to ``image_path`` (NGFF: "relative path to a Zarr group of a key
    image"; ``ome_zarr.reader`` then loads the image with the labels). Empty when there is no
    image or it does not exist."""
    if image_path is None or not Path(image_path).exists():
        return {}
    relative = os.path.relpath(Path(image_path).absolute(), Path(labels_path).absolute())
    return {"source": {"image": Path(relative).as_posix()}}


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
    image_label: Mapping[str, Any] | None = None,
    pyramid: str | None = "auto",
    defer_pyramid: bool = False,
) -> zarr.Array:
    """Create an empty OME-Zarr (group + array ``0``) ready for chunk-aligned writes.

    ``shape`` is ZYX (or CZYX, then ``chunks`` has 4 entries and the first is 1).
    ``image_label`` (a dict, ``{}`` for none of the optional fields; see :func:`label_source`)
    writes NGFF ``image-label`` metadata: a label image of integer ids.

    ``pyramid``: how lower-resolution levels are computed (``'mean'``, ``'nearest'``, None
    for no pyramid; ``'auto'``: ``nearest`` for label images and ``extra_attrs['kind']`` in
    :data:`~fewlabel.io.pyramid.NEAREST_KINDS`, else ``mean``), with the
    :func:`~fewlabel.io.pyramid.pyramid_settings` in force (recorded in
    ``attrs['fewlabel']['pyramid']``). The levels are built from the finished array when the
    enclosing :func:`~fewlabel.io.atomic.atomic_path` block succeeds, before the rename.
    ``defer_pyramid`` (an array filled by several jobs) or a path outside ``atomic_path``
    leaves that to :func:`~fewlabel.io.pyramid.build_pyramid`.
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(min(max(c, 1), max(s, 1))) for c, s in zip(chunks, shape, strict=True))
    method = pyramid_method(
        pyramid, label_image=image_label is not None, kind=(extra_attrs or {}).get("kind")
    )
    settings = current_pyramid_settings()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["ome"] = ome_metadata(
        voxel_size, name=name, channel_axis=len(shape) == 4, image_label=image_label
    )
    attrs = dict(extra_attrs or {})
    if method is not None:
        attrs["pyramid"] = settings.record(method)
    if attrs:
        group.attrs["fewlabel"] = attrs
    if method is not None and not defer_pyramid:
        group_path = Path(path)
        on_commit(group_path, lambda: build_pyramid(group_path, workers=settings.workers))
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
        raise InputDataError(
            "OME-Zarr not found.",
            sample=sample,
            path=path,
            fix="run the stage that creates it or check the path.",
        )
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise InputDataError(f"cannot open as OME-Zarr ({exc}).", sample=sample, path=path) from exc
    multiscales = read_multiscales(dict(group.attrs))
    if not multiscales:
        raise InputDataError(
            "Zarr group has no OME 'multiscales' metadata.", sample=sample, path=path
        )
    dataset, array = full_resolution_level(group, multiscales[0], sample=sample, path=path)
    scale = dataset_scale(dataset)
    voxel = tuple(float(v) for v in scale[-3:]) if scale else (1.0, 1.0, 1.0)
    return OmeZarrVolume(array=array, voxel_size=voxel, attrs=dict(group.attrs))  # type: ignore[arg-type]


def read_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``multiscales`` list of a group's attributes (NGFF 0.5 under ``ome``, or 0.4)."""
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        return list(attrs["ome"].get("multiscales", []))
    return list(attrs.get("multiscales", []))


def full_resolution_level(
    group: zarr.Group, multiscale: dict[str, Any], *, sample: str | None, path: Path
) -> tuple[dict[str, Any], zarr.Array]:
    """The full-resolution dataset of one ``multiscales`` entry and its array.

    NGFF lists levels from high to low resolution, but some writers list them the other way;
    the level with the most voxels is taken, whatever its place in the list. Metadata that
    makes this ambiguous (two levels of that size, or a larger level with a coarser scale than
    another level) is an :class:`InputDataError`, never a silent guess.
    """
    datasets = list(multiscale.get("datasets") or [])
    if not datasets:
        raise InputDataError(
            "OME 'multiscales' lists no datasets.",
            sample=sample,
            path=path,
            fix="re-export the OME-Zarr with its image levels.",
        )
    levels: list[tuple[dict[str, Any], zarr.Array]] = []
    for dataset in datasets:
        try:
            array = group[dataset["path"]]
        except (KeyError, TypeError) as exc:
            raise InputDataError(
                f"multiscales dataset {dataset.get('path')!r} is missing.",
                sample=sample,
                path=path,
                fix="re-export the OME-Zarr; the copy may be incomplete.",
            ) from exc
        if not isinstance(array, zarr.Array):
            raise InputDataError(
                f"multiscales dataset {dataset.get('path')!r} is not an array.",
                sample=sample,
                path=path,
            )
        levels.append((dataset, array))
    sizes = [int(np.prod(array.shape)) for _, array in levels]
    best = int(np.argmax(sizes))
    shapes = {d["path"]: tuple(a.shape) for d, a in levels}
    if sizes.count(sizes[best]) > 1:
        raise InputDataError(
            f"ambiguous multiscales: several levels have the largest shape {shapes}.",
            sample=sample,
            path=path,
            fix="keep one full-resolution level per image.",
        )
    best_scale = dataset_scale(levels[best][0])
    for dataset, _ in levels:
        scale = dataset_scale(dataset)
        if (
            best_scale
            and scale
            and len(scale) == len(best_scale)
            and any(b > s * (1 + 1e-6) for b, s in zip(best_scale, scale, strict=True))
        ):
            raise InputDataError(
                f"contradictory multiscales: the largest level {levels[best][0]['path']!r} "
                f"has scale {best_scale} but level {dataset['path']!r} has a finer scale "
                f"{scale} (shapes {shapes}).",
                sample=sample,
                path=path,
                fix="fix the 'coordinateTransformations' of the levels or export the full "
                "resolution only.",
            )
    if best != 0:
        log.info(
            "sample %s, %s: multiscales lists level %r first; using the full-resolution "
            "level %r of shape %s",
            sample,
            path,
            datasets[0]["path"],
            levels[best][0]["path"],
            tuple(levels[best][1].shape),
        )
    return levels[best]


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
        arr = create_ome_zarr(
            tmp,
            data.shape,
            data.dtype,
            chunks,
            voxel_size,
            name=name,
            compression_level=compression_level,
            extra_attrs=extra_attrs,
        )
        arr[...] = data


class ChannelView:
    """A lazy ZYX view of one channel of a CZYX array (zarr arrays have no lazy views).

    ``view[z0:z1, y0:y1, x0:x1]`` reads only that box of channel ``channel`` and returns a
    numpy array; ``shape``, ``chunks`` (None when the source has none), ``dtype`` and ``ndim``
    describe the ZYX volume, so a view goes wherever a ZYX zarr array goes.
    """

    def __init__(self, array: Any, channel: int = 0) -> None:
        if len(array.shape) != 4:
            raise ValueError(f"expected a CZYX array, got shape {tuple(array.shape)}")
        if not 0 <= int(channel) < int(array.shape[0]):
            raise ValueError(f"channel {channel} is not in 0..{int(array.shape[0]) - 1}")
        self.array = array
        self.channel = int(channel)
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape[1:])
        chunks = getattr(array, "chunks", None)
        self.chunks: tuple[int, ...] | None = (
            tuple(int(c) for c in chunks[1:]) if chunks is not None else None
        )
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(self.channel, *key)])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"ChannelView(channel={self.channel}, shape={self.shape}, dtype={self.dtype})"


def zyx_view(array: Any, channel: int = 0) -> Any:
    """The ZYX volume of ``array``: channel ``channel`` of a CZYX array as a
    :class:`ChannelView`; a ZYX array as it is (``channel`` is then ignored); a YX array as
    a numpy ``(1, Y, X)`` array. ValueError for other shapes or a channel out of range."""
    ndim = len(array.shape)
    if ndim == 4:
        return ChannelView(array, channel)
    if ndim == 3:
        return array
    if ndim == 2:
        return np.asarray(array)[None]
    raise ValueError(f"expected a ZYX or CZYX array, got shape {tuple(array.shape)}")
