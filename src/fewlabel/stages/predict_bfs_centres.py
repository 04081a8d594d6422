"""Stage ``predict_bfs_centres``: BFS-Net S1 centre likelihood of one image (tiled; float32 ZYX
OME-Zarr, :func:`fewlabel.segmentation.bfs.train.predict_probability`)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict_bfs_centres", help="BFS-Net S1 centre likelihood (tiled)")
    add_predict_inputs(p)
    add_common(p)
    p.set_defaults(handler=predict_bfs_centres)


def predict_bfs_centres(args: argparse.Namespace) -> None:
    predict_bfs(args, expect="bfs_centres")


def predict_bfs(args: argparse.Namespace, *, expect: str) -> None:
    """Tiled σ(logit) of the BFS-Net model of architecture ``expect`` (S1 or S2)."""
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.bfs.train import predict_probability

    params = SegmentationPredictConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        predict_probability(
            args.model_dir,
            args.image,
            args.output,
            expect=expect,
            params=params,
            sample=args.sample,
            threads=args.threads,
        )
