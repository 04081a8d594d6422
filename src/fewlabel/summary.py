"""The run summary: one table row per sample from its ingest summary and ROI summary.

Read by stage ``summarize_run`` (which also writes the provenance record) and shown in the
report's samples section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

#: columns of the run summary TSV, in order
SUMMARY_COLUMNS = (
    "sample",
    "split",
    "shape_zyx",
    "voxel_size_um",
    "dtype",
    "min",
    "max",
    "roi_fraction",
    "min_batch_size",
    "roi_warnings",
)


def sample_row(
    image: Mapping[str, Any], roi: Mapping[str, Any] | None = None, *, split: str = ""
) -> dict[str, Any]:
    """One summary row from a sample's ingest summary (``ingest_volume --summary``) and, when
    ROI estimation ran, its ROI summary (``segment_roi --json-out``); NaN/"" without one."""
    roi = roi or {}
    return {
        "sample": image["sample"],
        "split": split,
        "shape_zyx": "x".join(str(s) for s in image["shape"]),
        "voxel_size_um": ",".join(f"{v:g}" for v in image["voxel_size"]),
        "dtype": image["dtype"],
        "min": image["min"],
        "max": image["max"],
        "roi_fraction": roi.get("roi_fraction", float("nan")),
        "min_batch_size": roi.get("min_batch_size", float("nan")),
        "roi_warnings": "; ".join(roi.get("warnings", [])),
    }


def summary_table(
    images: Sequence[Mapping[str, Any]],
    rois: Mapping[str, Mapping[str, Any]] | None = None,
    splits: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The run summary: one row per ingest summary in ``images`` (in their order), joined with
    the ROI summaries and the sheet's splits keyed by sample name."""
    rois, splits = rois or {}, splits or {}
    rows = [
        sample_row(image, rois.get(image["sample"]), split=splits.get(image["sample"], ""))
        for image in images
    ]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def sheet_input_files(sheet: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """Every non-empty path of the sheet's ``columns``, row by row (the run's input files)."""
    present = [c for c in columns if c in sheet.columns]
    return [str(p) for p in sheet[present].to_numpy().ravel() if p]
