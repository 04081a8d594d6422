"""Stage ``predict_isl``: the ISL model's predicted fluorescence of one image.

Reads the ISL model folder (``pretrain_isl``) and the sample's label-free image, predicts it
tile by tile (:func:`fewlabel.segmentation.distance.isl.predict_isl`, tiles from config
``segmentation.predict``) and writes the float32 ZYX fluorescence OME-Zarr, scored by
``evaluate_segmentation`` (PCC) against the sample's target.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_params, add_roi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_isl", help="predicted fluorescence of one image (tiled) -> OME-Zarr"
    )
    p.add_argument("--model-dir", required=True, help="ISL model folder (pretrain_isl)")
    p.add_argument("--image", required=True, help="label-free .ome.zarr")
    p.add_argument("--output", required=True, help="output .ome.zarr (float32 ZYX)")
    p.add_argument("--sample", default=None, help="sample name for logs and errors")
    add_predict_params(p)
    add_roi(p)
    add_common(p)
    p.set_defaults(handler=predict_isl)


def predict_isl(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.io import pyramid_settings
    from fewlabel.segmentation.distance import predict

    params = SegmentationPredictConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        predict.predict_isl(
            args.model_dir,
            args.image,
            args.output,
            params=params,
            sample=args.sample,
            roi=args.roi,
            threads=args.threads,
        )
