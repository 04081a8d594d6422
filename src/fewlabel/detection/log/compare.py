"""Learned detector vs the LoG baseline on the same annotations (``detection.log.compare``).

Both thresholds are tuned on the same split and counted the same way (click recall with
known-region precision when the points are partial clicks); the learned detector's validation
F1 is optimistic, as its validation volumes also chose its best epoch. When the run has
annotated test volumes both are also scored there, held out from both, and the verdict is read
from the test. A learned method that loses to a classical filter on the user's own data must
not pass unseen: the report shows the comparison and the end of the run repeats a warning.
Light (json, pandas): the workflow's ``onsuccess`` reads it on the submit host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

THRESHOLDS_JSON = "thresholds.json"
COLUMNS = ("val_precision", "val_recall", "val_f1")
LEARNED, LOG = "learned (detection.method)", "LoG baseline"


@dataclass
class Comparison:
    """Both methods' tuned (and held-out test) scores, and which is higher."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""
    warn: bool = False  # the LoG scores higher (on the test when there is one)


def tuned_scores(folder: str | Path) -> Mapping[str, Any] | None:
    """A model folder's thresholds.json when it holds its tuned F1 (None otherwise)."""
    path = Path(folder) / THRESHOLDS_JSON
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, Mapping) or any(k not in data for k in COLUMNS):
        return None
    return data


def pooled(summary: str | Path | None) -> Mapping[str, Any] | None:
    """The pooled ``ALL`` row of a detection summary TSV (None without one)."""
    if not summary or not Path(summary).exists():
        return None
    table = pd.read_csv(summary, sep="\t")
    rows = table.loc[table["sample"].astype(str) == "ALL"]
    return None if rows.empty else rows.iloc[0].to_dict()


def compare(
    learned_dir: str | Path,
    baseline_dir: str | Path,
    learned_summary: str | Path | None = None,
    baseline_summary: str | Path | None = None,
) -> Comparison | None:
    """The comparison of a learned detector folder with the LoG folder tuned beside it (and,
    given both test summaries, on the test); None when either folder lacks its tuned scores."""
    learned, baseline = tuned_scores(learned_dir), tuned_scores(baseline_dir)
    if learned is None or baseline is None:
        return None
    tuned = {LEARNED: learned, LOG: baseline}
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
        for name, data in tuned.items()
    ]
    test = {LEARNED: pooled(learned_summary), LOG: pooled(baseline_summary)}
    held_out = all(v is not None for v in test.values())
    if held_out:
        rows += [
            {
                "method": name,
                "volumes": "test (held out)",
                "threshold": tuned[name].get("detection_threshold"),
                "precision": row["precision"],
                "recall": row["recall"],
                "F1": row["f1"],
                "counted with": f"precision in the {row.get('scored_in', 'volume')}",
            }
            for name, row in test.items()
            if row is not None
        ]
    scores = {n: float(test[n]["f1"] if held_out else tuned[n]["val_f1"]) for n in tuned}  # type: ignore[index]
    f1, f1_log = scores[LEARNED], scores[LOG]
    where = "the held-out test volumes" if held_out else "the validation annotations"
    warn = f1_log > f1
    if warn:
        verdict = (
            f"The LoG baseline scores higher than the learned detector on {where} "
            f"(F1 {f1_log:.3f} vs {f1:.3f}). Check the detections before trusting them; on "
            "this data the classical filter may be the better choice (detection.method: log). "
            "More clicks, an annotated_region with every spot marked, or a validation volume "
            "like the data to predict let the learned detector catch up; so may a network "
            "that starts from the LoG (detection.train.model.log_prior: true with "
            "detection.train.normalisation.mode: background, detection.train.select: f1 "
            "and detection.predict.model_grid: false; benchmarks/real_spots)."
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
    if any(learned.get(k) != baseline.get(k) for k in ("tuned_with", "tuned_on")):
        verdict += (
            " The two thresholds were not tuned on the same annotations or not counted the "
            "same way (see the table), so the comparison is only indicative."
        )
    return Comparison(rows, verdict, warn)
