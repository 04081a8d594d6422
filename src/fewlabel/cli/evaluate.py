"""Stages ``evaluate_detection`` (F1@gate + RMSE per sample) and ``aggregate_detection``."""

from __future__ import annotations

import argparse
import math
from typing import Any

from fewlabel.cli import add_common, add_sample_sheet, json_arg
from fewlabel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate_detection",
                              help="match predicted to ground-truth points: P/R/F1@gate, RMSE")
    p.add_argument("--sample", required=True)
    p.add_argument("--gt", required=True, help="ground-truth points CSV (z,y,x voxels)")
    p.add_argument("--pred", required=True, help="predicted points CSV (z,y,x voxels)")
    p.add_argument("--voxel-size", type=json_arg, default=None,
                   help="JSON [z, y, x] µm (needed for gate_unit 'um')")
    p.add_argument("--volume", default=None,
                   help="the sample's ingested .ome.zarr: voxel size when --voxel-size is absent")
    p.add_argument("--params", type=json_arg, default={},
                   help='JSON evaluation.detection section: {"gate": 5.0, '
                        '"gate_unit": "voxel"|"um"}')
    p.add_argument("--output", required=True, help="one-row metrics TSV")
    p.add_argument("--matches", default=None, help="per-point matches CSV")
    add_common(p)
    p.set_defaults(handler=run_evaluate_detection)

    q = subparsers.add_parser("aggregate_detection",
                              help="per-sample detection metrics -> table with pooled/mean rows")
    q.add_argument("--inputs", nargs="*", default=[], help="metrics TSVs (evaluate_detection)")
    add_sample_sheet(q, what="the test samples' metrics TSVs (instead of --inputs)")
    q.add_argument("--output", required=True, help="summary TSV")
    add_common(q)
    q.set_defaults(handler=run_aggregate_metrics)


def _voxel_size(value: Any, sample: str) -> tuple[float, float, float]:
    try:
        vs = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(v > 0 and math.isfinite(v) for v in vs):
        raise ConfigError(f"--voxel-size {value!r} is not three positive numbers.",
                          sample=sample, fix="pass --voxel-size '[z, y, x]' in µm.")
    return vs  # type: ignore[return-value]


def run_evaluate_detection(args: argparse.Namespace) -> None:
    from fewlabel.config import DetectionEvalConfig
    from fewlabel.metrics.detection import evaluate_sample

    params = DetectionEvalConfig.model_validate(args.params)
    if args.voxel_size is None and args.volume is not None:
        from fewlabel.io import open_ome_zarr

        args.voxel_size = list(open_ome_zarr(args.volume, sample=args.sample).voxel_size)
    if args.voxel_size is None:
        if params.gate_unit == "um":
            raise ConfigError("gate_unit 'um' needs the sample's voxel size.", sample=args.sample,
                              fix="pass --voxel-size '[z, y, x]' (µm) or use gate_unit 'voxel'.")
        voxel = (1.0, 1.0, 1.0)
    else:
        voxel = _voxel_size(args.voxel_size, args.sample)
    evaluate_sample(args.gt, args.pred, sample=args.sample, gate=params.gate,
                    gate_unit=params.gate_unit, voxel_size=voxel, output=args.output,
                    matches=args.matches)


def run_aggregate_metrics(args: argparse.Namespace) -> None:
    from fewlabel.metrics.detection import aggregate_metrics, write_tsv

    inputs = list(args.inputs)
    if args.sample_sheet:
        from fewlabel.plan import DETECTION_METRICS, Plan, expand

        inputs += expand(DETECTION_METRICS, Plan.from_sheet(args.sample_sheet)
                         .detection_eval_samples())
    if not inputs:
        raise ConfigError("no metrics to aggregate.",
                          fix="pass --inputs or a --sample-sheet with test rows that have points.")
    write_tsv(aggregate_metrics(inputs), args.output)
