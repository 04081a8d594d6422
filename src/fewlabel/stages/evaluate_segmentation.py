"""Stage ``evaluate_segmentation``: segmentation and ISL metrics of one sample.

Reads the predicted and ground-truth instance labels (``--pred``/``--gt``) and/or the
predicted and target fluorescence (``--pred-fluo``/``--target-fluo``), computes the instance
metrics (AP@0.5:0.95, F1, SEG, MUCov, counts, centre detection) and the PCC
(:func:`fewlabel.metrics.segmentation.evaluate_sample`) and writes them as a one-row TSV.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate_segmentation", help="instance / ISL metrics of one sample -> one-row TSV"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--gt", default=None, help="ground-truth labels .ome.zarr (ZYX integers)")
    p.add_argument("--pred", default=None, help="predicted labels .ome.zarr (ZYX integers)")
    p.add_argument(
        "--pred-fluo", default=None, help="predicted fluorescence .ome.zarr (PCC; '' = none)"
    )
    p.add_argument(
        "--target-fluo", default=None, help="target fluorescence .ome.zarr (PCC; '' = none)"
    )
    p.add_argument("--output", required=True, help="one-row metrics TSV")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help="JSON evaluation.segmentation section: centre_gate_um (null = auto), fluo_channel (0)",
    )
    add_common(p)
    p.set_defaults(handler=evaluate_segmentation)


def evaluate_segmentation(args: argparse.Namespace) -> None:
    import pandas as pd

    from fewlabel.config import SegmentationEvalConfig
    from fewlabel.errors import ConfigError
    from fewlabel.metrics.segmentation import evaluate_sample
    from fewlabel.metrics.tables import write_metrics_tsv

    params = SegmentationEvalConfig.model_validate(args.params)
    args.pred_fluo, args.target_fluo = args.pred_fluo or None, args.target_fluo or None
    if (args.gt is None) != (args.pred is None):
        raise ConfigError("--gt and --pred must be given together.", sample=args.sample)
    if (args.pred_fluo is None) != (args.target_fluo is None):
        raise ConfigError(
            "--pred-fluo and --target-fluo must be given together.", sample=args.sample
        )
    if args.gt is None and args.pred_fluo is None:
        raise ConfigError(
            "nothing to evaluate.",
            sample=args.sample,
            fix="pass --gt/--pred (instances) and/or --pred-fluo/--target-fluo.",
        )
    row = evaluate_sample(
        args.sample,
        labels=(args.gt, args.pred) if args.gt is not None else None,
        fluorescence=(args.pred_fluo, args.target_fluo) if args.pred_fluo is not None else None,
        centre_gate_um=params.centre_gate_um,
        fluo_channel=params.fluo_channel,
    )
    write_metrics_tsv(pd.DataFrame([row]), args.output)
