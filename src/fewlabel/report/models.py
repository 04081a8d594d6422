"""A model folder's report context: its training curve(s), tuned thresholds (tables and the
F1 sweep), training summary and what it predicts with (ensemble, mirroring)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fewlabel.detection.log.compare import THRESHOLDS_JSON
from fewlabel.report.data import (
    _read_json,
    _read_tsv,
    _scalars,
    f1_curve_table,
    table_context,
    threshold_tables,
)
from fewlabel.report.figures import curve_figure, f1_figure

log = logging.getLogger(__name__)

CURVE_TSV = "curve.tsv"
MODEL_JSON = "model.json"
TRAINING_JSON = "training.json"


def _model_context(folder: str | Path | None, label: str) -> dict[str, Any] | None:
    if not folder:
        return None
    folder = Path(folder)
    context: dict[str, Any] = {
        "label": label,
        "folder": str(folder),
        "curve": None,
        "thresholds": None,
        "threshold_curves": [],
        "f1_figure": None,
        "training": None,
        "inference": _inference_line(folder),
        "member_curves": _member_curves(folder, label),
    }
    curve_path = folder / CURVE_TSV
    if curve_path.exists():
        curve = _read_tsv(curve_path, "training curve")
        if not curve.empty:
            context["curve"] = curve_figure(curve, f"{label}: training curve")
    else:
        log.info("%s: no %s in %s", label, CURVE_TSV, folder)
    if (folder / THRESHOLDS_JSON).exists():
        thresholds = _read_json(folder / THRESHOLDS_JSON, "thresholds")
        if isinstance(thresholds, Mapping) and thresholds:
            scalars, curves = threshold_tables(thresholds)
            context["thresholds"] = table_context(scalars, key=None) if len(scalars) else None
            context["threshold_curves"] = [
                {
                    "name": c["name"],
                    "table": table_context(c["frame"], key="chosen", highlight=("✓",))
                    if "chosen" in c["frame"].columns
                    else table_context(c["frame"], key=None),
                }
                for c in curves
            ]
            sweep = f1_curve_table(thresholds)
            if sweep is not None:
                chosen = thresholds.get("detection_threshold")
                context["f1_figure"] = f1_figure(sweep, None if chosen is None else float(chosen))
    if (folder / TRAINING_JSON).exists():
        training = _read_json(folder / TRAINING_JSON, "training summary")
        if isinstance(training, Mapping) and training:
            context["training"] = table_context(_scalars(training), key=None)
    return context


def _inference_line(folder: Path) -> str | None:
    """What model.json's ``inference`` record says the folder predicts with (an ensemble of
    networks and/or test-time mirroring, :mod:`fewlabel.models.compose`); None without one."""
    if not (folder / MODEL_JSON).exists():
        return None
    described = _read_json(folder / MODEL_JSON, "model description")
    record = described.get("inference") if isinstance(described, Mapping) else None
    if not isinstance(record, Mapping):
        return None
    members = int(record.get("members", 1))
    axes = "".join(str(a) for a in record.get("mirror_axes", []))  # names: ["y", "x"]
    parts = []
    if members > 1:
        parts.append(f"the mean of {members} networks (training seeds seed … seed + {members - 1})")
    if axes:
        parts.append(f"test-time mirroring over {axes}")
    return "; ".join(parts) or None


def _member_curves(folder: Path, label: str) -> list[dict[str, Any]]:
    """Training curves of ensemble members 1 … N-1 (``curve_member<i>.tsv``; member 0 is
    ``curve.tsv``), in member order."""
    found = []
    for path in folder.glob("curve_member*.tsv"):
        index = path.stem.removeprefix("curve_member")
        if index.isdigit():
            found.append((int(index), path))
    out = []
    for index, path in sorted(found):
        curve = _read_tsv(path, f"training curve of member {index}")
        if not curve.empty:
            out.append({"member": index, "figure": curve_figure(curve, f"{label}: member {index}")})
    return out
