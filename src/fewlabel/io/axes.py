"""Axis orders of input arrays: the sheet's declared axes, the file's own, and their checks.

Helpers of :mod:`fewlabel.io.readers`: :func:`declared_axes` validates the sample sheet's
``axes`` column, :func:`apply_declared_axes` fits it to the data's dimensions,
:func:`generic_tiff_axes` guesses a plain TIFF's axes, and :func:`check_axes` rejects what
cannot become one ZYX channel (time series, channel and RGB axes together), each failing with
an :class:`~fewlabel.errors.InputDataError` naming the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fewlabel.errors import InputDataError

DECLARABLE_AXES = "TCZYX"
"""Letters allowed in a declared axis order (the sample sheet's ``axes`` column)."""


def check_axes(axes: str, shape: Sequence[int], *, sample: str | None, path: Path) -> str:
    axes = axes.upper()
    unknown = [a for a in axes if a not in "TCZYXS"]
    if "Y" not in axes or "X" not in axes or unknown:
        if len(shape) == 2:
            return "YX"
        if len(shape) == 3:
            return "ZYX"
        raise InputDataError(
            f"{len(shape)}D array of shape {tuple(shape)} with no axis information (axes "
            f"'{axes}').",
            sample=sample,
            path=path,
            fix="state the axis order in the sample sheet's 'axes' column (e.g. "
            f"{example_axes(len(shape))}), or save it as OME-TIFF / ImageJ hyperstack / "
            "OME-Zarr with axes, or as a plain 3D ZYX stack per channel.",
        )
    for axis, size in zip(axes, shape, strict=True):
        if axis == "T" and size != 1:
            raise InputDataError(
                f"time series with {size} time points is not supported.",
                sample=sample,
                path=path,
                fix="export one time point per sample.",
            )
    if "C" in axes and "S" in axes:
        raise InputDataError(
            "image has both a channel and an RGB sample axis.",
            sample=sample,
            path=path,
            fix="export a single-channel image.",
        )
    return axes


def declared_axes(axes: str | None, *, sample: str | None, path: Path) -> str | None:
    """The caller's axis order, upper-cased and checked (letters TCZYX, each once, Y and X
    included); None when not given."""
    if axes is None or str(axes).strip() == "":
        return None
    value = str(axes).strip().upper()
    bad = sorted({a for a in value if a not in DECLARABLE_AXES})
    repeated = sorted({a for a in value if value.count(a) > 1})
    if bad or repeated or "Y" not in value or "X" not in value:
        raise InputDataError(
            f"axes {axes!r} is not an axis order"
            + (f" (letters {bad} are not axes)" if bad else "")
            + (f" (axis {', '.join(repeated)} repeated)" if repeated else "")
            + ".",
            sample=sample,
            path=path,
            fix="set the sheet's 'axes' column to the file's axis order, slowest first, with "
            "letters T, C, Z, Y, X (each once; Y and X required), e.g. ZCYX.",
        )
    return value


def apply_declared_axes(
    declared: str,
    shape: Sequence[int],
    file_axes: str,
    *,
    sample: str | None,
    path: Path,
) -> str:
    """``declared`` when its length matches the data's dimensions, else a clear error. A
    declared T the data lacks (a reader squeezes a T of size 1 away) is dropped."""
    if len(declared) == len(shape) + 1 and "T" in declared:
        declared = declared.replace("T", "")
    if len(declared) != len(shape):
        known = "" if set(file_axes) <= {"Q"} else f"; the file's own axes are '{file_axes}'"
        flat = (
            " If the file stores channels/planes as one flat stack of pages, axes cannot "
            "split it: save it as an ImageJ hyperstack or OME-TIFF, or one file per channel."
            if len(declared) > len(shape)
            else ""
        )
        raise InputDataError(
            f"the sheet's axes '{declared}' name {len(declared)} axes but the image has "
            f"{len(shape)} dimensions (shape {tuple(shape)}{known}).",
            sample=sample,
            path=path,
            fix=f"give one letter per dimension ({len(shape)} letters, e.g. "
            f"{example_axes(len(shape))}) in the sheet's 'axes' column, or leave it empty to "
            f"use the file's metadata.{flat}",
        )
    return declared


def example_axes(ndim: int) -> str:
    return {2: "YX", 3: "ZYX", 4: "ZCYX or CZYX", 5: "TZCYX"}.get(ndim, "ZCYX")


def generic_tiff_axes(axes: str, shape: Sequence[int]) -> str:
    """Plain TIFFs: 2D → YX, 3D → ZYX unless RGB(A) samples last; 4D+ stays unknown."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if axes.endswith("S") and shape[-1] in (3, 4) else "ZYX"
    return "Q" * len(shape)
