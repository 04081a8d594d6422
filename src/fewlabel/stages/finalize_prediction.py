"""Stage ``finalize_prediction``: publish a slab-wise prediction once every slab is done.

Checks that every slab job of the current run (the run id that ``init_prediction_slabs``
wrote) has finished, adds the multiscale pyramid and renames the partial array to ``--output``
(:func:`fewlabel.inference.slabs.finalize_prediction`); otherwise it stops and says how to
recover.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finalize_prediction", help="publish the prediction once every slab job has finished"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--output", required=True)
    add_common(p)
    p.set_defaults(handler=finalize_prediction)


def finalize_prediction(args: argparse.Namespace) -> None:
    from fewlabel.inference import slabs
    from fewlabel.io import pyramid_settings

    with pyramid_settings(workers=max(1, int(args.threads))):
        slabs.finalize_prediction(args.output, sample=args.sample)
