"""The run report: one self-contained HTML file (tables, plots, overlays, provenance)."""

from fewlabel.report.data import (
    ReportInputs,
    build_report,
    check_inputs_exist,
    max_projection,
    pooling_factors,
    read_matches,
    render_report,
)

__all__ = ["ReportInputs", "build_report", "check_inputs_exist", "max_projection",
           "pooling_factors", "read_matches", "render_report"]
