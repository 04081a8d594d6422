"""Stage ``check_predict_tiles``: every volume to predict holds one prediction tile.

Reads the sample sheet and the run's config snapshot, and for every sample that the density
detector or the segmenter will predict checks the ingested volume's shape against the tile
(``detection.predict.tile`` / ``segmentation.predict.tile``, unless ``pad_to_tile``;
:func:`fewlabel.inference.geometry.check_fits_tile`). It runs right after ingest and the
training rules wait for it, so a too-small volume fails before any training, naming the
sample, its shape, the tile and the fix. Writes a JSON record of what was checked.
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
    p.add_argument(
        "--config", required=True, help="the run's config snapshot (results/config.yaml)"
    )
    p.add_argument("--output", required=True, help="JSON record of the checked shapes and tiles")
    add_common(p)
    p.set_defaults(handler=check_predict_tiles)


def check_predict_tiles(args: argparse.Namespace) -> None:
    import logging

    from fewlabel.errors import ConfigError, FewlabelError, InputDataError
    from fewlabel.inference.geometry import check_fits_tile
    from fewlabel.io import open_ome_zarr
    from fewlabel.plan import IMAGE, Plan
    from fewlabel.runtime import write_json

    if not args.sample_sheet:
        raise ConfigError("check_predict_tiles needs --sample-sheet.", fix="pass the run's sheet.")
    plan = Plan.from_files(args.sample_sheet, args.config)
    record: dict[str, dict] = {}
    problems: list[FewlabelError] = []
    for sample in plan.tile_check_samples():
        path = IMAGE.format(sample=sample)
        shape = [int(n) for n in open_ome_zarr(path, sample=sample).array.shape[-3:]]
        tiles = plan.predict_tiles(sample)
        record[sample] = {"shape": shape, "tiles": tiles}
        for tile in tiles:
            try:
                check_fits_tile(
                    shape,
                    tile["tile"],
                    pad_to_tile=tile["pad_to_tile"],
                    sample=sample,
                    path=path,
                    key=tile["key"],
                )
            except FewlabelError as error:
                problems.append(error)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputDataError(
            f"{len(problems)} volumes to predict are smaller than a prediction tile (checked "
            "before training): " + " | ".join(str(p) for p in problems)
        )
    logging.getLogger(__name__).info(
        "%d volume(s) to predict hold their prediction tiles", len(record)
    )
    write_json(record, args.output)
