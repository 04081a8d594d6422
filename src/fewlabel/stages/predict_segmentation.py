"""Stage ``predict_segmentation``: mask probability and distance map of one image.

Reads the segmenter model folder and the sample's label-free image, predicts it tile by tile
(:func:`fewlabel.segmentation.distance.segmenter.predict_segmentation`, tiles from config
``segmentation.predict``) and writes a float32 CZYX OME-Zarr (channel 0 mask probability,
channel 1 distance), which ``split_instances`` turns into instance labels.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_params, add_roi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_segmentation", help="mask probability + distance of one image (tiled) -> OME-Zarr"
    )
    p.add_argument("--model-dir", required=True, help="segmenter model folder")
    p.add_argument("--image", required=True, help="label-free .ome.zarr")
    p.add_argument(
        "--output",
        required=True,
        help="output .ome.zarr (float32 CZYX; c0 mask probability, c1 distance)",
    )
    p.add_argument("--sample", default=None, help="sample name for logs and errors")
    add_predict_params(p)
    add_roi(p)
    add_common(p)
    p.set_defaults(handler=predict_segmentation)


def predict_segmentation(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.distance import predict

    params = SegmentationPredictConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        predict.predict_segmentation(
            args.model_dir,
            args.image,
            args.output,
            params=params,
            sample=args.sample,
            roi=args.roi,
            threads=args.threads,
        )
