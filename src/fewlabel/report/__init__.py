"""The run report: one self-contained HTML file (tables, plots, overlays, provenance).

``data`` describes and reads the inputs (:class:`ReportInputs`), ``projections`` reduces large
volumes to bounded 2D images, ``figures`` draws the embedded PNGs, ``sections`` builds each
section's template context (``provenance`` those of the run record and the config) and
``render`` fills the template and writes the file.
"""

from fewlabel.report.data import (
    ReportInputs,
    check_inputs_exist,
    f1_curve_table,
    read_matches,
    table_context,
)
from fewlabel.report.figures import (
    PointLayers,
    curve_figure,
    detection_figures,
    f1_figure,
    figure_uri,
    outline_figure,
)
from fewlabel.report.projections import MAX_PX, max_projection, pooling_factors, strided_slice
from fewlabel.report.render import build_report, render_report

__all__ = [
    "MAX_PX",
    "PointLayers",
    "ReportInputs",
    "build_report",
    "check_inputs_exist",
    "curve_figure",
    "detection_figures",
    "f1_curve_table",
    "f1_figure",
    "figure_uri",
    "max_projection",
    "outline_figure",
    "pooling_factors",
    "read_matches",
    "render_report",
    "strided_slice",
    "table_context",
]
