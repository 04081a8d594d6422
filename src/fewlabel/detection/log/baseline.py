"""Classical baseline: SEF3D-style Laplacian-of-Gaussian spot detector with a tuned threshold.

Response (scale-normalised LoG, sign flipped so bright spots give positive peaks)::

    R(x) = - Σ_i σ_i² ∂²/∂x_i² (G_σ * I')(x),      I' = (I - p_low) / (p_high - p_low)

with per-axis σ = (σ_z, σ_y, σ_x) in voxels (≈ the PSF s.d.; ``detection.log.sigma`` is in µm
by default and converted with each volume's voxel size; for isotropic σ this is
``-σ² scipy.ndimage.gaussian_laplace``) and ``I'`` the normalised image
(``detection.log.normalisation``, :mod:`fewlabel.normalize`: percentiles, robust z-score, or
background-subtracted z-score, so one threshold transfers between volumes). Detections are the
local maxima of ``R`` above a threshold (:func:`fewlabel.detection.peaks.find_peaks`); the
threshold is the one maximising the pooled F1 on the annotated training volumes
(:func:`fewlabel.detection.log.tuning.tune_log_threshold`).

The Gaussian kernels are truncated at ``ceil(4σ)`` voxels, so the response is computed block by
block with that halo (:func:`fewlabel.blocks.map_blocks`) and equals the whole-volume response.

A "LoG model folder" (same layout as other model folders, without weights)::

    model.json          {"format": 1, "name": "log", "sigma": [z, y, x], "sigma_unit": "um",
                         "min_distance": ..., "refine_radius": ..., "truncate": 4.0}
    thresholds.json     {"detection_threshold": t, "f1_curve": [{threshold, precision, ...}]}
    normalization.json  {"percentiles": [low, high]}, {"method": "robust"} or {"method":
                        "background", "background_um": [z, y, x]} ({} when not normalised)
    training.json       training settings and summary (samples, gate, best F1)
    curve.tsv           the threshold sweep: threshold, precision, recall, f1, tp, fp, fn
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from fewlabel.config import LogConfig, PeaksConfig
from fewlabel.detection.peaks import find_peaks
from fewlabel.errors import ModelError

log = logging.getLogger(__name__)

TRUNCATE = 4.0
MODEL_JSON = "model.json"
THRESHOLDS_JSON = "thresholds.json"
NORMALIZATION_JSON = "normalization.json"
TRAINING_JSON = "training.json"
CURVE_TSV = "curve.tsv"
THRESHOLD_KEY = "detection_threshold"


def log_halo(sigma_zyx: Sequence[float]) -> tuple[int, int, int]:
    """Halo (voxels) for exact blockwise LoG: the kernel radius ``ceil(4σ)`` per axis."""
    halo = tuple(int(math.ceil(TRUNCATE * float(s))) for s in sigma_zyx)
    return halo  # type: ignore[return-value]


def log_response(
    volume: np.ndarray, sigma_zyx: Sequence[float], *, scale: float = 1.0, offset: float = 0.0
) -> np.ndarray:
    """Scale-normalised, sign-flipped LoG ``R = -Σ σ_i² ∂²_i (G_σ * I')`` (module docstring).

    ``I' = (volume - offset) / scale`` (the offset cancels in the derivatives and is accepted for
    symmetry with the normalisation). ZYX in, float32 ZYX out; borders use scipy's 'reflect'.
    """
    data = np.asarray(volume, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    sigma = [float(s) for s in sigma_zyx]
    out = np.zeros(data.shape, dtype=np.float64)
    for axis in range(3):
        if sigma[axis] <= 0 or data.shape[axis] == 1:
            continue  # no derivative along a flat axis (e.g. z of a 2D image)
        order = [0, 0, 0]
        order[axis] = 2
        out -= sigma[axis] ** 2 * ndimage.gaussian_filter(
            data, sigma, order=order, truncate=TRUNCATE, mode="reflect"
        )
    del offset  # the LoG of a constant is zero
    return (out / float(scale)).astype(np.float32)


def _normalization(
    array: Any,
    percentiles: Sequence[float] | None,
    normalization: dict[str, Any] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> tuple[Any, float, float]:
    """``(view, offset, scale)``: a ``normalization`` recipe (:func:`fewlabel.normalize.prepare`)
    wins over ``percentiles``; neither: the raw image."""
    from fewlabel.normalize import percentile_range, prepare

    if normalization:
        view, low, high = prepare(array, normalization, voxel_size or (1.0, 1.0, 1.0))
        return view, low, high - low
    if percentiles is None:
        return array, 0.0, 1.0
    low, high = percentile_range(array, tuple(percentiles))
    return array, low, high - low


def log_recipe(params: LogConfig) -> dict[str, Any]:
    """The normalization.json recipe of ``detection.log`` ({} when mode percentile and
    percentiles null: no normalisation)."""
    norm = params.normalisation
    if norm.mode == "percentile":
        return {"percentiles": list(params.percentiles)} if params.percentiles else {}
    return norm.recipe((1.0, 99.8))


def sigma_voxels(
    sigma: Sequence[float], unit: str, voxel_size: Sequence[float]
) -> tuple[float, float, float]:
    """LoG σ in voxels of a volume: ``sigma`` as given (unit voxel) or ``sigma / voxel_size``."""
    if unit == "voxel":
        return tuple(float(s) for s in sigma)  # type: ignore[return-value]
    return tuple(float(s) / float(v) for s, v in zip(sigma, voxel_size[-3:], strict=True))  # type: ignore[return-value]


def detect_log(
    volume: np.ndarray,
    *,
    sigma: Sequence[float],
    threshold: float,
    min_distance: Sequence[int] | int,
    refine_radius: Sequence[int] | int = 1,
    percentiles: Sequence[float] | None = None,
    normalization: dict[str, Any] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Detect spots in a (small, in-memory) ZYX volume: peaks of :func:`log_response`
    (``sigma`` in voxels; ``normalization``: a recipe, winning over ``percentiles``).

    Returns the :func:`fewlabel.detection.peaks.find_peaks` table ``z, y, x, score``.
    """
    view, offset, scale = _normalization(volume, percentiles, normalization, voxel_size)
    response = log_response(np.asarray(view[...]), sigma, scale=scale, offset=offset)
    return find_peaks(
        response, threshold=threshold, min_distance=min_distance, refine_radius=refine_radius
    )


