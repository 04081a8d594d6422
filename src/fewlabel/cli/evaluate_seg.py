"""Stages ``evaluate_segmentation`` (one sample → one-row TSV) and ``aggregate_segmentation``."""

from __future__ import annotations

import argparse
from typing import Any

from fewlabel.cli import add_common, add_sample_sheet, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate_segmentation",
                              help="instance / ISL metrics of one sample -> one-row TSV")
    p.add_argument("--sample", required=True)
    p.add_argument("--gt", default=None, help="ground-truth labels .ome.zarr (ZYX integers)")
    p.add_argument("--pred", default=None, help="predicted labels .ome.zarr (ZYX integers)")
    p.add_argument("--pred-fluo", default=None, help="predicted fluorescence .ome.zarr (PCC)")
    p.add_argument("--target-fluo", default=None, help="target fluorescence .ome.zarr (PCC)")
    p.add_argument("--output", required=True, help="one-row metrics TSV")
    p.add_argument("--params", type=json_arg, default={},
                   help="JSON evaluation.segmentation section: centre_gate_um (null = auto), "
                        "fluo_channel (0)")
    add_common(p)
    p.set_defaults(handler=run_evaluate_segmentation)

    q = subparsers.add_parser("aggregate_segmentation",
                              help="per-sample segmentation TSVs -> summary with ALL/MEAN rows")
    q.add_argument("--inputs", nargs="*", default=[], help="per-sample metrics TSVs")
    add_sample_sheet(q, what="the test samples' metrics TSVs (instead of --inputs)")
    q.add_argument("--output", required=True, help="summary TSV")
    add_common(q)
    q.set_defaults(handler=run_aggregate_segmentation)


def _labels(path: str, sample: str) -> Any:
    from fewlabel.errors import InputDataError
    from fewlabel.io import open_ome_zarr

    volume = open_ome_zarr(path, sample=sample)
    array = volume.array
    if len(volume.shape) == 4 and volume.shape[0] == 1:
        from fewlabel.cli.instances import _Channel

        array = _Channel(array, 0)
    elif len(volume.shape) != 3:
        raise InputDataError(f"label image has shape {volume.shape}; expected ZYX.",
                             sample=sample, path=path, fix="pass an instance label OME-Zarr.")
    if volume.array.dtype.kind not in "uib":
        raise InputDataError(f"label image has non-integer dtype {volume.array.dtype}.",
                             sample=sample, path=path, fix="pass integer instance labels.")
    return volume, array


def _fluo(path: str, sample: str, channel: int) -> Any:
    from fewlabel.cli.instances import _Channel
    from fewlabel.errors import InputDataError
    from fewlabel.io import open_ome_zarr

    volume = open_ome_zarr(path, sample=sample)
    if len(volume.shape) == 3:
        return volume.array
    if len(volume.shape) == 4 and 0 <= channel < volume.shape[0]:
        return _Channel(volume.array, channel)
    raise InputDataError(f"fluorescence image has shape {volume.shape}; expected ZYX or CZYX "
                         f"with channel {channel}.", sample=sample, path=path,
                         fix="check fluo_channel in the evaluation parameters.")


def run_evaluate_segmentation(args: argparse.Namespace) -> None:
    import logging

    import numpy as np
    import pandas as pd

    from fewlabel.config import SegmentationEvalConfig
    from fewlabel.errors import ConfigError, InputDataError
    from fewlabel.metrics.detection import write_tsv
    from fewlabel.metrics.segmentation import evaluate_segmentation, pcc

    log = logging.getLogger("fewlabel.cli.evaluate_seg")
    params = SegmentationEvalConfig.model_validate(args.params)
    if (args.gt is None) != (args.pred is None):
        raise ConfigError("--gt and --pred must be given together.", sample=args.sample)
    if (args.pred_fluo is None) != (args.target_fluo is None):
        raise ConfigError("--pred-fluo and --target-fluo must be given together.",
                          sample=args.sample)
    if args.gt is None and args.pred_fluo is None:
        raise ConfigError("nothing to evaluate.", sample=args.sample,
                          fix="pass --gt/--pred (instances) and/or --pred-fluo/--target-fluo.")
    row: dict[str, Any] = {"sample": args.sample}
    if args.gt is not None:
        gt_volume, gt = _labels(args.gt, args.sample)
        pred_volume, pred = _labels(args.pred, args.sample)
        if tuple(gt.shape) != tuple(pred.shape):
            raise InputDataError(f"predicted labels {tuple(pred.shape)} and ground truth "
                                 f"{tuple(gt.shape)} differ in shape.", sample=args.sample,
                                 path=args.pred, fix="predict on the same volume as the GT.")
        if not np.allclose(gt_volume.voxel_size, pred_volume.voxel_size, rtol=1e-3):
            log.warning("sample %s: voxel sizes differ (gt %s, pred %s); using the GT's",
                        args.sample, gt_volume.voxel_size, pred_volume.voxel_size)
        row.update(evaluate_segmentation(gt, pred, voxel_size=gt_volume.voxel_size,
                                         centre_gate_um=params.centre_gate_um))
        log.info("sample %s: n_gt=%d n_pred=%d AP@0.5:0.95=%.3f F1@0.5=%.3f SEG=%.3f",
                 args.sample, row["n_gt"], row["n_pred"], row["ap_mean"], row["f1_50"],
                 row["seg"])
    if args.pred_fluo is not None:
        x = _fluo(args.pred_fluo, args.sample, params.fluo_channel)
        y = _fluo(args.target_fluo, args.sample, params.fluo_channel)
        if tuple(x.shape) != tuple(y.shape):
            raise InputDataError(f"predicted fluorescence {tuple(x.shape)} and target "
                                 f"{tuple(y.shape)} differ in shape.", sample=args.sample,
                                 path=args.pred_fluo)
        row["pcc"] = pcc(x, y)
        log.info("sample %s: PCC=%.4f", args.sample, row["pcc"])
    write_tsv(pd.DataFrame([row]), args.output)


def run_aggregate_segmentation(args: argparse.Namespace) -> None:
    from fewlabel.metrics.detection import write_tsv
    from fewlabel.metrics.segmentation import aggregate_segmentation, read_metric_tables

    inputs = list(args.inputs)
    if args.sample_sheet:
        from fewlabel.plan import SEGMENTATION_METRICS, Plan, expand

        inputs += expand(SEGMENTATION_METRICS, Plan.from_sheet(args.sample_sheet)
                         .segmentation_eval_samples())
    write_tsv(aggregate_segmentation(read_metric_tables(inputs)), args.output)
