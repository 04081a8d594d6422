"""The build_report stage's inputs, from a :class:`~fewlabel.plan.Plan`: what the report shows
(:func:`report_inputs`, the fields of ``fewlabel.report.ReportInputs``) and every file it reads
(:func:`report_files`, the report rule's inputs, so the report reruns when any changes).
"""

from __future__ import annotations

from typing import Any

from fewlabel.plan import (
    DETECTION_MATCHES,
    DETECTION_SUMMARY,
    DETECTIONS,
    FLUORESCENCE,
    IMAGE,
    INSTANCES,
    ISL_MODEL,
    LABELS,
    POINTS,
    PROVENANCE,
    ROI_JSON,
    ROI_MASK,
    RUN_SUMMARY,
    SEGMENTATION_METRICS,
    SEGMENTATION_SUMMARY,
    TARGET,
    Plan,
    expand,
)
from fewlabel.plan_bfs import BFS_CENTRES, BFS_LIKELIHOOD, BFS_MASK, BFS_PSEUDO, BFS_RESPONSE
from fewlabel.plan_log import LOG_BASELINE, LOG_BASELINE_SUMMARY


def report_inputs(plan: Plan) -> dict[str, Any]:
    """What the report shows (the fields of ``fewlabel.report.ReportInputs``; paths
    relative to the workdir). :func:`report_files` lists the files among them."""
    samples = list(plan.sheet.index)
    inputs: dict[str, Any] = {
        "title": plan.config["report"]["title"],
        "config": dict(plan.config),
        "sample_sheet": plan.config["samples"],
        "summary_tsv": RUN_SUMMARY,
        "provenance_json": PROVENANCE,
        "images": {s: IMAGE.format(sample=s) for s in samples},
    }
    if plan.roi_enabled():
        inputs["roi_jsons"] = expand(ROI_JSON, samples)
        inputs["roi_masks"] = {s: ROI_MASK.format(sample=s) for s in samples}
    if plan.detection_enabled():
        evaluated = set(plan.detection_eval_samples())
        inputs["detection_samples"] = [
            {
                "sample": s,
                "image": IMAGE.format(sample=s),
                "gt": POINTS.format(sample=s) if s in evaluated else None,
                "pred": DETECTIONS.format(sample=s),
                "matches": DETECTION_MATCHES.format(sample=s) if s in evaluated else None,
            }
            for s in plan.detection_predict_samples()
        ]
        inputs["detection_model_dir"] = plan.detector_dir()
        if plan.compare_log():
            inputs["log_baseline_dir"] = LOG_BASELINE
        if plan.compare_log_on_test():
            inputs["log_baseline_summary_tsv"] = LOG_BASELINE_SUMMARY
        if evaluated:
            inputs["detection_summary_tsv"] = DETECTION_SUMMARY
    if plan.segmentation_enabled():
        inputs["segmenter_model_dir"] = plan.segmenter_dir()
        if plan.use_isl():
            inputs["isl_model_dir"] = ISL_MODEL
        evaluated = set(plan.segmentation_eval_samples())
        if evaluated:
            inputs["segmentation_summary_tsv"] = SEGMENTATION_SUMMARY
        inputs["segmentation_samples"] = [
            {
                "sample": s,
                "image": IMAGE.format(sample=s),
                "gt_labels": LABELS.format(sample=s) if s in evaluated else None,
                "pred_labels": INSTANCES.format(sample=s),
                "target": TARGET.format(sample=s) if plan.has(s, "target") else None,
                "pred_fluorescence": (
                    FLUORESCENCE.format(sample=s) if plan.has_fluorescence_eval(s) else None
                ),
                "metrics_tsv": (SEGMENTATION_METRICS.format(sample=s) if s in evaluated else None),
            }
            for s in plan.segmentation_predict_samples()
        ]
        if plan.segmentation_method() == "bfs":
            inputs["bfs_samples"] = _bfs_samples(plan)
    return inputs


def _bfs_samples(plan: Plan) -> list[dict[str, str]]:
    """BFS-Net panels: training volumes (centre map, response, pseudo-labels) and volumes to
    segment (S1 likelihood, S2 probability)."""
    fit = set(plan.bfs_fit_samples())
    predicted = set(plan.segmentation_predict_samples())
    out = []
    for s in plan.bfs_s1_samples():
        entry = {"sample": s, "image": IMAGE.format(sample=s)}
        entry["likelihood"] = BFS_LIKELIHOOD.format(sample=s)
        if s in fit:
            entry["centres"] = BFS_CENTRES.format(sample=s)
            entry["response"] = BFS_RESPONSE.format(sample=s)
            entry["pseudo"] = BFS_PSEUDO.format(sample=s)
        if s in predicted:
            entry["mask"] = BFS_MASK.format(sample=s)
        out.append(entry)
    return out


def report_files(plan: Plan) -> list[str]:
    """Every file the report reads (so the report reruns when any of them changes)."""
    files: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in ("config", "title", "sample"):
                    collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str):
            files.append(value)

    collect(report_inputs(plan))
    return sorted(set(files))
