"""Stage ``train_detector``: DM-DetNet3D training -> model folder."""

from __future__ import annotations

import argparse
import json
import logging
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
        raise argparse.ArgumentTypeError("expected a JSON list of {sample, image, target, weight, "
                                         "points} objects")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser("train_detector", help="train DM-DetNet3D -> model folder")
    add_sample_sheet(q, what="the train/val items (instead of --train-json/--val-json)")
    q.add_argument("--train-json", type=items_arg, default=[],
                   help="JSON list (inline or file) of {sample, image, target, weight, points}")
    q.add_argument("--val-json", type=items_arg, default=[],
                   help="JSON list (inline or file) of validation items (may be empty)")
    q.add_argument("--out-dir", required=True, help="model folder to write")
    q.add_argument("--params", type=json_arg, default={},
                   help="JSON detection.train section (fewlabel.config.DetectorTrainConfig)")
    q.add_argument("--peaks", type=json_arg, default={},
                   help="JSON detection.peaks section (min_distance, refine_radius) used to "
                        "tune the detection threshold")
    q.add_argument("--summary", default=None, help="also write the training summary JSON here")
    add_common(q)
    q.set_defaults(handler=run_train_detector)


def run_train_detector(args: argparse.Namespace) -> None:
    from fewlabel.runtime import write_json
    from fewlabel.config import DetectorTrainConfig, PeaksConfig
    from fewlabel.detection.density.training import train_detector

    params = DetectorTrainConfig.model_validate(args.params)
    peaks = PeaksConfig.model_validate(args.peaks)
    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "detector_items")
    else:
        train, val = args.train_json, args.val_json
    summary = train_detector(train, val, args.out_dir, params=params, peaks=peaks,
                             seed=args.seed, threads=args.threads)
    if args.summary:
        write_json(summary, args.summary)
    logging.getLogger(__name__).info("train-detector summary: %s", json.dumps(summary))
