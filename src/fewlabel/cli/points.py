"""Stages ``extract_points`` (density/response map → points CSV) and the LoG baseline
(``fit_log_threshold``: tune a LoG threshold on annotated samples; ``predict_log``: LoG response map)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fewlabel.cli import add_common, add_sample_sheet, json_arg
from fewlabel.errors import ConfigError


class _FirstChannel:
    """ZYX view of channel 0 of a CZYX array (a density map written with a channel axis)."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape[1:])
        chunks = getattr(array, "chunks", None)
        self.chunks = tuple(chunks[1:]) if chunks is not None else None

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, tuple):
            index = (index,)
        return self.array[(0, *index)]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("extract_points",
                              help="local maxima of a density/response map -> points CSV")
    p.add_argument("--sample", required=True)
    p.add_argument("--density", required=True, help="density or response map (.ome.zarr)")
    p.add_argument("--model-dir", default=None,
                   help="model folder; its thresholds.json gives 'detection_threshold'")
    p.add_argument("--threshold", type=float, default=None,
                   help="override the model's detection threshold")
    p.add_argument("--params", type=json_arg, default={},
                   help='JSON detection.peaks section: {"min_distance": [z,y,x], '
                        '"refine_radius": [z,y,x], "block_shape": null}')
    p.add_argument("--output", required=True, help="points CSV (z,y,x,z_um,y_um,x_um,score)")
    add_common(p)
    p.set_defaults(handler=run_extract_points)

    t = subparsers.add_parser("fit_log_threshold", help="tune the LoG baseline's threshold on annotations")
    t.add_argument("--samples-json", default=None,
                   help="JSON list (or a .json file) of {sample, image (.ome.zarr), points (csv)}")
    add_sample_sheet(t, what="the train/val samples with points (instead of --samples-json)")
    t.add_argument("--params", type=json_arg, default={},
                   help='JSON detection.log section: {"sigma": [z,y,x], "gate", "gate_unit", '
                        '"n_candidates", "percentiles"}')
    t.add_argument("--peaks", type=json_arg, default={},
                   help="JSON detection.peaks section (min_distance, refine_radius) used to "
                        "tune the threshold and stored in the model")
    t.add_argument("--output-dir", required=True, help="LoG model folder to write")
    add_common(t)
    t.set_defaults(handler=run_train_log)

    q = subparsers.add_parser("predict_log", help="LoG response map of an image (OME-Zarr)")
    q.add_argument("--model-dir", required=True, help="LoG model folder (train-log)")
    q.add_argument("--image", required=True, help="input .ome.zarr")
    q.add_argument("--output", required=True, help="response .ome.zarr")
    q.add_argument("--sample", default=None)
    add_common(q)
    q.set_defaults(handler=run_predict_log)


def run_extract_points(args: argparse.Namespace) -> None:
    from fewlabel.detection.log.baseline import read_threshold
    from fewlabel.io import atomic_path, open_ome_zarr
    from fewlabel.config import PeaksConfig
    from fewlabel.detection.peaks import extract_points

    params = PeaksConfig.model_validate(args.params)
    if args.threshold is not None:
        threshold = float(args.threshold)
    elif args.model_dir is not None:
        threshold = read_threshold(args.model_dir)
    else:
        raise ConfigError("extract-points needs --model-dir (with thresholds.json) or --threshold.",
                          sample=args.sample, fix="pass the trained model folder.")
    volume = open_ome_zarr(args.density, sample=args.sample)
    array = volume.array if volume.array.ndim == 3 else _FirstChannel(volume.array)
    table = extract_points(array, threshold=threshold, min_distance=params.min_distance,
                           refine_radius=params.refine_radius,
                           voxel_size=volume.voxel_size, workers=args.threads,
                           block_shape=params.block_shape)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, index=False)


def _load_samples(text: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        source, raw = "--samples-json", stripped
    else:
        path = Path(stripped)
        if not path.exists():
            raise ConfigError("samples JSON file not found.", path=path,
                              fix="pass a JSON list of {sample, image, points} or its file.")
        source, raw = str(path), path.read_text()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON ({exc}).",
                          fix="pass a JSON list of {sample, image, points} objects.") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(f"{source} must be a list of {{sample, image, points}} objects.",
                          fix="e.g. [{\"sample\": \"a\", \"image\": \"a.ome.zarr\", "
                              "\"points\": \"a.csv\"}].")
    return data


def run_train_log(args: argparse.Namespace) -> None:
    from fewlabel.config import LogConfig, PeaksConfig
    from fewlabel.detection.log.baseline import train_log

    params = LogConfig.model_validate(args.params)
    peaks = PeaksConfig.model_validate(args.peaks)
    if args.sample_sheet:
        from fewlabel.plan import Plan

        samples = Plan.from_sheet(args.sample_sheet).log_items()
    else:
        samples = _load_samples(args.samples_json or "[]")
    train_log(samples, args.output_dir, params=params, peaks=peaks)


def run_predict_log(args: argparse.Namespace) -> None:
    from fewlabel.detection.log.baseline import load_log_model, log_response_zarr
    from fewlabel.io import open_ome_zarr

    model = load_log_model(args.model_dir)
    volume = open_ome_zarr(args.image, sample=args.sample)
    array = volume.array if volume.array.ndim == 3 else _FirstChannel(volume.array)
    log_response_zarr(array, args.output, sigma=model.sigma, voxel_size=volume.voxel_size,
                      percentiles=model.percentiles, workers=args.threads, sample=args.sample)