def log_response_zarr(
    source: Any,
    output: str | Path,
    *,
    sigma: Sequence[float],
    voxel_size: Sequence[float],
    percentiles: Sequence[float] | None = None,
    workers: int = 1,
    chunks: Sequence[int] | None = None,
    sample: str | None = None,
    normalization: dict[str, Any] | None = None,
) -> tuple[float, float]:
    """Write :func:`log_response` of a (Zarr) ZYX image to a float32 OME-Zarr, block by block.

    Blocks follow ``chunks`` (default: the source's chunks) with a halo of ``ceil(4σ)``, so the
    result equals the whole-volume response. Written atomically. Returns the normalisation
    ``(offset, scale)`` used.
    """
    from fewlabel.blocks import map_blocks
    from fewlabel.io import atomic_path, create_ome_zarr

    shape = tuple(int(s) for s in source.shape[-3:])
    chunks = tuple(chunks or getattr(source, "chunks", None) or (32, 128, 128))[-3:]
    source, offset, scale = _normalization(source, percentiles, normalization, voxel_size)
    attrs = {
        "kind": "log_response",
        "sigma": [float(s) for s in sigma],
        "normalization": {"offset": offset, "scale": scale},
    }
    if sample is not None:
        attrs["sample"] = sample
    with atomic_path(output) as tmp:
        target = create_ome_zarr(
            tmp,
            shape,
            np.float32,
            chunks,
            voxel_size,
            name=f"{sample or 'image'}:log",
            extra_attrs=attrs,
        )

        def func(block: np.ndarray) -> np.ndarray:
            return log_response(block, sigma, scale=scale, offset=offset)

        map_blocks(func, source, target, halo=log_halo(sigma), workers=workers, desc="LoG blocks")
    return offset, scale


