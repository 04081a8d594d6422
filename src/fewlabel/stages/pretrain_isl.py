"""Stage ``pretrain_isl``: in silico labelling, a U-Net from label-free to fluorescence.

Reads the train/val items (label-free image and fluorescence target; from the sample sheet or
``--train-json``/``--val-json``), trains the U-Net to predict the fluorescence
(:func:`fewlabel.segmentation.distance.isl.pretrain_isl`) and writes the model folder, whose
encoder ``train_segmenter`` starts from, and the training summary.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_training_inputs, training_items


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain_isl", help="in silico labelling: train a U-Net label-free -> fluorescence"
    )
    add_training_inputs(p, keys="sample, image, target", section="segmentation.isl")
    add_common(p)
    p.set_defaults(handler=pretrain_isl)


def pretrain_isl(args: argparse.Namespace) -> None:
    from fewlabel.config import IslConfig
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.distance import isl

    train, val = training_items(args, "isl_items")
    params = IslConfig.model_validate(args.params)
    summary = isl.pretrain_isl(
        train, val, args.out_dir, params=params, seed=args.seed, threads=args.threads
    )
    if args.summary:
        write_json(summary, args.summary)
