"""Stage ``predict_volume``: tiled DM-DetNet3D prediction of one volume in one job.

Reads the trained model folder and the sample's ingested image, predicts it tile by tile with
Gaussian blending (:func:`fewlabel.inference.engine.predict_volume`, tiles from config
``detection.predict``) and writes the float32 density map OME-Zarr. With
``detection.slabs`` other than 1 the workflow runs ``init_prediction_slabs``,
``predict_volume_slab`` and ``finalize_prediction`` instead.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs, add_roi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_volume", help="tiled, Gaussian-blended inference -> OME-Zarr (one job)"
    )
    add_predict_inputs(p)
    add_roi(p)
    add_common(p)
    p.set_defaults(handler=predict_volume)


def predict_volume(args: argparse.Namespace, section: type | None = None) -> None:
    """``section``: the config model of ``--params`` (default ``detection.predict``'s)."""
    from fewlabel.config import DetectionPredictConfig
    from fewlabel.device import configure_torch
    from fewlabel.inference import engine
    from fewlabel.io import pyramid_settings

    params = (section or DetectionPredictConfig).model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        engine.predict_volume(
            args.model_dir,
            args.image,
            args.output,
            params=params,
            sample=args.sample,
            roi=args.roi,
            device=device,
        )
