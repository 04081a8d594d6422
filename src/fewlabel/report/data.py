"""Report inputs and the readers behind them.

:class:`ReportInputs` is the typed description of what the report shows (every field optional;
a listed file that does not exist is an error). The readers turn TSV / JSON / points / matches
files into tables and point sets, and :func:`table_context` formats a table for the template.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fewlabel.errors import ConfigError, InputDataError
from fewlabel.report.figures import PointLayers

log = logging.getLogger(__name__)

POOLED_ROWS = ("ALL", "MEAN", "POOLED", "pooled", "all", "mean")

DETECTION_SAMPLE_KEYS = {"sample": True, "image": True, "pred": True, "gt": False, "matches": False}
SEGMENTATION_SAMPLE_KEYS = {
    "sample": True,
    "image": False,
    "gt_labels": False,
    "pred_labels": False,
    "target": False,
    "pred_fluorescence": False,
    "metrics_tsv": False,
}
BFS_SAMPLE_KEYS = {
    "sample": True,
    "image": True,
    "centres": False,
    "likelihood": False,
    "response": False,
    "pseudo": False,
    "mask": False,
}
LIST_FIELDS = ("roi_jsons", "detection_samples", "segmentation_samples", "bfs_samples")
OBJECT_FIELDS = ("roi_masks", "images", "config")


def _check_keys(
    entry: Mapping[str, Any],
    spec: Mapping[str, bool],
    where: str,
    *,
    sample: str | None = None,
    fix: str | None = None,
) -> None:
    """ConfigError naming unknown and missing keys of ``entry`` (``spec``: key → required)."""
    unknown = sorted(set(entry) - set(spec))
    missing = [k for k, required in spec.items() if required and not entry.get(k)]
    if unknown or missing:
        required = [k for k, r in spec.items() if r]
        problem = (f"unknown key(s) {unknown}; " if unknown else "") + (
            f"missing {missing}; " if missing else ""
        )
        allowed = f"allowed keys {list(spec)}" + (f" (required: {required})" if required else "")
        raise ConfigError(f"{where}: {problem}{allowed}.", sample=sample, fix=fix)


@dataclass
class ReportInputs:
    """What goes into the report; every field is optional and omits its section when unset.

    Paths are strings or :class:`~pathlib.Path`. ``roi_jsons``: ROI summaries, the sample is the
    parent folder name; ``roi_masks``: sample → ROI mask OME-Zarr; ``detection_samples``: dicts
    ``sample, image, pred`` and optional ``gt, matches``; ``segmentation_samples``: dicts
    ``sample`` and optional ``image, gt_labels, pred_labels, target, pred_fluorescence,
    metrics_tsv``; ``bfs_samples``: BFS-Net panels, dicts ``sample, image`` and optional
    ``centres, likelihood, response, pseudo, mask``; ``images``: sample → image OME-Zarr used
    behind ROI outlines when no other input names the sample's image; ``log_baseline_dir``: the
    LoG tuned beside the learned detector (``detection.log.compare``), compared with it, and
    ``log_baseline_summary_tsv`` its metrics on the same test volumes.
    """

    title: str | None = None
    config: dict[str, Any] | None = None
    sample_sheet: str | Path | None = None
    summary_tsv: str | Path | None = None
    provenance_json: str | Path | None = None
    roi_jsons: list[str | Path] = field(default_factory=list)
    roi_masks: dict[str, str | Path] = field(default_factory=dict)
    images: dict[str, str | Path] = field(default_factory=dict)
    detection_summary_tsv: str | Path | None = None
    detection_model_dir: str | Path | None = None
    log_baseline_dir: str | Path | None = None
    log_baseline_summary_tsv: str | Path | None = None
    detection_samples: list[dict[str, Any]] = field(default_factory=list)
    isl_model_dir: str | Path | None = None
    segmenter_model_dir: str | Path | None = None
    segmentation_summary_tsv: str | Path | None = None
    segmentation_samples: list[dict[str, Any]] = field(default_factory=list)
    bfs_samples: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ReportInputs:
        """Build from a plain dict (e.g. the CLI's JSON); unknown keys / bad types → ConfigError."""
        values = dict(values or {})
        _check_keys(
            values,
            {f.name: False for f in fields(cls)},
            "report inputs",
            fix="check the spelling of the --inputs-json keys.",
        )
        for key in (*LIST_FIELDS, *OBJECT_FIELDS):
            kind, noun = (list, "a list") if key in LIST_FIELDS else (dict, "a JSON object")
            if values.get(key) is None:
                values.pop(key, None)
            elif not isinstance(values[key], kind):
                raise ConfigError(
                    f"report input '{key}' must be {noun}, got {type(values[key]).__name__}."
                )
        inputs = cls(**values)
        inputs.validate_structure()
        return inputs

    def validate_structure(self) -> None:
        """Check the per-sample dicts (required keys, no unknown keys)."""
        for key, spec in (
            ("detection_samples", DETECTION_SAMPLE_KEYS),
            ("segmentation_samples", SEGMENTATION_SAMPLE_KEYS),
            ("bfs_samples", BFS_SAMPLE_KEYS),
        ):
            for index, entry in enumerate(getattr(self, key)):
                if not isinstance(entry, Mapping):
                    raise ConfigError(
                        f"report input {key}[{index}] must be an object with keys {list(spec)}."
                    )
                _check_keys(entry, spec, f"report input {key}[{index}]", sample=entry.get("sample"))

    def listed_files(self) -> list[tuple[str, str | None, Path]]:
        """Every listed path as ``(what, sample, path)``."""
        out: list[tuple[str, str | None, Path]] = []
        for name in (
            "sample_sheet",
            "summary_tsv",
            "provenance_json",
            "detection_summary_tsv",
            "detection_model_dir",
            "log_baseline_dir",
            "log_baseline_summary_tsv",
            "isl_model_dir",
            "segmenter_model_dir",
            "segmentation_summary_tsv",
        ):
            value = getattr(self, name)
            if value:
                out.append((name, None, Path(value)))
        out += [("roi_jsons", Path(p).parent.name, Path(p)) for p in self.roi_jsons]
        out += [("roi_masks", s, Path(p)) for s, p in self.roi_masks.items()]
        out += [("images", s, Path(p)) for s, p in self.images.items()]
        for key in ("detection_samples", "segmentation_samples", "bfs_samples"):
            for entry in getattr(self, key):
                for item, value in entry.items():
                    if item != "sample" and value:
                        out.append((f"{key}.{item}", str(entry.get("sample")), Path(value)))
        return out


def check_inputs_exist(inputs: ReportInputs) -> None:
    """Raise :class:`InputDataError` naming the first listed file that does not exist."""
    for what, sample, path in inputs.listed_files():
        if not path.exists():
            raise InputDataError(
                f"report input '{what}' does not exist.",
                sample=sample,
                path=path,
                fix="run the stage that writes it, or drop it from the report inputs.",
            )


# --------------------------------------------------------------------------- readers
def _open_volume(path: str | Path, sample: str | None) -> Any:
    from fewlabel.io import open_ome_zarr

    return open_ome_zarr(path, sample=sample)


def _points(path: str | Path | None, sample: str) -> np.ndarray | None:
    if not path:
        return None
    from fewlabel.io import read_points_csv

    table = read_points_csv(path, sample=sample, allow_empty=True, drop_duplicates=False)
    return table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3)


