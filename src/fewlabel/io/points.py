"""Points tables: read and validate ``z,y,x`` voxel-coordinate CSVs, write them atomically."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fewlabel.errors import InputDataError
from fewlabel.io.atomic import atomic_path

log = logging.getLogger(__name__)

POINT_COLUMNS = ("z", "y", "x")


def read_points_csv(
    path: str | Path,
    *,
    shape: Sequence[int] | None = None,
    sample: str | None = None,
    allow_empty: bool = False,
    drop_duplicates: bool = True,
) -> pd.DataFrame:
    """Read and validate a points CSV (``z,y,x[,...]`` voxels, 0-based; 2D files may omit z).

    Checks: file exists and parses, has the columns, values are finite, and (given ``shape``)
    every point lies inside the volume (within half a voxel of its border).

    Duplicates: rows with exactly the same ``z,y,x`` (after parsing as numbers; other columns
    are not compared) are one annotated object clicked twice, so by default only the first is
    kept and a warning names the sample, the file and how many were dropped; otherwise they
    would double the ground-truth count. Near-duplicates (any coordinate different) are kept.
    ``drop_duplicates=False`` keeps every row (predictions: a detector's repeated point must
    count as a false positive).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(
            "points file does not exist.",
            sample=sample,
            path=path,
            fix="check the 'points' column of the sample sheet.",
        )
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except Exception as exc:
        raise InputDataError(f"cannot parse points CSV ({exc}).", sample=sample, path=path) from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if table.empty and len(table.columns) == 0 and not allow_empty:
        raise InputDataError(
            "points file is empty.",
            sample=sample,
            path=path,
            fix="annotate at least one point (header z,y,x) or remove the 'points' entry.",
        )
    if "z" not in table.columns and {"y", "x"} <= set(table.columns):
        table.insert(0, "z", 0.0)
    missing = [c for c in POINT_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(
            f"points CSV lacks column(s) {missing}; it has {list(table.columns)}.",
            sample=sample,
            path=path,
            fix="use a header 'z,y,x' with voxel coordinates, 0-based.",
        )
    if len(table) == 0 and not allow_empty:
        raise InputDataError(
            "points file holds no points.",
            sample=sample,
            path=path,
            fix="annotate at least one point or remove the 'points' entry.",
        )
    coords = table[list(POINT_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputDataError(
            f"{int(bad.sum())} point(s) with missing or non-numeric "
            f"coordinates (first at data row {row + 1}).",
            sample=sample,
            path=path,
            fix="every row needs numeric z,y,x.",
        )
    if shape is not None:
        upper = np.asarray(shape, float) - 0.5
        outside = ((coords < -0.5) | (coords > upper)).any(axis=1)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise InputDataError(
                f"{int(outside.sum())} point(s) outside the volume of shape {tuple(shape)} "
                f"(first at data row {row + 1}: z,y,x={coords[row].tolist()}).",
                sample=sample,
                path=path,
                fix="coordinates are 0-based voxels in z,y,x order; check the axis "
                "order and units (not µm).",
            )
    table[list(POINT_COLUMNS)] = coords
    if drop_duplicates:
        repeated = table.duplicated(subset=list(POINT_COLUMNS), keep="first").to_numpy()
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            log.warning(
                "sample %s, file '%s': dropped %d exact duplicate point(s) (same z,y,x; "
                "first at data row %d: z,y,x=%s); %d point(s) kept.",
                sample,
                path,
                int(repeated.sum()),
                row + 1,
                coords[row].tolist(),
                int((~repeated).sum()),
            )
            table = table.loc[~repeated].reset_index(drop=True)
    return table


def write_points_csv(table: pd.DataFrame, path: str | Path) -> None:
    """Write a points table atomically (``z,y,x`` first)."""
    cols = list(POINT_COLUMNS) + [c for c in table.columns if c not in POINT_COLUMNS]
    with atomic_path(path) as tmp:
        table[cols].to_csv(tmp, index=False, float_format="%.4f")
