"""Stage ``bfs_pseudo_labels``: peak response maps of S1 → pseudo instance labels of one
training volume (threshold tuned on its own clicks;
:func:`fewlabel.segmentation.bfs.pseudo.make_pseudo_labels`)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bfs_pseudo_labels", help="S1 peak response maps -> pseudo-labels")
    p.add_argument("--sample", required=True)
    p.add_argument("--model-dir", required=True, help="S1 model folder (train_bfs_centres)")
    p.add_argument("--image", required=True, help="the sample's ingested .ome.zarr")
    p.add_argument("--likelihood", required=True, help="S1 prediction .ome.zarr")
    p.add_argument("--points", required=True, help="the sample's clicks (points CSV)")
    p.add_argument("--labels", required=True, help="output pseudo-labels .ome.zarr (uint32)")
    p.add_argument("--response", required=True, help="output strongest response .ome.zarr")
    p.add_argument("--params", type=json_arg, default={}, help="JSON segmentation.bfs.prm section")
    add_common(p)
    p.set_defaults(handler=bfs_pseudo_labels)


def bfs_pseudo_labels(args: argparse.Namespace) -> None:
    from fewlabel.config import BfsPrmConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.bfs.pseudo import make_pseudo_labels

    params = BfsPrmConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        make_pseudo_labels(
            args.model_dir,
            args.image,
            args.likelihood,
            args.points,
            args.labels,
            args.response,
            params=params,
            sample=args.sample,
            threads=args.threads,
        )
