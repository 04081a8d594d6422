"""Stage ``aggregate_detection``: per-sample detection metrics → one summary table.

Reads the one-row metrics TSVs of ``evaluate_detection`` (``--inputs``, or the test samples'
from the sample sheet), pools the counts over samples and averages the per-sample scores
(:func:`fewlabel.metrics.tables.aggregate_metrics`) and writes the table with its pooled
and mean rows.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_sample_sheet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "aggregate_detection", help="per-sample detection metrics -> table with pooled/mean rows"
    )
    p.add_argument("--inputs", nargs="*", default=[], help="metrics TSVs (evaluate_detection)")
    add_sample_sheet(p, what="the test samples' metrics TSVs (instead of --inputs)")
    p.add_argument(
        "--metrics",
        default=None,
        help="with --sample-sheet: the metrics path template ({sample}; default "
        "results/evaluate/{sample}/detection.tsv)",
    )
    p.add_argument("--output", required=True, help="summary TSV")
    add_common(p)
    p.set_defaults(handler=aggregate_detection)


def aggregate_detection(args: argparse.Namespace) -> None:
    from fewlabel.errors import ConfigError
    from fewlabel.metrics.tables import aggregate_metrics, write_tsv

    inputs = list(args.inputs)
    if args.sample_sheet:
        from fewlabel.plan import DETECTION_METRICS, Plan, expand

        inputs += expand(
            args.metrics or DETECTION_METRICS,
            Plan.from_sheet(args.sample_sheet).detection_eval_samples(),
        )
    if not inputs:
        raise ConfigError(
            "no metrics to aggregate.",
            fix="pass --inputs or a --sample-sheet with test rows that have points.",
        )
    write_tsv(aggregate_metrics(inputs), args.output)
