"""Stage ``predict_pu``: dense PU score map of one volume through the shared tiled engine.

The classifier is fully convolutional with a receptive field equal to its window, so the
engine's Gaussian-blended tiles (``detection.pu.predict``, overlap >= window − 1) give the
window-by-window classification at every voxel (:func:`fewlabel.inference.engine.predict_volume`).
``--roi``: the sample's ROI mask, handed to the engine for ROI-gated prediction (tiles without
an ROI voxel skipped) when the engine accepts it; otherwise the whole volume is predicted and
``postprocess_pu`` drops candidates outside the ROI.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict_pu", help="dense PU score map (tiled engine) -> OME-Zarr")
    add_predict_inputs(p)
    p.add_argument("--roi", default="", help="ROI mask .ome.zarr ('' = none)")
    add_common(p)
    p.set_defaults(handler=predict_pu)


def predict_pu(args: argparse.Namespace) -> None:
    import inspect
    import logging

    from fewlabel.config import PredictConfig
    from fewlabel.device import configure_torch
    from fewlabel.inference import engine
    from fewlabel.io import pyramid_settings

    params = PredictConfig.model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    extra = {}
    if args.roi:
        if "roi" in inspect.signature(engine.predict_volume).parameters:
            extra["roi"] = args.roi
        else:
            logging.getLogger(__name__).info(
                "sample %s: this engine has no ROI gating; predicting the whole volume "
                "(postprocess_pu drops candidates outside the ROI).",
                args.sample,
            )
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        engine.predict_volume(
            args.model_dir,
            args.image,
            args.output,
            params=params,
            sample=args.sample,
            device=device,
            **extra,
        )
