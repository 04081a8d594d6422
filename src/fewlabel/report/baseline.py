"""Learned detector vs the LoG baseline on the same annotations (``detection.log.compare``).

Both thresholds are tuned on the same split and counted the same way (click recall with
known-region precision when the points are partial clicks); the learned detector's validation
F1 is optimistic, as its validation volumes also chose its best epoch. When the run has
annotated test volumes both are also scored there, held out from both, and the verdict is read
from the test. The report says which is higher and, when the classical filter wins, what to
do: a learned method that loses to a classical filter on the user's own data must not pass
unseen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fewlabel.report.data import _read_json, _read_tsv, table_context

THRESHOLDS_JSON = "thresholds.json"
COLUMNS = ("val_precision", "val_recall", "val_f1")
LEARNED, LOG = "learned (detection.method)", "LoG baseline"


def _scores(folder: str | Path, what: str) -> Mapping[str, Any] | None:
    path = Path(folder) / THRESHOLDS_JSON
    if not path.exists():
        return None
    data = _read_json(path, f"{what} thresholds")
    if not isinstance(data, Mapping) or any(k not in data for k in COLUMNS):
        return None
    return data


def _pooled(summary: str | Path | None, what: str) -> Mapping[str, Any] | None:
    """The pooled ``ALL`` row of a detection summary (None without one)."""
    if not summary:
        return None
    table = _read_tsv(summary, what)
    rows = table.loc[table["sample"].astype(str) == "ALL"]
    return None if rows.empty else rows.iloc[0].to_dict()


def baseline_context(
    learned_dir: str | Path,
    baseline_dir: str | Path,
    learned_summary: str | Path | None = None,
    baseline_summary: str | Path | None = None,
) -> dict[str, Any] | None:
    """A table of both methods' tuned (validation) and, given both summaries, test scores,
    and a verdict (``warn`` when the LoG's F1 is higher: on the test when there is one);
    None when either folder lacks its tuned scores."""
    learned = _scores(learned_dir, "detector")
    baseline = _scores(baseline_dir, "LoG baseline")
    if learned is None or baseline is None:
        return None
    rows = [
        {
            "method": name,
            "volumes": f"{data.get('tuned_on', '?')} (threshold tuned here)",
            "threshold": data.get("detection_threshold"),
            "precision": data["val_precision"],
            "recall": data["val_recall"],
            "F1": data["val_f1"],
            "counted with": data.get("tuned_with", "?"),
        }
        for name, data in ((LEARNED, learned), (LOG, baseline))
    ]
    test = {
        name: _pooled(path, f"{name} test metrics")
        for name, path in ((LEARNED, learned_summary), (LOG, baseline_summary))
    }
    held_out = all(v is not None for v in test.values())
    if held_out:
        rows += [
            {
                "method": name,
                "volumes": "test (held out)",
                "threshold": data.get("detection_threshold"),
                "precision": test[name]["precision"],
                "recall": test[name]["recall"],
                "F1": test[name]["f1"],
                "counted with": f"precision in the {test[name].get('scored_in', 'volume')}",
            }
            for name, data in ((LEARNED, learned), (LOG, baseline))
        ]
    where = "the held-out test volumes" if held_out else "the validation annotations"
    f1 = float(test[LEARNED]["f1"]) if held_out else float(learned["val_f1"])  # type: ignore[index]
    f1_log = float(test[LOG]["f1"]) if held_out else float(baseline["val_f1"])  # type: ignore[index]
    warn = f1_log > f1
    if warn:
        verdict = (
            f"The LoG baseline scores higher than the learned detector on {where} "
            f"(F1 {f1_log:.3f} vs {f1:.3f}). Check the detections below before trusting them; "
            "on this data the classical filter may be the better choice (detection.method: "
            "log). More clicks, an annotated_region with every spot marked, or a validation "
            "volume like the data to predict let the learned detector catch up."
        )
    else:
        verdict = (
            f"The learned detector scores at or above the LoG baseline on {where} "
            f"(F1 {f1:.3f} vs {f1_log:.3f})."
        )
    if not held_out:
        verdict += (
            " Its validation F1 is optimistic (the same volumes chose its best epoch); test "
            "rows with points (and an annotated_region where the clicks are partial) give a "
            "held-out comparison."
        )
    same = all(learned.get(k) == baseline.get(k) for k in ("tuned_with", "tuned_on"))
    if not same:
        verdict += (
            " The two thresholds were not tuned on the same annotations or not counted the "
            "same way (see the table), so the comparison is only indicative."
        )
    return {
        "table": table_context(pd.DataFrame(rows), key=None),
        "verdict": verdict,
        "warn": warn,
        "folder": str(baseline_dir),
    }
