"""Stage ``train_detector``: DM-DetNet3D training → model folder.

Reads the train/val items (image, density target, weight map, points; from the sample sheet
or ``--train-json``/``--val-json``), trains the density network and tunes its detection
threshold on the validation points (:func:`fewlabel.detection.density.training.train_detector`)
and writes the model folder (weights, config, ``thresholds.json``) and the training summary.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import (
    add_common,
    add_evaluation_gate,
    add_object_diameter,
    add_training_inputs,
    json_arg,
    training_items,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train_detector", help="train DM-DetNet3D -> model folder")
    add_training_inputs(p, keys="sample, image, target, weight, points", section="detection.train")
    p.add_argument(
        "--peaks",
        type=json_arg,
        default={},
        help="JSON detection.peaks section (min_distance, refine_radius) used to "
        "tune the detection threshold",
    )
    add_object_diameter(
        p,
        derives=(
            "a crop and min_distance left at their defaults are derived from it and the voxel sizes"
        ),
    )
    add_evaluation_gate(p)
    p.add_argument(
        "--predict-grid",
        choices=("model", "image"),
        default="model",
        help="the grid prediction will use (detection.predict.model_grid true: model, false: "
        "image); the threshold is tuned on it",
    )
    add_common(p)
    p.set_defaults(handler=train_detector)


def train_detector(args: argparse.Namespace) -> None:
    import json
    import logging

    from fewlabel.config import DetectorTrainConfig, PeaksConfig
    from fewlabel.detection.density import training
    from fewlabel.runtime import write_json

    params = DetectorTrainConfig.model_validate(args.params)
    peaks = PeaksConfig.model_validate(args.peaks)
    train, val = training_items(args, "detector_items")
    summary = training.train_detector(
        train,
        val,
        args.out_dir,
        params=params,
        peaks=peaks,
        seed=args.seed,
        threads=args.threads,
        object_diameter_um=args.object_diameter_um,
        evaluation=args.evaluation,
        model_grid=args.predict_grid == "model",
    )
    if args.summary:
        write_json(summary, args.summary)
    logging.getLogger(__name__).info("train_detector summary: %s", json.dumps(summary))
