"""Stage ``build_report``: the self-contained HTML report of a run.

Reads what the report shows (from the sample sheet and the config snapshot,
:func:`fewlabel.plan_report.report_inputs`; or a JSON object of
:class:`fewlabel.report.ReportInputs` fields): samples, config, metrics tables, training
curves, projections with points and outlines; renders it (:func:`fewlabel.report.build_report`)
and writes one HTML file with every figure embedded.
"""

from __future__ import annotations

import argparse
from typing import Any

from fewlabel.cli import add_common, json_arg
from fewlabel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build_report", help="one self-contained HTML report for the run")
    p.add_argument("--output", required=True, help="report .html")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--inputs-json",
        type=json_arg,
        default=None,
        help="JSON object of ReportInputs fields (paths as strings)",
    )
    source.add_argument(
        "--inputs-file", default=None, help="path to a JSON file holding the same object"
    )
    source.add_argument(
        "--sample-sheet",
        default=None,
        help="the run's sample sheet: what to show follows from it and --config "
        "(fewlabel.plan_report.report_inputs)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="the run's config snapshot (results/config.yaml), with --sample-sheet",
    )
    p.add_argument(
        "--max-px",
        type=int,
        default=1024,
        help="largest side in pixels of a projected or sliced image",
    )
    add_common(p)
    p.set_defaults(handler=build_report)


def build_report(args: argparse.Namespace) -> None:
    from fewlabel import report

    values = _report_inputs(args)
    if args.max_px < 16:
        raise ConfigError(f"--max-px {args.max_px} is too small.", fix="use e.g. 1024.")
    report.build_report(
        args.output, inputs=report.ReportInputs.from_dict(values), max_px=args.max_px
    )


def _report_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The ReportInputs fields from --sample-sheet + --config, --inputs-file or --inputs-json."""
    import json
    from pathlib import Path

    if args.sample_sheet is not None:
        from fewlabel.plan import Plan
        from fewlabel.plan_report import report_inputs

        if not args.config:
            raise ConfigError(
                "--sample-sheet needs --config (the run's config snapshot).",
                fix="pass --config results/config.yaml.",
            )
        values = report_inputs(Plan.from_files(args.sample_sheet, args.config))
    elif args.inputs_file is not None:
        path = Path(args.inputs_file)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read the report inputs ({exc}).",
                path=path,
                fix="write a JSON object of report inputs.",
            ) from exc
    else:
        values = args.inputs_json
    if not isinstance(values, dict):
        raise ConfigError(
            "report inputs must be a JSON object.",
            fix='pass e.g. --inputs-json \'{"title": "run"}\'.',
        )
    return values
