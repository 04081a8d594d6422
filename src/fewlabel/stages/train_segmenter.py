"""Stage ``train_segmenter``: the few-image instance segmenter (mask + distance heads).

Reads the train/val items (label-free image and instance labels; from the sample sheet or
``--train-json``/``--val-json``) and, for init ``isl``, the ISL model folder; trains the
mask + distance network and tunes the instance thresholds on the validation images
(:func:`fewlabel.segmentation.distance.segmenter.train_segmenter`) and writes the model folder
(with ``thresholds.json``) and the training summary.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_training_inputs, training_items


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train_segmenter", help="few-image instance segmenter (mask + distance heads)"
    )
    add_training_inputs(p, keys="sample, image, labels", section="segmentation.train")
    p.add_argument(
        "--init-from",
        default="",
        help="ISL model folder for init 'isl' ('' = none; needed unless init is 'scratch')",
    )
    add_common(p)
    p.set_defaults(handler=train_segmenter)


def train_segmenter(args: argparse.Namespace) -> None:
    from fewlabel.config import SegmenterTrainConfig
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.distance import segmenter

    train, val = training_items(args, "segmenter_items")
    params = SegmenterTrainConfig.model_validate(args.params)
    init_from = args.init_from or None
    summary = segmenter.train_segmenter(
        train,
        val,
        args.out_dir,
        params=params,
        init_from=init_from,
        seed=args.seed,
        threads=args.threads,
    )
    if args.summary:
        write_json(summary, args.summary)
