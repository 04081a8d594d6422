"""Per-section template contexts: samples header, detection, segmentation / ISL, ROI.

The provenance section and the config listing are in :mod:`fewlabel.report.provenance`.

Each builder returns ``None`` when its inputs are not given, which omits the section.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.errors import InputDataError
from fewlabel.io.omezarr import zyx_view
from fewlabel.metrics.tables import POOLING_COLUMNS, UNDEFINED
from fewlabel.report.baseline import baseline_context
from fewlabel.report.bfs import bfs_sample_context
from fewlabel.report.data import (
    ReportInputs,
    _open_volume,
    _points,
    _read_json,
    _read_tsv,
    read_matches,
    table_context,
)
from fewlabel.report.figures import (
    ROI_OUTLINE,
    PointLayers,
    _isl_figure,
    _segmentation_overlay,
    detection_figures,
    outline_figure,
)
from fewlabel.report.models import _model_context
from fewlabel.report.projections import max_projection, pooling_factors

log = logging.getLogger(__name__)


def _samples_section(inputs: ReportInputs) -> dict[str, Any] | None:
    frame: pd.DataFrame | None = None
    if inputs.sample_sheet:
        sheet = pd.read_csv(
            inputs.sample_sheet, sep="\t", dtype=str, comment="#", keep_default_na=False
        )
        sheet.columns = [c.strip() for c in sheet.columns]
        if "sample" not in sheet.columns:
            raise InputDataError("sample sheet has no 'sample' column.", path=inputs.sample_sheet)
        frame = pd.DataFrame({"sample": sheet["sample"]})
        for column in ("split", "task"):
            if column in sheet.columns:
                frame[column] = sheet[column].replace("", "detect" if column == "task" else "")
        present = [c for c in ("points", "labels", "target") if c in sheet.columns]
        if present:
            frame["annotations"] = [
                ", ".join(c for c in present if row[c]) or "–" for row in sheet.to_dict("records")
            ]
        if "voxel_size" in sheet.columns:
            frame["voxel_size_um"] = sheet["voxel_size"]
    if inputs.summary_tsv:
        summary = _read_tsv(inputs.summary_tsv, "run summary")
        if "sample" not in summary.columns:
            raise InputDataError("run summary has no 'sample' column.", path=inputs.summary_tsv)
        wanted = [
            c for c in ("split", "shape_zyx", "voxel_size_um", "dtype") if c in summary.columns
        ]
        summary = summary[["sample", *wanted]].astype({"sample": str})
        if frame is None:
            frame = summary
        else:
            extra = [c for c in wanted if c != "split"]
            merged = frame.merge(
                summary[["sample", *extra]], on="sample", how="left", suffixes=("_sheet", "")
            )
            for column in extra:  # the summary wins; the sheet fills samples it lacks
                if f"{column}_sheet" in merged.columns:
                    sheet_values = merged.pop(f"{column}_sheet").replace("", np.nan)
                    merged[column] = merged[column].astype(object).fillna(sheet_values)
            frame = merged
    return None if frame is None else table_context(frame, highlight=())


def _detection_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (inputs.detection_summary_tsv or inputs.detection_model_dir or inputs.detection_samples):
        return None
    section: dict[str, Any] = {"table": None, "model": None, "baseline": None, "samples": []}
    if inputs.detection_summary_tsv:
        section["table"] = table_context(
            _read_tsv(inputs.detection_summary_tsv, "detection metrics")
        )
    section["model"] = _model_context(inputs.detection_model_dir, "detection model")
    if inputs.detection_model_dir and inputs.log_baseline_dir:
        section["baseline"] = baseline_context(
            inputs.detection_model_dir,
            inputs.log_baseline_dir,
            inputs.detection_summary_tsv,
            inputs.log_baseline_summary_tsv,
        )
    for entry in inputs.detection_samples:
        sample = str(entry["sample"])
        log.info("report: detection figures of %s", sample)
        volume = _open_volume(entry["image"], sample)
        gt = _points(entry.get("gt"), sample)
        pred = _points(entry["pred"], sample)
        if entry.get("matches"):
            layers = read_matches(entry["matches"], gt, pred, sample=sample)
        else:
            layers = PointLayers(gt=gt, pred=pred)
        counts = {"GT": None if gt is None else len(gt), "predicted": len(pred)}
        if layers.tp_gt is not None:
            counts.update({"TP": len(layers.tp_gt), "FP": len(layers.fp), "FN": len(layers.fn)})
        if layers.unscored is not None:
            counts["not scored (outside the annotated region)"] = len(layers.unscored)
        figures = detection_figures(
            volume.array, volume.voxel_size, layers, sample=sample, max_px=max_px
        )
        legend = (
            "; green circles: matched ground truth, magenta +: matched predictions, red "
            "squares: missed ground truth (FN), yellow ×: false predictions (FP)"
            + (
                "; grey +: predictions outside the annotated region (not scored)"
                if layers.unscored is not None
                else ""
            )
            if layers.tp_gt is not None
            else "; green circles: ground truth, magenta +: predictions (no matching given)"
            if gt is not None
            else "; magenta +: predictions"
        )
        section["samples"].append(
            {
                "sample": sample,
                "shape": "×".join(map(str, volume.shape)),
                "counts": counts,
                "legend": legend,
                "figures": [{"caption": c, "uri": u} for c, u in figures],
            }
        )
    return section


def _pcc(metrics: pd.DataFrame | None) -> float | None:
    if metrics is None or metrics.empty:
        return None
    for column in metrics.columns:
        if "pcc" in str(column).lower():
            value = pd.to_numeric(metrics[column], errors="coerce").dropna()
            if len(value):
                return float(value.iloc[0])
    return None


def _without_pooling(metrics: pd.DataFrame) -> pd.DataFrame:
    """A segmentation metrics table without the sums kept only for pooling (ALL row)."""
    return metrics.drop(columns=[c for c in POOLING_COLUMNS if c in metrics.columns])


def _segmentation_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (
        inputs.isl_model_dir
        or inputs.segmenter_model_dir
        or inputs.segmentation_summary_tsv
        or inputs.segmentation_samples
        or inputs.bfs_samples
    ):
        return None
    section: dict[str, Any] = {"table": None, "models": [], "samples": []}
    if inputs.segmentation_summary_tsv:
        metrics = _read_tsv(inputs.segmentation_summary_tsv, "segmentation metrics")
        section["table"] = table_context(_without_pooling(metrics), missing=UNDEFINED)
    for folder, label in (
        (inputs.isl_model_dir, "ISL model (label-free → fluorescence)"),
        (inputs.segmenter_model_dir, "segmentation model"),
    ):
        context = _model_context(folder, label)
        if context is not None:
            section["models"].append(context)
    for entry in inputs.segmentation_samples:
        sample = str(entry["sample"])
        log.info("report: segmentation figures of %s", sample)
        vols = {
            k: _open_volume(entry[k], sample)
            for k in ("image", "gt_labels", "pred_labels", "target", "pred_fluorescence")
            if entry.get(k)
        }
        metrics = (
            _read_tsv(entry["metrics_tsv"], "sample metrics") if entry.get("metrics_tsv") else None
        )
        pcc = _pcc(metrics)
        voxel = next(iter(vols.values())).voxel_size if vols else (1.0, 1.0, 1.0)
        aspect = float(voxel[1]) / float(voxel[2])
        figures = []
        if "target" in vols or "pred_fluorescence" in vols:
            panels = [
                (title, vols[key].array)
                for key, title in (
                    ("image", "input (label-free)"),
                    ("target", "fluorescence target"),
                    (
                        "pred_fluorescence",
                        "predicted fluorescence" + (f" (PCC {pcc:.3f})" if pcc is not None else ""),
                    ),
                )
                if key in vols
            ]
            figures.append(
                {
                    "caption": "in-silico labelling",
                    "uri": _isl_figure(sample, panels, aspect, max_px),
                }
            )
        if "gt_labels" in vols or "pred_labels" in vols:
            arr = {
                k: (vols[k].array if k in vols else None)
                for k in ("image", "gt_labels", "pred_labels")
            }
            figures.append(
                {
                    "caption": "instance outlines",
                    "uri": _segmentation_overlay(
                        sample, arr["image"], arr["gt_labels"], arr["pred_labels"], voxel, max_px
                    ),
                }
            )
        section["samples"].append(
            {
                "sample": sample,
                "pcc": None if pcc is None else f"{pcc:.4f}",
                "metrics": None
                if metrics is None or metrics.empty
                else table_context(_without_pooling(metrics), missing=UNDEFINED),
                "figures": figures,
            }
        )
    section["samples"] += [bfs_sample_context(entry, max_px) for entry in inputs.bfs_samples]
    return section


def _image_for(inputs: ReportInputs, sample: str, mask_attrs: Mapping[str, Any]) -> str | None:
    if sample in inputs.images:
        return str(inputs.images[sample])
    for entry in (*inputs.detection_samples, *inputs.segmentation_samples):
        if str(entry.get("sample")) == sample and entry.get("image"):
            return str(entry["image"])
    source = (mask_attrs.get("fewlabel") or {}).get("source")
    if source and Path(source).exists():
        return str(source)
    return None


def _roi_section(inputs: ReportInputs, max_px: int) -> dict[str, Any] | None:
    if not (inputs.roi_jsons or inputs.roi_masks):
        return None
    rows = []
    for path in inputs.roi_jsons:
        data = _read_json(path, "ROI summary")
        if not isinstance(data, Mapping):
            raise InputDataError("ROI summary is not a JSON object.", path=path)
        rows.append(
            {
                "sample": str(data.get("sample") or Path(path).parent.name),
                "roi_fraction": data.get("roi_fraction"),
                "pi": data.get("pi"),
                "min_batch_size": data.get("min_batch_size"),
                "warnings": "; ".join(map(str, data.get("warnings") or [])) or "–",
            }
        )
    table = (
        table_context(
            pd.DataFrame(
                rows, columns=["sample", "roi_fraction", "pi", "min_batch_size", "warnings"]
            ),
            highlight=(),
        )
        if rows
        else None
    )
    figures = []
    for sample, mask_path in inputs.roi_masks.items():
        log.info("report: ROI figure of %s", sample)
        mask = _open_volume(mask_path, sample)
        shape = tuple(int(s) for s in zyx_view(mask.array).shape)
        factors = pooling_factors(shape[1:], max_px)
        image_path = _image_for(inputs, sample, mask.attrs)
        background = None
        if image_path is not None:
            image = _open_volume(image_path, sample)
            if tuple(zyx_view(image.array).shape) == shape:
                background = max_projection(image.array, 0, factors=factors)[0]
            else:
                log.warning(
                    "ROI of %s: image shape %s differs from mask shape %s; mask only",
                    sample,
                    zyx_view(image.array).shape,
                    shape,
                )
        mip = max_projection(mask.array, 0, factors=factors)[0]
        uri = outline_figure(
            [
                (
                    "z-MIP" if background is not None else "ROI mask (z-MIP)",
                    background if background is not None else mip.astype(np.float32),
                )
            ],
            [[("ROI outline", (mip > 0).astype(np.uint8), ROI_OUTLINE)]],
            factors=factors,
            aspect=float(mask.voxel_size[1]) / float(mask.voxel_size[2]),
            title=f"{sample}: ROI",
        )
        figures.append({"sample": sample, "uri": uri})
    return {"table": table, "figures": figures}
