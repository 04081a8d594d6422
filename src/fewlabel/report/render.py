"""Render the report: the jinja2 template filled with the section contexts, written atomically.

Every figure is a PNG embedded as a ``data:`` URI and the CSS is inline, so the file opens
offline and can be mailed around.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from fewlabel.errors import InputDataError
from fewlabel.report.data import ReportInputs, _read_json, check_inputs_exist
from fewlabel.report.projections import MAX_PX
from fewlabel.report.provenance import _config_yaml, _provenance_section
from fewlabel.report.sections import (
    _detection_section,
    _roi_section,
    _samples_section,
    _segmentation_section,
)

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent.parent / "templates"  #: holds report.html.j2


def render_report(inputs: ReportInputs, *, max_px: int = MAX_PX) -> str:
    """The report HTML as a string (see :func:`build_report`)."""
    import jinja2

    inputs.validate_structure()
    check_inputs_exist(inputs)
    provenance = None
    if inputs.provenance_json:
        provenance = _read_json(inputs.provenance_json, "provenance record")
        if not isinstance(provenance, Mapping):
            raise InputDataError(
                "provenance record is not a JSON object.", path=inputs.provenance_json
            )
    config = inputs.config if inputs.config else (provenance or {}).get("config")
    context = {
        "title": inputs.title or "fewlabel run report",
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "created": (provenance or {}).get("created"),
        "samples": _samples_section(inputs),
        "config_yaml": _config_yaml(config),
        "detection": _detection_section(inputs, max_px),
        "segmentation": _segmentation_section(inputs, max_px),
        "roi": _roi_section(inputs, max_px),
        "provenance": _provenance_section(provenance),
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**context)


def build_report(output: str | Path, *, inputs: ReportInputs, max_px: int = MAX_PX) -> None:
    """Write the self-contained HTML run report to ``output`` (atomically).

    Sections (each only when its inputs are given): header with the samples table and the
    configuration; detection (metric table with the pooled ``ALL`` row highlighted, training
    curve, tuned threshold and F1-vs-threshold sweep, per-sample z-/y-MIPs with GT, predictions,
    FP and FN); segmentation / ISL (metric tables, curves, ISL slices with PCC, instance
    outlines on the middle slice and the MIP); ROI (roi.json figures, outline on the MIP);
    provenance (versions, git commit, input checksums) and the metric definitions. Images are
    max-pooled to at most ``max_px`` pixels per side.

    Raises :class:`~fewlabel.errors.InputDataError` naming any listed input that is missing.
    """
    from fewlabel.io import atomic_path

    html = render_report(inputs, max_px=max_px)
    with atomic_path(output) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    log.info("wrote report %s (%.1f MB)", output, Path(output).stat().st_size / 1e6)
