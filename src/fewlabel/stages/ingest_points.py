"""Stage ``ingest_points``: a points CSV validated against its sample's volume.

Reads the annotation CSV (z, y, x in voxels), checks every point against the shape of the
sample's ingested ``--volume`` (:func:`fewlabel.io.read_points_csv`) and writes the clean
table to ``--output``.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest_points", help="validate a points CSV against its volume")
    p.add_argument("--sample", required=True)
    p.add_argument("--points", required=True)
    p.add_argument("--volume", required=True, help="the sample's ingested .ome.zarr")
    p.add_argument("--output", required=True)
    add_common(p)
    p.set_defaults(handler=ingest_points)


def ingest_points(args: argparse.Namespace) -> None:
    from fewlabel.io import open_ome_zarr, read_points_csv, write_points_csv

    volume = open_ome_zarr(args.volume, sample=args.sample)
    table = read_points_csv(args.points, shape=volume.shape[-3:], sample=args.sample)
    write_points_csv(table, args.output)
