"""Stage ``bfs_centre_map``: centroid clicks → BFS-Net Voronoi centre map (paper eq. 1).

Reads the sample's ingested image (shape, voxel size, chunks) and its points CSV and writes the
float32 centre map OME-Zarr (:func:`fewlabel.segmentation.bfs.centres.make_centre_map`).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bfs_centre_map", help="clicks -> BFS-Net Voronoi centre map")
    p.add_argument("--sample", required=True)
    p.add_argument("--image", required=True, help="the sample's ingested .ome.zarr")
    p.add_argument("--points", required=True, help="points CSV (z,y,x voxels, one per cell)")
    p.add_argument("--output", required=True, help="output centre map .ome.zarr")
    p.add_argument(
        "--params", type=json_arg, default={}, help="JSON segmentation.bfs.centres section"
    )
    add_common(p)
    p.set_defaults(handler=bfs_centre_map)


def bfs_centre_map(args: argparse.Namespace) -> None:
    from fewlabel.config import BfsCentresConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.bfs.centres import make_centre_map

    params = BfsCentresConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        make_centre_map(
            args.image,
            args.points,
            args.output,
            params=params,
            sample=args.sample,
            workers=max(1, int(args.threads)),
        )
