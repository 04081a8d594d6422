"""Reading inputs (TIFF, OME-TIFF, ImageJ hyperstacks, Zarr, OME-Zarr) and writing OME-Zarr.

All volumes are exposed as ZYX (2D inputs become Z=1). Outputs are NGFF 0.5 OME-Zarr
(zarr v3, Blosc-zstd) written to a temporary path and renamed when complete, so a crashed job
never leaves an output that looks finished.

Modules: :mod:`~fewlabel.io.atomic` (atomic outputs), :mod:`~fewlabel.io.omezarr` (OME-Zarr
create/open/write; :func:`~fewlabel.io.omezarr.zyx_view`, the ZYX view of one channel),
:mod:`~fewlabel.io.pyramid` (multiscale levels of large outputs, built chunk by chunk),
:mod:`~fewlabel.io.readers` (input formats as lazy ZYX views), :mod:`~fewlabel.io.axes`
(declared and file axis orders), :mod:`~fewlabel.io.ingest` (input → validated OME-Zarr),
:mod:`~fewlabel.io.points` (points CSVs). The public names are re-exported here.
"""

from fewlabel.io.atomic import atomic_path
from fewlabel.io.ingest import ingest_volume, resolve_voxel_size, slab_ranges
from fewlabel.io.omezarr import (
    NGFF_VERSION,
    ChannelView,
    OmeZarrVolume,
    VoxelSize,
    create_ome_zarr,
    label_source,
    ome_metadata,
    open_ome_zarr,
    write_ome_zarr,
    zyx_view,
)
from fewlabel.io.points import POINT_COLUMNS, read_points_csv, write_points_csv
from fewlabel.io.pyramid import (
    PyramidSettings,
    build_pyramid,
    pyramid_settings,
    recorded_pyramid_settings,
)
from fewlabel.io.readers import (
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    InputVolume,
    open_input_volume,
    read_image,
)

__all__ = [
    "NGFF_VERSION",
    "POINT_COLUMNS",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "ChannelView",
    "InputVolume",
    "OmeZarrVolume",
    "PyramidSettings",
    "VoxelSize",
    "atomic_path",
    "build_pyramid",
    "create_ome_zarr",
    "ingest_volume",
    "label_source",
    "ome_metadata",
    "open_input_volume",
    "open_ome_zarr",
    "pyramid_settings",
    "read_image",
    "read_points_csv",
    "recorded_pyramid_settings",
    "resolve_voxel_size",
    "slab_ranges",
    "write_ome_zarr",
    "write_points_csv",
    "zyx_view",
]
