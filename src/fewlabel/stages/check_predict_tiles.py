"""Stage ``check_predict_tiles``: every volume to predict holds one prediction tile.

Reads the sample sheet and the config, and for every sample that the density detector or the
segmenter will predict checks the input image's shape (header only) against the tile
(``detection.predict.tile`` / ``segmentation.predict.tile``, unless ``pad_to_tile``;
:meth:`fewlabel.plan.Plan.check_predict_tiles`). In the workflow the training rules wait for
it, so a too-small volume fails before any training, naming the sample, the file, its shape,
the tile and the fix. Writes a JSON record of what was checked. Rule ``check_predict_tiles``
makes the same library call in Snakemake's own Python (no params, no inputs but the demo
data: it runs once, and never triggers retraining).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_sample_sheet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check_predict_tiles",
        help="fail early when a volume to predict is smaller than a prediction tile",
    )
    add_sample_sheet(p, what="the samples (which are predicted, and by what)")
    p.add_argument("--configfile", required=True, help="config.yaml (validated, defaults filled)")
    p.add_argument("--output", required=True, help="JSON record of the checked shapes and tiles")
    add_common(p)
    p.set_defaults(handler=check_predict_tiles)


def check_predict_tiles(args: argparse.Namespace) -> None:
    import logging
    from pathlib import Path

    import yaml

    from fewlabel.config import load_samples, validate_config
    from fewlabel.errors import ConfigError
    from fewlabel.plan import Plan
    from fewlabel.runtime import write_json

    settings = yaml.safe_load(Path(args.configfile).read_text()) or {}
    validate_config(settings)
    sheet = args.sample_sheet or settings["samples"]
    if not sheet:
        raise ConfigError("check_predict_tiles needs a sample sheet.", fix="pass --sample-sheet.")
    demo = settings["demo"]
    generated = [demo["output_dir"]] if demo["enabled"] else []
    record = Plan(load_samples(sheet, generated_dirs=generated), settings).check_predict_tiles()
    logging.getLogger(__name__).info(
        "%d volume(s) to predict hold their prediction tiles", len(record)
    )
    write_json(record, args.output)
