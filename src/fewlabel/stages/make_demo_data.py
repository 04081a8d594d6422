"""Stage ``make_demo_data``: the synthetic inputs of the default workflow.

Writes the demo volumes (spots and nuclei, train/val/test), their annotations and
``manifest.json`` into ``--outdir`` (:func:`fewlabel.synth.make_demo`, parameters from config
``demo.params``); with ``--sheet`` also the matching sample sheet (TSV).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make_demo_data", help="write the synthetic demo volumes + manifest.json"
    )
    p.add_argument("--outdir", required=True, help="folder for the demo files")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON (config demo.params), e.g. {"spots_shape": [16, 128, 128], '
        '"spots_snr": 4, "nuclei_count": 6}',
    )
    p.add_argument("--sheet", default=None, help="also write the demo sample sheet (TSV) here")
    add_common(p)
    p.set_defaults(handler=make_demo_data)


def make_demo_data(args: argparse.Namespace) -> None:
    from fewlabel.config import DemoParams
    from fewlabel.synth import make_demo

    rows = make_demo(args.outdir, params=DemoParams.model_validate(args.params), seed=args.seed)
    if args.sheet:
        _write_sheet(rows, args.sheet)


def _write_sheet(rows: list[dict[str, str]], path: str) -> None:
    """The demo rows as a sample sheet (TSV, the sheet's columns in order), atomically."""
    import csv
    from pathlib import Path

    from fewlabel.config import SHEET_COLUMNS
    from fewlabel.io import atomic_path

    with atomic_path(path) as tmp, open(Path(tmp), "w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=list(SHEET_COLUMNS),
            delimiter="\t",
            extrasaction="ignore",
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(rows)
