"""The LoG part of :class:`fewlabel.plan.Plan`: what ``fit_log_threshold`` tunes on and
writes, as the detector (``detection.method: log``) or as the baseline tuned beside a learned
detector (``detection.log.compare``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

LOG_BASELINE = "results/models/log_baseline"
"""The LoG tuned beside a density detector on the same annotations (``detection.log.compare``)."""
# its detections and metrics on the test volumes, beside the learned detector's
LOG_BASELINE_MAP = "results/log_baseline/predict/{sample}/detection.ome.zarr"
LOG_BASELINE_POINTS = "results/log_baseline/points/{sample}/points.csv"
LOG_BASELINE_METRICS = "results/log_baseline/evaluate/{sample}/detection.tsv"
LOG_BASELINE_MATCHES = "results/log_baseline/evaluate/{sample}/detection_matches.csv"
LOG_BASELINE_SUMMARY = "results/log_baseline/evaluate/detection_summary.tsv"


class LogPlan:
    """Mixin of :class:`fewlabel.plan.Plan` for the LoG detector and baseline."""

    sheet: pd.DataFrame
    config: Mapping[str, Any]

    if TYPE_CHECKING:  # provided by Plan

        def detection_fit_samples(self, split: Any = ("train", "val")) -> list[str]: ...

        def detection_enabled(self) -> bool: ...

        def detection_eval_samples(self) -> list[str]: ...

    def log_items(self, splits: Iterable[str] = ("train", "val")) -> list[dict[str, str]]:
        """Tuning items of ``fit_log_threshold``: image, points and what they cover
        (the sheet's ``annotated_region``)."""
        from fewlabel import plan

        return [
            {
                "sample": s,
                "image": plan.IMAGE.format(sample=s),
                "points": plan.POINTS.format(sample=s),
                "annotated_region": str(self.sheet.loc[s, "annotated_region"]),
            }
            for s in self.detection_fit_samples(tuple(splits))
        ]

    def compare_log(self) -> bool:
        """Tune the LoG baseline beside a density detector trained here
        (``detection.log.compare``; a reused ``detection.model`` was tuned elsewhere)."""
        section = self.config["detection"]
        return bool(
            self.detection_enabled()
            and section.get("method", "density") == "density"
            and (section.get("log") or {}).get("compare", True)
            and not section.get("model")
        )

    def log_dir(self) -> str:
        """The folder ``fit_log_threshold`` writes: the detector (``method: log``), else the
        baseline beside the learned detector."""
        from fewlabel import plan

        return plan.DETECTOR if self.config["detection"].get("method") == "log" else LOG_BASELINE

    def log_map(self) -> str:
        """The LoG response map ``predict_log`` writes: the detection map (``method: log``),
        else the baseline's."""
        from fewlabel import plan

        if self.config["detection"].get("method") == "log":
            return plan.DETECTION_MAP
        return LOG_BASELINE_MAP

    def compare_log_on_test(self) -> bool:
        """The baseline is also evaluated on the annotated test volumes (held out from both
        thresholds), beside the learned detector."""
        return self.compare_log() and bool(self.detection_eval_samples())

    def log_splits(self) -> tuple[str, ...]:
        """What ``fit_log_threshold`` tunes on: train + val for ``method: log`` (nothing is
        trained); as a baseline, the split the density threshold is tuned on (val, or train
        when there is no val sample), so both are scored on the same annotations."""
        if self.config["detection"].get("method") == "log":
            return ("train", "val")
        return ("val",) if self.detection_fit_samples("val") else ("train",)

    def region_files(self, samples: Iterable[str]) -> list[str]:
        """The ``annotated_region`` files (not keywords) of ``samples``."""
        values = (str(self.sheet.loc[s, "annotated_region"]) for s in samples)
        return [v for v in values if v and v not in ("full", "none")]
