"""Command line: ``python -m fewlabel <stage> ...``; every Snakemake rule calls one stage.

Each module in this package (not starting with ``_``) defines ``register(subparsers)`` that adds
its stage(s); a stage's handler receives the parsed ``argparse.Namespace`` and returns None.
Common options (``--log``, ``--threads``, ``--seed``) are added by :func:`add_common`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from fewlabel import stages
from fewlabel.errors import FewlabelError
from fewlabel.logs import configure_logging

log = logging.getLogger("fewlabel.cli")


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


def add_predict_params(parser: argparse.ArgumentParser) -> None:
    """``--params``: the tiled-inference section (:class:`fewlabel.config.PredictConfig`)."""
    parser.add_argument(
        "--params", type=json_arg, default={},
        help='JSON predict section, e.g. {"tile": [16, 64, 64], "overlap": [4, 16, 16], '
             '"batch_size": 4, "cache_tiles": 64, "out_chunks": null, "pad_to_tile": false}')


def add_sample_sheet(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--sample-sheet``: the stage selects its samples and files itself (fewlabel.plan), so a
    sheet of thousands of rows keeps the command line short."""
    parser.add_argument("--sample-sheet", default=None,
                        help=f"the run's sample sheet (TSV); {what} are taken from it")


def plan_items(sheet: str, items: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and val items of a training stage from the sample sheet (``items`` names the
    :class:`fewlabel.plan.Plan` method, e.g. ``detector_items``)."""
    from fewlabel.plan import Plan

    get = getattr(Plan.from_sheet(sheet), items)
    return get("train"), get("val")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewlabel", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    for info in sorted(pkgutil.iter_modules(stages.__path__), key=lambda m: m.name):
        importlib.import_module(f"{stages.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log)
    log.info("fewlabel %s %s", args.stage, " ".join(sys.argv[2:] if argv is None else argv[1:]))
    try:
        try:
            args.handler(args)
        except ValidationError as exc:  # a stage's --params against its config model
            from fewlabel.config import config_error

            raise config_error(exc, fix=f"check the config section passed to {args.stage} "
                               "(config/config.yaml documents every key).") from None
    except FewlabelError as exc:
        if exc.sample is None and getattr(args, "sample", None):
            exc = type(exc)(exc.problem, sample=args.sample, path=exc.path, fix=exc.fix)
        log.error("%s", exc)
        print(f"fewlabel {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return 0