def _read_tsv(path: str | Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", comment=None)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:
        raise InputDataError(f"cannot read {what} as TSV ({exc}).", path=path) from exc


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(f"cannot read {what} as JSON ({exc}).", path=path) from exc


def f1_curve_table(thresholds: Mapping[str, Any]) -> pd.DataFrame | None:
    """The ``f1_curve`` of a thresholds.json as a table (threshold, f1[, precision, recall]).

    Accepts a list of records, a dict of equal-length lists, or a list of ``[t, f1]`` pairs.
    """
    raw = thresholds.get("f1_curve")
    if raw is None:
        return None
    try:
        if isinstance(raw, Mapping):
            table = pd.DataFrame(dict(raw))
        elif raw and isinstance(raw[0], Mapping):
            table = pd.DataFrame(list(raw))
        else:
            table = pd.DataFrame(np.asarray(raw, float)[:, :2], columns=["threshold", "f1"])
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        log.warning("thresholds.json f1_curve has an unknown layout (%s); not plotted", exc)
        return None
    if not {"threshold", "f1"} <= set(table.columns) or table.empty:
        log.warning("thresholds.json f1_curve lacks 'threshold'/'f1'; not plotted")
        return None
    return table.apply(pd.to_numeric, errors="coerce").sort_values("threshold")


# --------------------------------------------------------------------------- matches
def read_matches(
    path: str | Path, gt: np.ndarray | None, pred: np.ndarray, *, sample: str | None = None
) -> PointLayers:
    """Split points into TP / FN / FP from a matches CSV of ``evaluate_sample``.

    Needs ``gt_index, pred_index`` (-1 or empty for unmatched); ``status`` (tp/fn/fp, and
    unscored: a prediction outside a test volume's annotated region) and the
    coordinate columns ``gt_z..pred_x`` are used when present, otherwise the indices address the
    rows of ``gt`` / ``pred``.
    """
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=["gt_index", "pred_index"])
    except Exception as exc:
        raise InputDataError(
            f"cannot parse matches CSV ({exc}).", sample=sample, path=path
        ) from exc
    missing = [c for c in ("gt_index", "pred_index") if c not in table.columns]
    if missing:
        raise InputDataError(
            f"matches CSV lacks column(s) {missing}; it has {list(table.columns)}.",
            sample=sample,
            path=path,
            fix="pass the matches CSV written by evaluate-detection.",
        )
    gi = pd.to_numeric(table["gt_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    pi = pd.to_numeric(table["pred_index"], errors="coerce").fillna(-1).to_numpy(np.int64)
    if "status" in table.columns:
        status = table["status"].astype(str).str.lower().to_numpy()
    else:
        status = np.where(gi < 0, "fp", np.where(pi < 0, "fn", "tp"))

    def coords(
        prefix: str, index: np.ndarray, source: np.ndarray | None, rows: np.ndarray
    ) -> np.ndarray:
        names = [f"{prefix}_{a}" for a in "zyx"]
        if all(n in table.columns for n in names):
            return table.loc[rows, names].to_numpy(float).reshape(-1, 3)
        idx = index[rows]
        if source is None or (idx.size and (idx.min() < 0 or idx.max() >= len(source))):
            raise InputDataError(
                f"matches CSV refers to {prefix} rows {idx.min() if idx.size else ''}.."
                f"{idx.max() if idx.size else ''} that the {prefix} points do not have.",
                sample=sample,
                path=path,
                fix="use the matches CSV of these very point files.",
            )
        return source[idx].reshape(-1, 3)

    tp, fn, fp, unscored = (np.flatnonzero(status == s) for s in ("tp", "fn", "fp", "unscored"))
    return PointLayers(
        gt=gt,
        pred=pred,
        tp_gt=coords("gt", gi, gt, tp),
        tp_pred=coords("pred", pi, pred, tp),
        fn=coords("gt", gi, gt, fn),
        fp=coords("pred", pi, pred, fp),
        unscored=coords("pred", pi, pred, unscored) if len(unscored) else None,
    )


# --------------------------------------------------------------------------- tables
def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if v == int(v) and abs(v) < 1e9:
            return str(int(v))
        return f"{v:.3e}" if (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    text = str(value)
    return "–" if text in ("", "nan", "NaN") else text


def table_context(
    frame: pd.DataFrame,
    *,
    highlight: Iterable[str] = POOLED_ROWS,
    key: str | None = "sample",
    missing: str = "–",
) -> dict[str, Any]:
    """A DataFrame as ``{columns, rows: [{cells, highlight}]}`` for the template's table macro;
    empty/NaN cells read ``missing``."""
    marks = set(highlight)
    rows = []
    for record in frame.to_dict("records"):
        cells = [_cell(record[c]) for c in frame.columns]
        rows.append(
            {
                "cells": [missing if c == "–" else c for c in cells],
                "highlight": key is not None and str(record.get(key)) in marks,
            }
        )
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


def is_curve(value: Any) -> bool:
    """Whether a JSON value is a curve: a non-empty list of objects with the same keys and
    scalar values (e.g. thresholds.json ``dice_curve``, ``h_curve``)."""
    if not isinstance(value, list) or not value:
        return False
    if not all(isinstance(row, Mapping) for row in value):
        return False
    keys = list(value[0])
    return bool(keys) and all(
        list(row) == keys
        and all(v is None or isinstance(v, (bool, int, float, str)) for v in row.values())
        for row in value
    )


CHOSEN_BY = {"threshold": ("mask_threshold", "detection_threshold", "threshold"), "h": ("h",)}
"""Curve column -> the thresholds.json keys holding the value chosen from it."""


def threshold_tables(
    thresholds: Mapping[str, Any], *, skip: Iterable[str] = ("f1_curve",)
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """A thresholds.json as readable tables: its scalars as ``key``/``value`` rows (numbers as
    numbers) and each curve (:func:`is_curve`) as its own table, one row per tried value, the
    chosen row marked ``✓`` in a ``chosen`` column (``[{"name", "frame"}]``)."""
    skipped = set(skip)
    curves = {k: v for k, v in thresholds.items() if k not in skipped and is_curve(v)}
    scalars = _scalars(
        {k: v for k, v in thresholds.items() if k not in skipped and k not in curves}
    )
    tables = []
    for name, rows in curves.items():
        frame = pd.DataFrame(rows)
        for column, keys in CHOSEN_BY.items():
            if column not in frame.columns:
                continue
            # the tried value first (JSON files may store keys sorted)
            frame = frame[[column, *(c for c in frame.columns if c != column)]]
            chosen = next(
                (thresholds[k] for k in keys if isinstance(thresholds.get(k), (int, float))),
                None,
            )
            if chosen is not None:
                values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
                marks = np.isclose(values, float(chosen), rtol=1e-9, atol=1e-12)
                frame.insert(0, "chosen", np.where(marks, "✓", " "))  # " ": blank, not "–"
            break
        tables.append({"name": str(name), "frame": frame})
    return scalars, tables


def _scalars(mapping: Mapping[str, Any], max_chars: int = 300) -> pd.DataFrame:
    """Key/value rows of a JSON object (long lists summarised, nested objects as JSON)."""
    rows = []
    for key, value in mapping.items():
        if isinstance(value, list) and len(value) > 6:
            text = f"list of {len(value)} values"
        else:
            text = _cell(value)
            if len(text) > max_chars:
                text = text[:max_chars] + " …"
        rows.append({"key": str(key), "value": text})
    return pd.DataFrame(rows, columns=["key", "value"])
