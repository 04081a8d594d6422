"""Stage ``train_detector``: DM-DetNet3D training → model folder.

Reads the train/val items (image, density target, weight map, points; from the sample sheet
or ``--train-json``/``--val-json``), trains the density network and tunes its detection
threshold on the validation points (:func:`fewlabel.detection.density.training.train_detector`)
and writes the model folder (weights, config, ``thresholds.json``) and the training summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fewlabel.cli import add_common, add_sample_sheet, json_arg, plan_items


def items_arg(text: str) -> Any:
    """argparse ``type=``: a JSON list given inline or as the path of a JSON file."""
    stripped = text.strip()
    if not stripped.startswith(("[", "{")) and Path(stripped).is_file():
        stripped = Path(stripped).read_text()
    value = json_arg(stripped)
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(
            "expected a JSON list of {sample, image, target, weight, points} objects"
        )
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train_detector", help="train DM-DetNet3D -> model folder")
    add_sample_sheet(p, what="the train/val items (instead of --train-json/--val-json)")
    p.add_argument(
        "--train-json",
        type=items_arg,
        default=[],
        help="JSON list (inline or file) of {sample, image, target, weight, points}",
    )
    p.add_argument(
        "--val-json",
        type=items_arg,
        default=[],
        help="JSON list (inline or file) of validation items (may be empty)",
    )
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help="JSON detection.train section (fewlabel.config.DetectorTrainConfig)",
    )
    p.add_argument(
        "--peaks",
        type=json_arg,
        default={},
        help="JSON detection.peaks section (min_distance, refine_radius) used to "
        "tune the detection threshold",
    )
    p.add_argument("--summary", default=None, help="also write the training summary JSON here")
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
    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "detector_items")
    else:
        train, val = args.train_json, args.val_json
    summary = training.train_detector(
        train, val, args.out_dir, params=params, peaks=peaks, seed=args.seed, threads=args.threads
    )
    if args.summary:
        write_json(summary, args.summary)
    logging.getLogger(__name__).info("train_detector summary: %s", json.dumps(summary))
