"""Threshold tuning of the LoG baseline: the pooled-F1 threshold sweep on annotated volumes
(:func:`tune_log_threshold`) and the ``fit_log_threshold`` stage's training (:func:`train_log`),
which reads the annotated samples and saves a LoG model folder
(:func:`fewlabel.detection.log.baseline.save_log_model`).

The response, detection and model folder are in :mod:`fewlabel.detection.log.baseline`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fewlabel.config import LogConfig, PeaksConfig
from fewlabel.detection.log.baseline import detect_log, log_recipe, save_log_model, sigma_voxels
from fewlabel.errors import ConfigError

if TYPE_CHECKING:
    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density.partial import KnownVolume

log = logging.getLogger(__name__)


def tune_log_threshold(
    volumes: Sequence[np.ndarray],
    gt_points_list: Sequence[np.ndarray],
    *,
    sigma: Sequence[float],
    min_distance: Sequence[int] | int,
    gate: float,
    candidates: Sequence[float] | None = None,
    refine_radius: Sequence[int] | int = 1,
    scales: Sequence[Sequence[float]] | None = None,
    percentiles: Sequence[float] | None = None,
    n_candidates: int = 100,
    min_distances: Sequence[Sequence[int]] | None = None,
    sigmas: Sequence[Sequence[float]] | None = None,
    normalization: dict[str, Any] | None = None,
    voxel_sizes: Sequence[Sequence[float]] | None = None,
    known: Sequence[KnownVolume] | None = None,
) -> tuple[float, pd.DataFrame]:
    """Threshold maximising the pooled F1 of :func:`detect_log` on annotated volumes.

    Peaks are found once per volume at the lowest threshold (0, or min(candidates)); since the
    peak rule is local, the detections at a higher threshold ``t`` are the peaks with score > t,
    so every candidate is scored by Hungarian matching without re-detection.
    ``scales`` (one (z, y, x) per volume) makes the ``gate`` physical (µm); default voxels.
    ``min_distances`` / ``sigmas`` (one (z, y, x) per volume, voxels) override ``min_distance``
    / ``sigma`` per volume; ``normalization`` (a recipe, with ``voxel_sizes``) wins over
    ``percentiles``. ``known`` (one per volume, when any is partially annotated): score only
    what is known, click recall with known-region precision
    (:func:`fewlabel.detection.density.partial.known_sweep`), as the density detector's tuning.

    Returns ``(best_threshold, table)`` with columns threshold, precision, recall, f1, tp, fp, fn.
    """
    from fewlabel.detection.density import partial
    from fewlabel.metrics.detection import default_candidates, sweep_thresholds

    if len(volumes) != len(gt_points_list) or not volumes:
        raise ValueError("need one ground-truth point array per volume (and at least one)")
    # peaks at t >= base are the peaks at base with score > t (local peak rule)
    base = float(min(candidates)) if candidates is not None and len(candidates) else 0.0
    tables = [
        detect_log(
            v,
            sigma=sigma if sigmas is None else sigmas[i],
            threshold=base,
            min_distance=min_distance if min_distances is None else min_distances[i],
            refine_radius=refine_radius,
            percentiles=percentiles,
            normalization=normalization,
            voxel_size=None if voxel_sizes is None else voxel_sizes[i],
        )
        for i, v in enumerate(volumes)
    ]
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 3) for g in gt_points_list]
    if known is not None:
        if candidates is None:
            scores = np.concatenate([t["score"].to_numpy(float) for t in tables])
            candidates = default_candidates(
                scores, sum(len(g) for g in gts), n_candidates=n_candidates
            )
        best, table = partial.known_sweep(tables, known, gate=gate, candidates=candidates)
    else:
        best, table = sweep_thresholds(
            tables, gts, gate=gate, scales=scales, candidates=candidates, n_candidates=n_candidates
        )
    row = table.loc[table["threshold"] == best].iloc[0]
    log.info(
        "LoG threshold %.4g: P=%.3f R=%.3f F1=%.3f on %d volume(s)",
        best,
        row["precision"],
        row["recall"],
        row["f1"],
        len(volumes),
    )
    return best, table


def train_log(
    samples: Sequence[dict[str, Any]],
    output_dir: str | Path,
    *,
    params: LogConfig,
    peaks: PeaksConfig | None = None,
    object_diameter_um: float | None = None,
    evaluation: Any = None,
    targets: DensityTargetsConfig | None = None,
    tuned_on: str = "train+val",
) -> tuple[float, pd.DataFrame]:
    """Tune the LoG threshold on annotated samples ``[{sample, image, points}]`` and save a model.

    ``params``: the ``detection.log`` section; ``peaks``: the ``detection.peaks`` rule (default
    its defaults), used for tuning and stored in the model for prediction.

    ``image`` is an OME-Zarr (read whole: training volumes are few-shot crops), ``points`` a
    CSV of z,y,x voxels. Gates in µm use each image's voxel size. ``object_diameter_um``
    (``detection.object_diameter_um``): a min_distance left at its default is each volume's
    object radius in voxels (:func:`fewlabel.detection.sizes.derive_peaks`), as in
    ``extract_points``.

    What the points cover is read as the density detector reads it (an entry's optional
    ``annotated_region`` and ``targets.annotation``, :func:`~fewlabel.detection.density.
    targets.known_attrs`): when any volume is partially clicked, the threshold maximises click
    recall with known-region precision, never counting an unclicked spot as a false positive.
    ``tuned_on`` names the split(s) in thresholds.json.
    """
    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density import partial
    from fewlabel.detection.density.targets import known_attrs
    from fewlabel.detection.sizes import (
        derive_normalisation,
        derive_peaks,
        derive_targets,
        tuning_gate,
    )
    from fewlabel.io import open_ome_zarr, read_points_csv
    from fewlabel.runtime import provenance

    peaks = peaks if peaks is not None else PeaksConfig()
    targets = targets if targets is not None else DensityTargetsConfig()
    params = derive_normalisation(params, object_diameter_um)
    if not samples:
        raise ConfigError(
            "fit_log_threshold needs at least one annotated sample.",
            fix="mark samples with points as split 'train' in the sample sheet.",
        )
    gate, gate_unit = tuning_gate(
        params.gate, params.gate_unit, evaluation, what="detection.log.gate"
    )
    volumes, gts, scales, distances, sigmas, voxel_sizes, known = [], [], [], [], [], [], []
    first_rule: PeaksConfig | None = None
    for entry in samples:
        missing = [k for k in ("sample", "image", "points") if k not in entry]
        if missing:
            raise ConfigError(
                f"fit_log_threshold sample entry {entry} lacks {missing}.",
                fix="give a list of {sample, image, points} objects.",
            )
        sample = str(entry["sample"])
        vol = open_ome_zarr(entry["image"], sample=sample)
        data = np.asarray(vol.array[...])
        volumes.append(data[0] if data.ndim == 4 else data)
        pts = read_points_csv(
            entry["points"], shape=vol.shape[-3:], sample=sample, allow_empty=True
        )
        gts.append(pts[["z", "y", "x"]].to_numpy(float))
        scales.append(tuple(vol.voxel_size) if gate_unit == "um" else (1.0, 1.0, 1.0))
        rule = derive_peaks(peaks, object_diameter_um, vol.voxel_size, sample=sample)
        first_rule = first_rule or rule
        distances.append(rule.min_distance)
        sigmas.append(sigma_voxels(params.sigma, params.sigma_unit, vol.voxel_size))
        voxel_sizes.append(tuple(vol.voxel_size))
        derived = derive_targets(targets, object_diameter_um, vol.voxel_size, sample=sample)
        attrs = known_attrs(entry.get("annotated_region"), derived, vol.voxel_size)
        known.append(partial.known_volume(sample, gts[-1], vol.shape[-3:], attrs, scale=scales[-1]))
    tuned_with = partial.tuned_with(known)
    partially = tuned_with != "full"
    best, table = tune_log_threshold(
        volumes,
        gts,
        sigma=params.sigma,
        min_distance=distances[0],
        gate=gate,
        refine_radius=peaks.refine_radius,
        scales=scales,
        percentiles=params.percentiles,
        n_candidates=params.n_candidates,
        min_distances=distances,
        sigmas=sigmas,
        normalization=log_recipe(params),
        voxel_sizes=voxel_sizes,
        known=known if partially else None,
    )
    row = table.loc[table["threshold"] == best].iloc[0]
    scores = {
        "val_f1": float(row["f1"]),
        "val_precision": float(row["precision"]),
        "val_recall": float(row["recall"]),
        "gate": float(gate),
        "gate_unit": gate_unit,
        "tuned_on": tuned_on,
        "tuned_with": tuned_with,
        "samples": [str(e["sample"]) for e in samples],
    }
    summary = {
        "stage": "fit_log_threshold",
        "best": {k: float(row[k]) for k in ("threshold", "precision", "recall", "f1")},
        **scores,
        "provenance": provenance(
            {
                "log": params.model_dump(mode="json"),
                "peaks": peaks.model_dump(mode="json"),
                "targets": targets.model_dump(mode="json"),
            }
        ),
    }
    save_log_model(
        output_dir,
        params.sigma,
        best,
        table,
        params=params,
        peaks=first_rule,
        training=summary,
        scores=scores,
    )
    return best, table
