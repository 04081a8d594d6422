"""Stage ``pretrain_isl``: in silico labelling, a U-Net from label-free to fluorescence.

Reads the train/val items (label-free image and fluorescence target; from the sample sheet or
``--train-json``/``--val-json``), trains the U-Net to predict the fluorescence
(:func:`fewlabel.segmentation.distance.isl.pretrain_isl`) and writes the model folder, whose
encoder ``train_segmenter`` starts from, and the training summary.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_sample_sheet, json_arg, plan_items

ITEMS_HELP = (
    "JSON file (or inline JSON) with a list of {sample, image, target} items: "
    "label-free and fluorescence OME-Zarr paths"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain_isl", help="in silico labelling: train a U-Net label-free -> fluorescence"
    )
    p.add_argument("--train-json", default="", help=ITEMS_HELP)
    add_sample_sheet(p, what="the train/val items (instead of --train-json/--val-json)")
    p.add_argument("--val-json", default="", help=ITEMS_HELP + " ('' = none)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON segmentation.isl section, e.g. {"dims": 3, "epochs": 30, '
        '"crop": [8, 48, 48], "model": {"base_channels": 8, "depth": 2}}',
    )
    p.add_argument("--summary", default=None, help="also write the training summary JSON here")
    add_common(p)
    p.set_defaults(handler=pretrain_isl)


def pretrain_isl(args: argparse.Namespace) -> None:
    from fewlabel.config import IslConfig
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.distance import isl
    from fewlabel.segmentation.distance.data import read_items

    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "isl_items")
    else:
        train = read_items(args.train_json, "--train-json")
        val = read_items(args.val_json, "--val-json")
    summary = isl.pretrain_isl(
        train,
        val,
        args.out_dir,
        params=IslConfig.model_validate(args.params),
        seed=args.seed,
        threads=args.threads,
    )
    if args.summary:
        write_json(summary, args.summary)
