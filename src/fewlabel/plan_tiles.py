"""Checking the volumes to predict against their prediction tiles before any training (the
``check_predict_tiles`` rule; :meth:`fewlabel.plan.Plan.check_predict_tiles`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewlabel.errors import FewlabelError, InputDataError
from fewlabel.inference.geometry import check_fits_tile
from fewlabel.inference.resample import grid_shape, grid_tile_error, target_grid
from fewlabel.io.readers import open_input_volume

if TYPE_CHECKING:
    from fewlabel.plan import Plan


def check_predict_tiles(plan: Plan) -> dict[str, dict[str, Any]]:
    """Check every volume to predict against its prediction tiles, before any training.

    Reads the shape of each input image (header only, the channel of the sheet; the shape
    ingest will write) and raises InputDataError naming the sample, file, shape, tile and
    fix (``<section>.pad_to_tile: true`` or a smaller tile); every too-small volume is
    listed. With ``detection.predict.model_grid`` the detection tile is checked against the
    shape on the training grid (:mod:`fewlabel.inference.resample`). Returns ``{sample:
    {"shape", "tiles"[, "shape_on_training_grid"]}}``.
    """
    record: dict[str, dict[str, Any]] = {}
    problems: list[FewlabelError] = []
    grid = _training_grid(plan)
    for sample in plan.tile_check_samples():
        path = plan.sheet.loc[sample, "image"]
        shape, voxel = _header(plan, sample)
        tiles = plan.predict_tiles(sample)
        record[sample] = {"shape": shape, "tiles": tiles}
        for tile in tiles:
            on = target_grid(voxel, grid) if tile["key"] == "detection.predict" else None
            checked = shape if on is None else list(grid_shape(shape, voxel, on))
            if on is not None:
                record[sample]["shape_on_training_grid"] = checked
            try:
                check_fits_tile(
                    checked,
                    tile["tile"],
                    pad_to_tile=tile["pad_to_tile"],
                    sample=sample,
                    path=path,
                    key=tile["key"],
                )
            except FewlabelError as error:
                problems.append(error if on is None else grid_tile_error(error, shape, voxel, on))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputDataError(
            f"{len(problems)} volumes to predict are smaller than a prediction tile: "
            + " | ".join(str(p) for p in problems)
        )
    return record


def _header(plan: Plan, sample: str) -> tuple[list[int], tuple[float, float, float] | None]:
    """ZYX shape and voxel size (sheet first, as load_samples parsed it, else the file's; None
    if neither: ingest names that error) of a sample's input image, from its header."""
    row = plan.sheet.loc[sample]
    volume = open_input_volume(row["image"], channel=row.get("channel") or None, sample=sample)
    try:
        shape = [int(n) for n in volume.shape]
        voxel = row.get("voxel_size") or volume.voxel_size
    finally:
        volume.close()
    return shape, None if voxel is None else tuple(float(v) for v in voxel)  # type: ignore[return-value]


def _training_grid(plan: Plan) -> tuple[float, float, float] | None:
    """The grid DM-DetNet3D will predict on (``detection.predict.model_grid``): the median
    voxel size of the train rows it is trained on here, or the one a reused model folder
    records; None when nothing is resampled (another method, the switch off, no grid known)."""
    import json
    from pathlib import Path

    from fewlabel.inference.resample import training_grid

    detection = plan.config["detection"]
    if detection["method"] != "density" or not detection["predict"].get("model_grid", False):
        return None
    if detection.get("model"):
        training = Path(detection["model"]) / "training.json"
        if not training.is_file():
            return None
        grid = json.loads(training.read_text()).get("voxel_size_um")
        return None if grid is None else tuple(float(v) for v in grid)  # type: ignore[return-value]
    sizes = [_header(plan, s)[1] for s in plan.detection_fit_samples("train")]
    known = [v for v in sizes if v is not None]
    return training_grid(known) if known and len(known) == len(sizes) else None
