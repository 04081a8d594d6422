"""Stage ``train_segmenter``: the few-image instance segmenter (mask + distance heads).

Reads the train/val items (label-free image and instance labels; from the sample sheet or
``--train-json``/``--val-json``) and, for init ``isl``, the ISL model folder; trains the
mask + distance network and tunes the instance thresholds on the validation images
(:func:`fewlabel.segmentation.distance.segmenter.train_segmenter`) and writes the model folder
(with ``thresholds.json``) and the training summary.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_sample_sheet, json_arg, plan_items

ITEMS_HELP = (
    "JSON file (or inline JSON) with a list of {sample, image, labels} items: "
    "label-free image and instance label OME-Zarr paths"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train_segmenter", help="few-image instance segmenter (mask + distance heads)"
    )
    p.add_argument("--train-json", default="", help=ITEMS_HELP)
    add_sample_sheet(p, what="the train/val items (instead of --train-json/--val-json)")
    p.add_argument("--val-json", default="", help=ITEMS_HELP + " ('' = none)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.add_argument(
        "--init-from",
        default="",
        help="ISL model folder for init 'isl' ('' = none; needed unless init is 'scratch')",
    )
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON segmentation.train section, e.g. {"init": "isl", "epochs": 40, '
        '"loss": "mask_distance", "loss_params": {}}',
    )
    p.add_argument("--summary", default=None, help="also write the training summary JSON here")
    add_common(p)
    p.set_defaults(handler=train_segmenter)


def train_segmenter(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmenterTrainConfig
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.distance import segmenter
    from fewlabel.segmentation.distance.data import read_items

    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "segmenter_items")
    else:
        train = read_items(args.train_json, "--train-json")
        val = read_items(args.val_json, "--val-json")
    summary = segmenter.train_segmenter(
        train,
        val,
        args.out_dir,
        params=SegmenterTrainConfig.model_validate(args.params),
        init_from=args.init_from or None,
        seed=args.seed,
        threads=args.threads,
    )
    if args.summary:
        write_json(summary, args.summary)
