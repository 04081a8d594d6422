"""Stages ``ingest_volume`` (image/labels/target → OME-Zarr) and ``ingest_points`` (validated CSV)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg, optional_json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest_volume", help="any input image -> chunked OME-Zarr (validated)")
    p.add_argument("--sample", required=True)
    p.add_argument("--input", required=True, help="TIFF / OME-TIFF / ImageJ / Zarr / OME-Zarr")
    p.add_argument("--output", required=True, help="output .ome.zarr")
    p.add_argument("--kind", choices=["image", "labels", "target"], default="image")
    p.add_argument("--channel", default=None,
                   help="channel index or name (empty: the image has no channel axis)")
    p.add_argument("--voxel-size", type=optional_json_arg, default=None,
                   help="JSON [z, y, x] in µm (empty: read from the file's metadata)")
    p.add_argument("--chunks", type=json_arg, required=True, help="JSON [z, y, x]")
    p.add_argument("--compression-level", type=int, default=3)
    p.add_argument("--summary", default=None, help="write an ingest summary JSON here")
    p.add_argument("--reference", default=None, help="labels/target: the sample's ingested "
                   "image .ome.zarr; its ZYX shape must match (empty: no check)")
    add_common(p)
    p.set_defaults(handler=run_ingest)

    q = subparsers.add_parser("ingest_points", help="validate a points CSV against its volume")
    q.add_argument("--sample", required=True)
    q.add_argument("--points", required=True)
    q.add_argument("--volume", required=True, help="the sample's ingested .ome.zarr")
    q.add_argument("--output", required=True)
    add_common(q)
    q.set_defaults(handler=run_ingest_points)


def run_ingest(args: argparse.Namespace) -> None:
    from fewlabel.io import ingest_volume
    from fewlabel.runtime import write_json

    summary = ingest_volume(args.input, args.output, sample=args.sample,
                            voxel_size=args.voxel_size, chunks=args.chunks, channel=args.channel or None,
                            compression_level=args.compression_level, kind=args.kind,
                            reference=args.reference or None)
    if args.summary:
        write_json(summary, args.summary)


def run_ingest_points(args: argparse.Namespace) -> None:
    from fewlabel.io import open_ome_zarr, read_points_csv, write_points_csv

    volume = open_ome_zarr(args.volume, sample=args.sample)
    table = read_points_csv(args.points, shape=volume.shape[-3:], sample=args.sample)
    write_points_csv(table, args.output)
