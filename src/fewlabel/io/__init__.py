"""Reading inputs (TIFF, OME-TIFF, ImageJ hyperstacks, Zarr, OME-Zarr) and writing OME-Zarr.

All volumes are exposed as ZYX (2D inputs become Z=1). Outputs are NGFF 0.5 OME-Zarr
(zarr v3, Blosc-zstd) written to a temporary path and renamed when complete, so a crashed job
never leaves an output that looks finished.
"""

from fewlabel.io.readers import (
    NGFF_VERSION,
    POINT_COLUMNS,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    InputVolume,
    OmeZarrVolume,
    VoxelSize,
    atomic_path,
    create_ome_zarr,
    ingest_volume,
    ome_metadata,
    open_input_volume,
    open_ome_zarr,
    read_image,
    read_points_csv,
    resolve_voxel_size,
    slab_ranges,
    write_ome_zarr,
    write_points_csv,
)

__all__ = [
    "NGFF_VERSION",
    "POINT_COLUMNS",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "InputVolume",
    "OmeZarrVolume",
    "VoxelSize",
    "atomic_path",
    "create_ome_zarr",
    "ingest_volume",
    "ome_metadata",
    "open_input_volume",
    "open_ome_zarr",
    "read_image",
    "read_points_csv",
    "resolve_voxel_size",
    "slab_ranges",
    "write_ome_zarr",
    "write_points_csv",
]