# --------------------------------------------------------------------------- model folder
def save_log_model(
    folder: str | Path,
    sigma: Sequence[float],
    threshold: float,
    f1_table: pd.DataFrame,
    *,
    params: LogConfig | None = None,
    peaks: PeaksConfig | None = None,
    training: dict[str, Any] | None = None,
    scores: dict[str, Any] | None = None,
) -> Path:
    """Write a LoG model folder atomically (layout in the module docstring); ``peaks`` (the
    rule the threshold was tuned with) is recorded for prediction, ``scores`` (the tuned
    threshold's F1, precision, recall and how they were counted) in thresholds.json."""
    from fewlabel.io import atomic_path
    from fewlabel.runtime import write_json

    params = (
        params
        if params is not None
        else LogConfig(sigma=tuple(float(s) for s in sigma), sigma_unit="voxel")
    )
    peaks = peaks if peaks is not None else PeaksConfig()
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        write_json(
            {
                "format": 1,
                "name": "log",
                "sigma": [float(s) for s in sigma],
                "sigma_unit": params.sigma_unit,
                "min_distance": list(peaks.min_distance),
                "refine_radius": list(peaks.refine_radius),
                "truncate": TRUNCATE,
            },
            tmp / MODEL_JSON,
        )
        write_json(
            {
                THRESHOLD_KEY: float(threshold),
                **(scores or {}),
                "f1_curve": f1_table.to_dict(orient="records"),
            },
            tmp / THRESHOLDS_JSON,
        )
        write_json(
            log_recipe(params),
            tmp / NORMALIZATION_JSON,
        )
        write_json(
            {
                "params": params.model_dump(mode="json"),
                "peaks": peaks.model_dump(mode="json"),
                **(training or {}),
            },
            tmp / TRAINING_JSON,
        )
        f1_table.to_csv(tmp / CURVE_TSV, sep="\t", index=False, float_format="%.6g")
    log.info("saved LoG model (sigma=%s, threshold=%.4g) to %s", list(sigma), threshold, folder)
    return folder


@dataclass
class LogModel:
    """A loaded LoG model folder."""

    sigma: list[float]
    threshold: float
    min_distance: list[int]
    refine_radius: list[int]
    percentiles: list[float] | None
    folder: Path
    sigma_unit: str = "voxel"  # folders written before µm sigma: voxels
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sigma_voxels(self, voxel_size: Sequence[float]) -> tuple[float, float, float]:
        """σ in voxels of a volume with ``voxel_size``."""
        return sigma_voxels(self.sigma, self.sigma_unit, voxel_size)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    import json

    if not path.exists():
        raise ModelError(
            f"{what} '{path.name}' is missing from the model folder.",
            path=path,
            fix="train the model again (fit_log_threshold) or point --model-dir at a "
            "complete model folder.",
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{what} is not valid JSON ({exc}).",
            path=path,
            fix="retrain the model; the folder is corrupt.",
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{what} must hold a JSON object.", path=path, fix="retrain the model.")
    return data


def read_thresholds(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/thresholds.json`` as a dict; ModelError naming the file if absent/corrupt."""
    return _read_json(Path(model_dir) / THRESHOLDS_JSON, "thresholds file")


def read_threshold(model_dir: str | Path, key: str = THRESHOLD_KEY) -> float:
    """The tuned ``key`` of ``<model_dir>/thresholds.json``; ModelError naming it if absent."""
    path = Path(model_dir) / THRESHOLDS_JSON
    data = read_thresholds(model_dir)
    if key not in data or not isinstance(data[key], (int, float)):
        raise ModelError(
            f"thresholds file has no numeric '{key}' (keys: {sorted(data)}).",
            path=path,
            fix="retrain the model so that it tunes a detection "
            "threshold, or pass --threshold explicitly.",
        )
    return float(data[key])


def load_log_model(folder: str | Path) -> LogModel:
    """Read a LoG model folder written by :func:`save_log_model`."""
    folder = Path(folder)
    model = _read_json(folder / MODEL_JSON, "model description")
    if model.get("name") != "log":
        raise ModelError(
            f"model folder holds a '{model.get('name')}' model, not a LoG model.",
            path=folder / MODEL_JSON,
            fix="use the LoG model folder (fit_log_threshold).",
        )
    norm = (
        _read_json(folder / NORMALIZATION_JSON, "normalisation file")
        if (folder / NORMALIZATION_JSON).exists()
        else {}
    )
    return LogModel(
        sigma=[float(s) for s in model["sigma"]],
        threshold=read_threshold(folder),
        min_distance=[int(v) for v in model.get("min_distance", [1, 2, 2])],
        refine_radius=[int(v) for v in model.get("refine_radius", [1, 1, 1])],
        percentiles=norm.get("percentiles"),
        folder=folder,
        sigma_unit=str(model.get("sigma_unit", "voxel")),
        normalization=norm,
    )
