"""Stage ``aggregate_segmentation``: per-sample segmentation metrics → one summary table.

Reads the one-row metrics TSVs of ``evaluate_segmentation`` (``--inputs``, or the test
samples' from the sample sheet), adds the pooled ``ALL`` row and the macro ``MEAN`` row with
the counting errors (:func:`fewlabel.metrics.tables.aggregate_segmentation`) and writes
the summary TSV.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_sample_sheet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "aggregate_segmentation", help="per-sample segmentation TSVs -> summary with ALL/MEAN rows"
    )
    p.add_argument("--inputs", nargs="*", default=[], help="per-sample metrics TSVs")
    add_sample_sheet(p, what="the test samples' metrics TSVs (instead of --inputs)")
    p.add_argument("--output", required=True, help="summary TSV")
    add_common(p)
    p.set_defaults(handler=aggregate_segmentation)


def aggregate_segmentation(args: argparse.Namespace) -> None:
    from fewlabel.metrics import tables

    inputs = list(args.inputs)
    if args.sample_sheet:
        from fewlabel.plan import SEGMENTATION_METRICS, Plan, expand

        inputs += expand(
            SEGMENTATION_METRICS, Plan.from_sheet(args.sample_sheet).segmentation_eval_samples()
        )
    frames = tables.read_metric_tables(inputs)
    tables.write_metrics_tsv(tables.aggregate_segmentation(frames), args.output)
