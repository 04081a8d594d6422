"""Stage ``evaluate_detection``: detection metrics of one sample.

Reads the predicted and ground-truth points CSVs and the voxel size (``--voxel-size``, else
the sample's ingested ``--volume``), matches the points one-to-one within the gate (voxels or
µm; :func:`fewlabel.metrics.detection.evaluate_sample`) and writes a one-row TSV (P, R, F1 at
the gate, RMSE) and optionally the per-point matches CSV. With ``--annotated-region`` (a test
volume clicked completely only inside boxes or a mask) precision counts the predictions there.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from fewlabel.cli import add_common, json_arg
from fewlabel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate_detection", help="match predicted to ground-truth points: P/R/F1@gate, RMSE"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--gt", required=True, help="ground-truth points CSV (z,y,x voxels)")
    p.add_argument("--pred", required=True, help="predicted points CSV (z,y,x voxels)")
    p.add_argument(
        "--voxel-size",
        type=json_arg,
        default=None,
        help="JSON [z, y, x] µm (needed for gate_unit 'um')",
    )
    p.add_argument(
        "--volume",
        default=None,
        help="the sample's ingested .ome.zarr: voxel size when --voxel-size is absent",
    )
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON evaluation.detection section: {"gate": 5.0, "gate_unit": "voxel"|"um"}',
    )
    p.add_argument(
        "--annotated-region",
        default="",
        help="where the ground truth is complete (the sheet's annotated_region: a box CSV or "
        "a mask image; empty or 'full': everywhere): precision counts predictions inside only",
    )
    p.add_argument("--output", required=True, help="one-row metrics TSV")
    p.add_argument("--matches", default=None, help="per-point matches CSV")
    add_common(p)
    p.set_defaults(handler=evaluate_detection)


def evaluate_detection(args: argparse.Namespace) -> None:
    from fewlabel.config import DetectionEvalConfig
    from fewlabel.metrics.detection import evaluate_sample

    params = DetectionEvalConfig.model_validate(args.params)
    voxel_size = args.voxel_size
    if voxel_size is None and args.volume is not None:
        from fewlabel.io import open_ome_zarr

        voxel_size = list(open_ome_zarr(args.volume, sample=args.sample).voxel_size)
    if voxel_size is None:
        if params.gate_unit == "um":
            raise ConfigError(
                "gate_unit 'um' needs the sample's voxel size.",
                sample=args.sample,
                fix="pass --voxel-size '[z, y, x]' (µm) or use gate_unit 'voxel'.",
            )
        voxel = (1.0, 1.0, 1.0)
    else:
        voxel = _voxel_size(voxel_size, args.sample)
    evaluate_sample(
        args.gt,
        args.pred,
        sample=args.sample,
        gate=params.gate,
        gate_unit=params.gate_unit,
        voxel_size=voxel,
        output=args.output,
        matches=args.matches,
        region=_region(args),
    )


def _region(args: argparse.Namespace) -> Any:
    """The annotated region's mask on the ingested volume's grid (None: complete everywhere)."""
    spec = (args.annotated_region or "").strip()
    if spec in ("", "full"):
        return None
    if args.volume is None:
        raise ConfigError(
            f"--annotated-region {spec!r} needs the sample's ingested --volume (its shape).",
            sample=args.sample,
            fix="pass --volume results/ingest/<sample>/image.ome.zarr.",
        )
    from fewlabel.detection.density.partial import load_region
    from fewlabel.io import open_ome_zarr

    shape = open_ome_zarr(args.volume, sample=args.sample).shape[-3:]
    return load_region(spec, shape, sample=args.sample)


def _voxel_size(value: Any, sample: str) -> tuple[float, float, float]:
    """``--voxel-size`` as three positive finite numbers (ConfigError otherwise)."""
    try:
        vs = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(v > 0 and math.isfinite(v) for v in vs):
        raise ConfigError(
            f"--voxel-size {value!r} is not three positive numbers.",
            sample=sample,
            fix="pass --voxel-size '[z, y, x]' in µm.",
        )
    return vs  # type: ignore[return-value]
