"""Stage ``train_bfs_centres``: BFS-Net S1, centre-likelihood U-Net (paper eq. 2).

Train/val items ``{sample, image, centres}`` come from the sample sheet (segmentation rows with
points) or ``--train-json``/``--val-json``; writes the model folder
(:func:`fewlabel.segmentation.bfs.s1.train_s1`).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_training_inputs, training_items


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train_bfs_centres", help="BFS-Net S1: centre-likelihood U-Net")
    add_training_inputs(p, keys="sample, image, centres", section="segmentation.bfs.s1")
    add_common(p)
    p.set_defaults(handler=train_bfs_centres)


def train_bfs_centres(args: argparse.Namespace) -> None:
    from fewlabel.config import BfsS1Config
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.bfs.s1 import train_s1

    train, val = training_items(args, "bfs_items")
    params = BfsS1Config.model_validate(args.params)
    summary = train_s1(
        train, val, args.out_dir, params=params, seed=args.seed, threads=args.threads
    )
    if args.summary:
        write_json(summary, args.summary)
