"""Stage ``ingest_volume``: one input image → a validated, chunked OME-Zarr.

Reads a TIFF / OME-TIFF / ImageJ / Zarr / OME-Zarr input (``--kind`` image, instance labels
or ISL target; one channel selected by index or name), checks its shape, dtype and voxel size
(labels/target: against the sample's ingested ``--reference`` image) and writes
``--output`` (NGFF 0.5; labels as an NGFF label image; a multiscale pyramid for volumes of at
least ``--pyramid-min-voxels`` voxels) plus an ingest summary JSON
(:func:`fewlabel.io.ingest_volume`). The pyramid settings are recorded in the output, and the
stages that write outputs derived from it follow them.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg, optional_json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest_volume", help="any input image -> chunked OME-Zarr (validated)"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--input", required=True, help="TIFF / OME-TIFF / ImageJ / Zarr / OME-Zarr")
    p.add_argument("--output", required=True, help="output .ome.zarr")
    p.add_argument("--kind", choices=["image", "labels", "target"], default="image")
    p.add_argument(
        "--channel",
        default=None,
        help="channel index or name (empty: the image has no channel axis)",
    )
    p.add_argument(
        "--axes",
        default=None,
        help="axis order of the input file, e.g. ZCYX (empty: from the file's metadata)",
    )
    p.add_argument(
        "--voxel-size",
        type=optional_json_arg,
        default=None,
        help="JSON [z, y, x] in µm (empty: read from the file's metadata)",
    )
    p.add_argument("--chunks", type=json_arg, required=True, help="JSON [z, y, x]")
    p.add_argument("--compression-level", type=int, default=3)
    p.add_argument("--summary", default=None, help="write an ingest summary JSON here")
    p.add_argument(
        "--reference",
        default=None,
        help="labels/target: the sample's ingested "
        "image .ome.zarr; its ZYX shape must match (empty: no check)",
    )
    p.add_argument(
        "--pyramid-min-voxels",
        type=int,
        default=None,
        help="add multiscale levels to volumes of at least this many voxels "
        "(default: the ingest.pyramid_min_voxels default)",
    )
    p.add_argument(
        "--pyramid-max-side",
        type=int,
        default=None,
        help="add levels until the largest side is at most this many voxels "
        "(default: the ingest.pyramid_max_side default)",
    )
    add_common(p)
    p.set_defaults(handler=ingest_volume)


def ingest_volume(args: argparse.Namespace) -> None:
    from fewlabel import io
    from fewlabel.runtime import write_json

    with io.pyramid_settings(
        min_voxels=args.pyramid_min_voxels,
        max_side=args.pyramid_max_side,
        workers=max(1, args.threads),
    ):
        summary = io.ingest_volume(
            args.input,
            args.output,
            sample=args.sample,
            voxel_size=args.voxel_size,
            chunks=args.chunks,
            channel=args.channel or None,
            axes=args.axes or None,
            compression_level=args.compression_level,
            kind=args.kind,
            reference=args.reference or None,
        )
    if args.summary:
        write_json(summary, args.summary)
