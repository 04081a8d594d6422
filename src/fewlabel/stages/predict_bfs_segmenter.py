"""Stage ``predict_bfs_segmenter``: BFS-Net S2 foreground probability of one image (tiled;
float32 ZYX OME-Zarr, :func:`fewlabel.segmentation.bfs.train.predict_probability`)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs
from fewlabel.stages.predict_bfs_centres import predict_bfs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_bfs_segmenter", help="BFS-Net S2 foreground probability (tiled)"
    )
    add_predict_inputs(p)
    add_common(p)
    p.set_defaults(handler=predict_bfs_segmenter)


def predict_bfs_segmenter(args: argparse.Namespace) -> None:
    predict_bfs(args, expect="bfs_segmenter")
