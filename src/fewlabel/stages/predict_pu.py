"""Stage ``predict_pu``: dense PU score map of one volume through the shared tiled engine.

The classifier is fully convolutional with a receptive field equal to its window, so the
engine's Gaussian-blended tiles (``detection.pu.predict``, overlap >= window − 1) give the
window-by-window classification at every voxel (:func:`fewlabel.inference.engine.predict_volume`).
``--roi``: the sample's ROI mask (``roi.gate_prediction``), handed to the engine: tiles without
an ROI voxel are not computed (score 0 there); ``postprocess_pu`` drops candidates outside the
ROI in any case, so gating changes no detection. The map is on the image's own grid: the
training grid recorded in training.json is never resampled to (it measured worse for PU,
``benchmarks/real_spots/resample_pu_*.tsv``); ``postprocess_pu`` warns when they differ.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs, add_roi
from fewlabel.stages.predict_volume import predict_volume


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict_pu", help="dense PU score map (tiled engine) -> OME-Zarr")
    add_predict_inputs(p)
    add_roi(p)
    add_common(p)
    p.set_defaults(handler=predict_pu)


def predict_pu(args: argparse.Namespace) -> None:
    """The density detector's engine call (the model folder says which network it is) with
    ``detection.pu.predict``, which has no ``model_grid``: always on the image's own grid."""
    from fewlabel.config import PredictConfig

    predict_volume(args, PredictConfig)
