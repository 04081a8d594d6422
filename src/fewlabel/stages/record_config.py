"""Stage ``record_config``: the validated config (defaults filled) as ``results/config.yaml``.

Reads a config YAML, validates it (:func:`fewlabel.config.validate_config`, every default
filled in) and writes the snapshot that the summary, the provenance record and the report
read (:func:`fewlabel.runtime.write_config_snapshot`). Rule ``record_config`` makes the same
library call in Snakemake's own Python on the config Snakemake validated (its only param is a
sha256 digest of that config, so a config change reruns it with a one-line reason); this
stage runs it alone:
``python -m fewlabel record_config --configfile config/config.yaml --output X``.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record_config", help="validated config with defaults filled -> YAML snapshot"
    )
    p.add_argument("--configfile", required=True, help="config.yaml to validate")
    p.add_argument("--output", required=True, help="snapshot YAML to write")
    add_common(p)
    p.set_defaults(handler=record_config)


def record_config(args: argparse.Namespace) -> None:
    from pathlib import Path

    import yaml

    from fewlabel.config import validate_config
    from fewlabel.runtime import write_config_snapshot

    settings = yaml.safe_load(Path(args.configfile).read_text()) or {}
    validate_config(settings)  # fills in every default (and raises ConfigError)
    write_config_snapshot(settings, args.output)
