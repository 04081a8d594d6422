"""Command line: ``python -m fewlabel <stage> ...``; every Snakemake rule calls one stage.

Stages live in :mod:`fewlabel.stages`, one module per rule named like the rule; utilities
that are not rules (``synth``) live in :mod:`fewlabel.tools`. Each module defines
``register(subparsers)``, which adds the subcommand named like the module, and an entry
function of that same name that receives the parsed ``argparse.Namespace`` and returns None;
``python -m fewlabel <stage> --help`` shows the module docstring and the options.
:func:`build_parser` imports every module of both packages, so a module imports only the
standard library and light fewlabel modules at its top; the library (numpy, zarr, torch) is
imported inside the entry function.

This module holds what the stages share: common options (:func:`add_common`), JSON option
types, the prediction and sample-sheet options, and :func:`main`, which turns a config
section that fails validation into a :class:`fewlabel.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from fewlabel import stages, tools
from fewlabel.errors import ConfigError, FewlabelError
from fewlabel.logs import configure_logging

log = logging.getLogger("fewlabel.cli")

#: packages whose every module adds one subcommand (rule stages, then other tools)
COMMAND_PACKAGES: tuple[ModuleType, ...] = (stages, tools)


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every stage accepts."""
    parser.add_argument("--log", default=None, help="append log lines to this file")
    parser.add_argument("--threads", type=int, default=1, help="worker threads / torch threads")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def json_arg(text: str) -> Any:
    """argparse ``type=`` for a JSON value (e.g. a config section passed by a rule)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def optional_json_arg(text: str) -> Any:
    """Like :func:`json_arg`, but an empty string (a rule's "not given") means None."""
    return json_arg(text) if text.strip() else None


def add_object_diameter(parser: argparse.ArgumentParser, *, derives: str) -> None:
    """``--object-diameter-um``: ``detection.object_diameter_um`` (empty: not set)."""
    parser.add_argument(
        "--object-diameter-um",
        type=optional_float_arg,
        default=None,
        help=f"detection.object_diameter_um ('' = not set): {derives}",
    )


def add_evaluation_gate(parser: argparse.ArgumentParser) -> None:
    """``--evaluation``: the ``evaluation.detection`` section, whose gate tunes the threshold
    unless the method's own gate is set (one matching rule for tuning and scoring)."""
    parser.add_argument(
        "--evaluation",
        type=json_arg,
        default={},
        help='JSON evaluation.detection section {"gate": 0.5, "gate_unit": "um"}: the gate '
        "used for threshold tuning when the method's gate is null",
    )


def optional_float_arg(text: str) -> float | None:
    """argparse ``type=``: a number, or an empty string (a rule's "not given") for None."""
    return float(text) if text.strip() else None


def add_predict_params(parser: argparse.ArgumentParser) -> None:
    """``--params``: the tiled-inference section (:class:`fewlabel.config.PredictConfig`)."""
    parser.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON predict section, e.g. {"tile": [16, 64, 64], "overlap": [4, 16, 16], '
        '"batch_size": 4, "cache_tiles": 64, "out_chunks": null, "pad_to_tile": false}',
    )


def add_roi(parser: argparse.ArgumentParser) -> None:
    """``--roi``: ROI mask OME-Zarr gating a prediction ('' = none; config
    ``roi.gate_prediction``): tiles without an ROI voxel are not computed (background 0)."""
    parser.add_argument(
        "--roi",
        default="",
        help="ROI mask .ome.zarr (segment_roi) gating the prediction: tiles without an ROI "
        "voxel are skipped and predicted as 0 ('' = no gating)",
    )


def add_predict_inputs(parser: argparse.ArgumentParser) -> None:
    """The options of the detector prediction stages: sample, model, image, output, params."""
    parser.add_argument("--sample", required=True)
    parser.add_argument("--model-dir", required=True, help="trained model folder")
    parser.add_argument("--image", required=True, help="input .ome.zarr (ZYX or CZYX)")
    parser.add_argument("--output", required=True, help="output .ome.zarr (float32)")
    add_predict_params(parser)


def add_sample_sheet(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--sample-sheet``: the stage selects its samples and files itself (fewlabel.plan), so a
    sheet of thousands of rows keeps the command line short."""
    parser.add_argument(
        "--sample-sheet",
        default=None,
        help=f"the run's sample sheet (TSV); {what} are taken from it",
    )


def plan_items(sheet: str, items: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and val items of a training stage from the sample sheet (``items`` names the
    :class:`fewlabel.plan.Plan` method, e.g. ``detector_items``)."""
    from fewlabel.plan import Plan

    get = getattr(Plan.from_sheet(sheet), items)
    return get("train"), get("val")


def add_training_inputs(parser: argparse.ArgumentParser, *, keys: str, section: str) -> None:
    """Options of every training stage: its train/val items (from the sample sheet, or JSON
    lists of ``{keys}`` objects given inline or as files), the model folder to write, its
    config section and an optional summary JSON."""
    add_sample_sheet(parser, what="the train/val items (instead of --train-json/--val-json)")
    items = f"JSON list (inline or a .json file) of {{{keys}}} items"
    parser.add_argument("--train-json", default="", help=items)
    parser.add_argument("--val-json", default="", help=items + " ('' = none)")
    parser.add_argument("--out-dir", required=True, help="model folder to write")
    parser.add_argument("--params", type=json_arg, default={}, help=f"JSON {section} section")
    parser.add_argument("--summary", default=None, help="also write the training summary JSON")


def training_items(args: argparse.Namespace, items: str) -> tuple[list[Any], list[Any]]:
    """The train and val items of :func:`add_training_inputs` options (``items``: the
    :class:`fewlabel.plan.Plan` method used with ``--sample-sheet``)."""
    if args.sample_sheet:
        return plan_items(args.sample_sheet, items)
    return read_items(args.train_json, "--train-json"), read_items(args.val_json, "--val-json")


def read_items(value: Any, what: str) -> list[Any]:
    """Items from a CLI value: a JSON file path, a JSON string, a list, or ''/None (empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    text = str(value)
    path = Path(text)
    if not text.lstrip().startswith(("[", "{")) and path.exists():
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what}: cannot parse JSON ({exc}).", path=path) from exc
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{what}: neither an existing JSON file nor a JSON list: {text[:80]!r}."
            ) from exc
    if isinstance(value, dict) and "items" in value:
        value = value["items"]
    if not isinstance(value, list):
        raise ConfigError(f"{what}: expected a JSON list of items; got {type(value).__name__}.")
    return value


def command_modules() -> list[ModuleType]:
    """Every stage module, then every tool module, each package sorted by name."""
    modules = []
    for package in COMMAND_PACKAGES:
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                modules.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The ``fewlabel`` parser with one subcommand per module of :data:`COMMAND_PACKAGES`."""
    parser = argparse.ArgumentParser(prog="fewlabel", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for module in command_modules():
        name = module.__name__.rsplit(".", 1)[-1]
        module.register(subparsers)
        sub = subparsers.choices.get(name)
        handler = sub.get_default("handler") if sub is not None else None
        if getattr(handler, "__name__", None) != name or handler.__module__ != module.__name__:
            raise RuntimeError(
                f"{module.__name__}.register must add the subcommand {name!r} "
                f"with handler {module.__name__}.{name}"
            )
        if sub.description is None:  # `<stage> --help` shows the module docstring
            sub.description = module.__doc__
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the stage; 2 and one error line on stderr for a FewlabelError."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log)
    log.info("fewlabel %s %s", args.stage, " ".join(sys.argv[2:] if argv is None else argv[1:]))
    try:
        try:
            args.handler(args)
        except ValidationError as exc:  # a stage's --params against its config model
            from fewlabel.config import config_error

            raise config_error(
                exc,
                fix=f"check the config section passed to {args.stage} "
                "(config/config.yaml documents every key).",
            ) from None
    except FewlabelError as exc:
        if exc.sample is None and getattr(args, "sample", None):
            exc = type(exc)(exc.problem, sample=args.sample, path=exc.path, fix=exc.fix)
        log.error("%s", exc)
        print(f"fewlabel {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return 0
