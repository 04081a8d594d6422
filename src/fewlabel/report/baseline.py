"""Learned detector vs the LoG baseline on the same annotations (``detection.log.compare``).

Both thresholds are tuned on the same split and counted the same way (click recall with
known-region precision when the points are partial clicks), so their tuned F1s compare
directly. The report says which is higher and, when the classical filter wins, what to do: a
learned method that loses to a classical filter on the user's own data must not pass unseen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fewlabel.report.data import _read_json, table_context

THRESHOLDS_JSON = "thresholds.json"
COLUMNS = ("val_precision", "val_recall", "val_f1")


def _scores(folder: str | Path, what: str) -> Mapping[str, Any] | None:
    path = Path(folder) / THRESHOLDS_JSON
    if not path.exists():
        return None
    data = _read_json(path, f"{what} thresholds")
    if not isinstance(data, Mapping) or any(k not in data for k in COLUMNS):
        return None
    return data


def baseline_context(learned_dir: str | Path, baseline_dir: str | Path) -> dict[str, Any] | None:
    """A table of both tuned scores and a verdict (``warn`` when the LoG's F1 is higher);
    None when either folder lacks its tuned scores."""
    learned = _scores(learned_dir, "detector")
    baseline = _scores(baseline_dir, "LoG baseline")
    if learned is None or baseline is None:
        return None
    rows = [
        {
            "method": name,
            "threshold": data.get("detection_threshold"),
            "precision": data["val_precision"],
            "recall": data["val_recall"],
            "F1": data["val_f1"],
            "tuned on": data.get("tuned_on", "?"),
            "counted with": data.get("tuned_with", "?"),
            "gate": f"{data.get('gate', '?')} {data.get('gate_unit', '')}".strip(),
        }
        for name, data in (("learned (detection.method)", learned), ("LoG baseline", baseline))
    ]
    f1_learned, f1_log = float(learned["val_f1"]), float(baseline["val_f1"])
    same = learned.get("tuned_with") == baseline.get("tuned_with") and learned.get(
        "tuned_on"
    ) == baseline.get("tuned_on")
    warn = f1_log > f1_learned
    if warn:
        verdict = (
            f"The LoG baseline scores higher than the learned detector on these annotations "
            f"(F1 {f1_log:.3f} vs {f1_learned:.3f}). Check the detections below before trusting "
            "them; on this data the classical filter may be the better choice "
            "(detection.method: log). More clicks, an annotated_region with every spot marked, "
            "or a validation volume like the data to predict let the learned detector catch up."
        )
    else:
        verdict = (
            f"The learned detector scores at or above the LoG baseline on these annotations "
            f"(F1 {f1_learned:.3f} vs {f1_log:.3f})."
        )
    if not same:
        verdict += (
            " The two were not tuned on the same annotations or not counted the same way "
            "(see the table), so the comparison is only indicative."
        )
    return {
        "table": table_context(pd.DataFrame(rows), key=None),
        "verdict": verdict,
        "warn": warn,
        "folder": str(baseline_dir),
    }
