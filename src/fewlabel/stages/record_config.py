"""Stage ``record_config``: the validated config (defaults filled) as ``results/config.yaml``.

Rule ``record_config`` runs this in Snakemake's own Python (its params are the config, so a
config change reruns it and, through the snapshot, the summary and the report); it also runs
alone: ``python -m fewlabel record_config --configfile config/config.yaml --output X``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


def record_config(settings: Mapping[str, Any], output: str | Path, *,
                  log: str | Path | None = None) -> None:
    """Write ``settings`` as YAML atomically (``output`` never looks complete if cut short)."""
    from fewlabel.io import atomic_path

    text = yaml.safe_dump(_plain(settings), sort_keys=False)
    with atomic_path(output) as tmp:
        Path(tmp).write_text(text)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(f"config snapshot written to {output}\n")


def _plain(value: Any) -> Any:
    """Snakemake's config holds its own mapping/list types: plain dicts/lists for YAML."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from fewlabel.cli import add_common

    p = subparsers.add_parser("record_config",
                              help="validated config with defaults filled -> YAML snapshot")
    p.add_argument("--configfile", required=True, help="config.yaml to validate")
    p.add_argument("--output", required=True, help="snapshot YAML to write")
    add_common(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fewlabel.config import validate_config

    settings = validate_config(yaml.safe_load(Path(args.configfile).read_text()) or {})
    record_config(settings, args.output)
