"""Stage ``fit_log_threshold``: tune the LoG baseline's detection threshold on annotations.

Reads the annotated samples of ``--splits`` (image, points and the sheet's
``annotated_region``; from the sample sheet or ``--samples-json``), computes their
Laplacian-of-Gaussian responses and picks the threshold with the best F1 against what the
points cover (:func:`fewlabel.detection.log.tuning.train_log`: click recall with known-region
precision when partially clicked), and writes the LoG model folder (sigma, normalisation, peak
parameters, ``thresholds.json`` with the tuned F1). With ``method: log`` it is the detector;
beside a density detector (``detection.log.compare``) it is the baseline the report compares
the learned threshold's validation F1 with.
"""

from __future__ import annotations

import argparse
from typing import Any

from fewlabel.cli import (
    add_common,
    add_evaluation_gate,
    add_object_diameter,
    add_sample_sheet,
    json_arg,
)
from fewlabel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit_log_threshold", help="tune the LoG baseline's threshold on annotations"
    )
    p.add_argument(
        "--samples-json",
        default=None,
        help="JSON list (or a .json file) of {sample, image (.ome.zarr), points (csv)[, "
        "annotated_region (full | none | a box CSV or mask)]}",
    )
    add_sample_sheet(p, what="the train/val samples with points (instead of --samples-json)")
    p.add_argument(
        "--splits",
        default="train,val",
        help="comma-separated sheet splits to tune on (with --sample-sheet)",
    )
    p.add_argument(
        "--targets",
        type=json_arg,
        default={},
        help="JSON detection.targets section: what partially clicked points cover "
        "(annotation, sigma, click_radius_um), read as the density detector reads it",
    )
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON detection.log section: {"sigma": [z,y,x], "gate", "gate_unit", '
        '"n_candidates", "percentiles"}',
    )
    p.add_argument(
        "--peaks",
        type=json_arg,
        default={},
        help="JSON detection.peaks section (min_distance, refine_radius) used to "
        "tune the threshold and stored in the model",
    )
    add_object_diameter(
        p,
        derives=(
            "a min_distance left at its default becomes the object radius in voxels of each volume"
        ),
    )
    add_evaluation_gate(p)
    p.add_argument("--output-dir", required=True, help="LoG model folder to write")
    add_common(p)
    p.set_defaults(handler=fit_log_threshold)


def fit_log_threshold(args: argparse.Namespace) -> None:
    from fewlabel.config import DensityTargetsConfig, LogConfig, PeaksConfig
    from fewlabel.detection.log.tuning import train_log

    params = LogConfig.model_validate(args.params)
    peaks = PeaksConfig.model_validate(args.peaks)
    targets = DensityTargetsConfig.model_validate(args.targets)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if args.sample_sheet:
        from fewlabel.plan import Plan

        samples = Plan.from_sheet(args.sample_sheet).log_items(splits)
    else:
        samples = _read_samples(args.samples_json or "[]")
    train_log(
        samples,
        args.output_dir,
        params=params,
        peaks=peaks,
        object_diameter_um=args.object_diameter_um,
        evaluation=args.evaluation,
        targets=targets,
        tuned_on="+".join(splits) if args.sample_sheet else "given samples",
    )


def _read_samples(text: str) -> list[dict[str, Any]]:
    """``--samples-json``: a JSON list (or one object) inline, or the path of a JSON file."""
    import json
    from pathlib import Path

    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        source, raw = "--samples-json", stripped
    else:
        path = Path(stripped)
        if not path.exists():
            raise ConfigError(
                "samples JSON file not found.",
                path=path,
                fix="pass a JSON list of {sample, image, points} or its file.",
            )
        source, raw = str(path), path.read_text()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON ({exc}).",
            fix="pass a JSON list of {sample, image, points} objects.",
        ) from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(
            f"{source} must be a list of {{sample, image, points}} objects.",
            fix='e.g. [{"sample": "a", "image": "a.ome.zarr", "points": "a.csv"}].',
        )
    return data
