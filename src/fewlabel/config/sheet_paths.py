"""Sample-sheet path checks shared by :func:`fewlabel.config.sheet.load_samples`: input files
that must exist (unless a workflow rule writes them) and the ``annotated_region`` column."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewlabel.errors import ConfigError


def existing_input(
    value: str, *, where: str, sample: str, path: Any, base_dir: Any, generated: Any
) -> Path | None:
    """``value`` resolved against ``base_dir``; None for a file a workflow rule writes (under
    one of ``generated``); a ConfigError naming ``where`` when it does not exist."""
    resolved = Path(base_dir, value).resolve()
    if any(resolved.is_relative_to(g) for g in generated):
        return None
    if not resolved.exists():
        raise ConfigError(
            f"{where}: file '{value}' does not exist.",
            sample=sample,
            path=path,
            fix="correct the path (relative to the workflow directory).",
        )
    return resolved


def check_annotated_region(
    record: dict[str, Any],
    *,
    row: int,
    path: Path,
    base_dir: str | Path = ".",
    generated: Iterable[Path] = (),
) -> None:
    """The ``annotated_region`` cell: only on detection train/val/test rows with points, and
    either ``full``, ``none`` (not on test rows), an existing box CSV (header
    z0,y0,x0,z1,y1,x1) or a mask image. On a test row it says where the ground truth is
    complete: precision is counted there, recall on every point."""
    value = record.get("annotated_region", "")
    if not value:
        return
    sample = record["sample"]
    where = f"sample sheet row {row} column 'annotated_region'"
    if record["split"] not in ("train", "val", "test") or (record["task"] or "detect") == "segment":
        raise ConfigError(
            f"{where}: {value!r} on a {record['split']!r}/{record['task'] or 'detect'!r} row; "
            "it states what the points of a detection train/val/test volume cover.",
            sample=sample,
            path=path,
            fix="leave it empty on predict and segmentation rows.",
        )
    if record["split"] == "test" and value == "none":
        raise ConfigError(
            f"{where}: 'none' on a test row: with clicks only, no detection can be called "
            "false, so precision cannot be measured.",
            sample=sample,
            path=path,
            fix="give the test volume a box CSV or mask where every spot is clicked, or "
            "leave it empty if its points are complete.",
        )
    if not record["points"]:
        raise ConfigError(
            f"{where}: {value!r} but the row has no points CSV to cover.",
            sample=sample,
            path=path,
            fix="add the clicked points in 'points', or remove the region.",
        )
    if value in ("full", "none"):
        return
    suffix = Path(value).suffix.lower()
    if suffix not in (".csv", ".tif", ".tiff", ".npy"):
        raise ConfigError(
            f"{where}: {value!r} is neither 'full', 'none', a .csv of boxes nor a mask image "
            "(.tif/.tiff/.npy).",
            sample=sample,
            path=path,
            fix="write 'full' for a completely clicked volume, 'none' for clicks only, or the "
            "path of a box CSV (z0,y0,x0,z1,y1,x1 in voxels) / mask image.",
        )
    resolved = existing_input(
        value, where=where, sample=sample, path=path, base_dir=base_dir, generated=generated
    )
    if resolved is not None and suffix == ".csv":
        header = resolved.read_text().splitlines()[:1]
        columns = [c.strip() for c in header[0].split(",")] if header else []
        missing = [c for c in ("z0", "y0", "x0", "z1", "y1", "x1") if c not in columns]
        if missing:
            raise ConfigError(
                f"{where}: box CSV '{value}' lacks column(s) {missing} (header {columns}).",
                sample=sample,
                path=path,
                fix="header z0,y0,x0,z1,y1,x1 (voxels, ends exclusive), one box per line.",
            )
