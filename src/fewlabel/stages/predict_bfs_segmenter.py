"""Stage ``predict_bfs_segmenter``: BFS-Net S2 foreground probability of one image (tiled;
float32 ZYX OME-Zarr, :func:`fewlabel.segmentation.bfs.train.predict_probability`)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_bfs_segmenter", help="BFS-Net S2 foreground probability (tiled)"
    )
    add_predict_inputs(p)
    add_common(p)
    p.set_defaults(handler=predict_bfs_segmenter)


def predict_bfs_segmenter(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.bfs.train import predict_probability

    params = SegmentationPredictConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        predict_probability(
            args.model_dir,
            args.image,
            args.output,
            expect="bfs_segmenter",
            params=params,
            sample=args.sample,
            threads=args.threads,
        )
