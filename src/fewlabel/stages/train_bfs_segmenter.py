"""Stage ``train_bfs_segmenter``: BFS-Net S2 trained on the PRM pseudo-labels with
cross-entropy + λ_BF·L_BF (paper eq. 3, 4/5).

Train/val items ``{sample, image, pseudo}`` come from the sample sheet or JSON; writes the model
folder (:func:`fewlabel.segmentation.bfs.s2.train_s2`).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_training_inputs, training_items


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train_bfs_segmenter", help="BFS-Net S2: segmentation on pseudo-labels (CE + L_BF)"
    )
    add_training_inputs(p, keys="sample, image, pseudo", section="segmentation.bfs.s2")
    add_common(p)
    p.set_defaults(handler=train_bfs_segmenter)


def train_bfs_segmenter(args: argparse.Namespace) -> None:
    from fewlabel.config import BfsS2Config
    from fewlabel.runtime import write_json
    from fewlabel.segmentation.bfs.s2 import train_s2

    train, val = training_items(args, "bfs_pseudo_items")
    params = BfsS2Config.model_validate(args.params)
    summary = train_s2(
        train, val, args.out_dir, params=params, seed=args.seed, threads=args.threads
    )
    if args.summary:
        write_json(summary, args.summary)
