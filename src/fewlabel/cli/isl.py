"""Stages ``pretrain_isl`` (label-free → fluorescence U-Net) and ``predict_isl`` (tiled)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_params, add_sample_sheet, json_arg, plan_items

ITEMS_HELP = ("JSON file (or inline JSON) with a list of {sample, image, target} items: "
              "label-free and fluorescence OME-Zarr paths")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain_isl",
                              help="in silico labelling: train a U-Net label-free -> fluorescence")
    p.add_argument("--train-json", default="", help=ITEMS_HELP)
    add_sample_sheet(p, what="the train/val items (instead of --train-json/--val-json)")
    p.add_argument("--val-json", default="", help=ITEMS_HELP + " ('' = none)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.add_argument("--params", type=json_arg, default={},
                   help='JSON segmentation.isl section, e.g. {"dims": 3, "epochs": 30, '
                        '"crop": [8, 48, 48], "model": {"base_channels": 8, "depth": 2}}')
    p.add_argument("--summary", default=None, help="also write the training summary JSON here")
    add_common(p)
    p.set_defaults(handler=run_pretrain_isl)

    q = subparsers.add_parser("predict_isl",
                              help="predicted fluorescence of one image (tiled) -> OME-Zarr")
    q.add_argument("--model-dir", required=True, help="ISL model folder (pretrain-isl)")
    q.add_argument("--image", required=True, help="label-free .ome.zarr")
    q.add_argument("--output", required=True, help="output .ome.zarr (float32 ZYX)")
    q.add_argument("--sample", default=None, help="sample name for logs and errors")
    add_predict_params(q)
    add_common(q)
    q.set_defaults(handler=run_predict_isl)


def run_pretrain_isl(args: argparse.Namespace) -> None:
    from fewlabel.runtime import write_json
    from fewlabel.config import IslConfig
    from fewlabel.segmentation.distance.isl import pretrain_isl, read_items

    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "isl_items")
    else:
        train, val = read_items(args.train_json, "--train-json"), read_items(args.val_json,
                                                                             "--val-json")
    summary = pretrain_isl(train, val, args.out_dir,
                           params=IslConfig.model_validate(args.params), seed=args.seed,
                           threads=args.threads)
    if args.summary:
        write_json(summary, args.summary)


def run_predict_isl(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.segmentation.distance.isl import predict_isl

    params = SegmentationPredictConfig.model_validate(args.params)
    predict_isl(args.model_dir, args.image, args.output, params=params, sample=args.sample,
                threads=args.threads)
