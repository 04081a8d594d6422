"""Checking the volumes to predict against their prediction tiles before any training (the
``check_predict_tiles`` rule; :meth:`fewlabel.plan.Plan.check_predict_tiles`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewlabel.errors import FewlabelError, InputDataError
from fewlabel.inference.geometry import check_fits_tile
from fewlabel.io.readers import open_input_volume

if TYPE_CHECKING:
    from fewlabel.plan import Plan


def check_predict_tiles(plan: Plan) -> dict[str, dict[str, Any]]:
    """Check every volume to predict against its prediction tiles, before any training.

    Reads the shape of each input image (header only, the channel of the sheet; the shape
    ingest will write) and raises InputDataError naming the sample, file, shape, tile and
    fix (``<section>.pad_to_tile: true`` or a smaller tile); every too-small volume is
    listed. Returns ``{sample: {"shape", "tiles"}}``.
    """
    record: dict[str, dict[str, Any]] = {}
    problems: list[FewlabelError] = []
    for sample in plan.tile_check_samples():
        row = plan.sheet.loc[sample]
        path = row["image"]
        volume = open_input_volume(path, channel=row.get("channel") or None, sample=sample)
        try:
            shape = [int(n) for n in volume.shape]
        finally:
            volume.close()
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
            f"{len(problems)} volumes to predict are smaller than a prediction tile: "
            + " | ".join(str(p) for p in problems)
        )
    return record
