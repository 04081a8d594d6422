"""The report's block "Learned detector vs the LoG baseline" (``detection.log.compare``):
:func:`fewlabel.detection.log.compare.compare` as a table and a verdict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from fewlabel.detection.log.compare import compare
from fewlabel.report.data import table_context

log = logging.getLogger(__name__)


def baseline_context(
    learned_dir: str | Path,
    baseline_dir: str | Path,
    learned_summary: str | Path | None = None,
    baseline_summary: str | Path | None = None,
) -> dict[str, Any] | None:
    """Template context: the table of both methods' scores, the verdict and ``warn`` (the
    LoG scores higher); None when either folder lacks its tuned scores."""
    result = compare(learned_dir, baseline_dir, learned_summary, baseline_summary)
    if result is None:
        return None
    if result.warn:
        log.warning("%s", result.verdict)
    return {
        "table": table_context(pd.DataFrame(result.rows), key=None),
        "verdict": result.verdict,
        "warn": result.warn,
        "folder": str(baseline_dir),
    }
