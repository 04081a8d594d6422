"""Stages ``train_segmenter`` (mask + distance, ISL-initialised or from scratch) and
``predict_segmentation`` (tiled, 2-channel output: mask probability, distance)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_params, add_sample_sheet, json_arg, plan_items

ITEMS_HELP = ("JSON file (or inline JSON) with a list of {sample, image, labels} items: "
              "label-free image and instance label OME-Zarr paths")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train_segmenter",
                              help="few-image instance segmenter (mask + distance heads)")
    p.add_argument("--train-json", default="", help=ITEMS_HELP)
    add_sample_sheet(p, what="the train/val items (instead of --train-json/--val-json)")
    p.add_argument("--val-json", default="", help=ITEMS_HELP + " ('' = none)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.add_argument("--init-from", default="",
                   help="ISL model folder for init 'isl' ('' = none; needed unless init is "
                        "'scratch')")
    p.add_argument("--params", type=json_arg, default={},
                   help='JSON segmentation.train section, e.g. {"init": "isl", "epochs": 40, '
                        '"loss": "mask_distance", "loss_params": {}}')
    p.add_argument("--summary", default=None, help="also write the training summary JSON here")
    add_common(p)
    p.set_defaults(handler=run_train_segmenter)

    q = subparsers.add_parser("predict_segmentation",
                              help="mask probability + distance of one image (tiled) -> OME-Zarr")
    q.add_argument("--model-dir", required=True, help="segmenter model folder")
    q.add_argument("--image", required=True, help="label-free .ome.zarr")
    q.add_argument("--output", required=True,
                   help="output .ome.zarr (float32 CZYX; c0 mask probability, c1 distance)")
    q.add_argument("--sample", default=None, help="sample name for logs and errors")
    add_predict_params(q)
    add_common(q)
    q.set_defaults(handler=run_predict_segmentation)


def run_train_segmenter(args: argparse.Namespace) -> None:
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.distance.isl import read_items
    from fewlabel.config import SegmenterTrainConfig
    from fewlabel.segmentation.distance.segmenter import train_segmenter

    if args.sample_sheet:
        train, val = plan_items(args.sample_sheet, "segmenter_items")
    else:
        train, val = read_items(args.train_json, "--train-json"), read_items(args.val_json,
                                                                             "--val-json")
    summary = train_segmenter(train, val, args.out_dir,
                              params=SegmenterTrainConfig.model_validate(args.params),
                              init_from=args.init_from or None, seed=args.seed,
                              threads=args.threads)
    if args.summary:
        write_json(summary, args.summary)


def run_predict_segmentation(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmentationPredictConfig
    from fewlabel.segmentation.distance.segmenter import predict_segmentation

    params = SegmentationPredictConfig.model_validate(args.params)
    predict_segmentation(args.model_dir, args.image, args.output, params=params,
                         sample=args.sample, threads=args.threads)
