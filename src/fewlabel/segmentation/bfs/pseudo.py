"""Pseudo-labels of one volume (files in, files out): S1 peaks → peak response maps →
threshold tuned on the volume's own clicks → pseudo instance labels
(:mod:`fewlabel.segmentation.bfs.prm`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.config import BfsPrmConfig
from fewlabel.errors import InputDataError

log = logging.getLogger(__name__)


def pseudo_labels_of(
    s1_dir: str | Path,
    image_path: str | Path,
    likelihood_path: str | Path,
    *,
    params: BfsPrmConfig,
    clicks: np.ndarray | None = None,
    threshold: float | None = None,
    sample: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Pseudo-labels in memory: ``{labels, response, threshold, tuning, peaks}``.

    With ``clicks`` ((N, 3) voxels) the threshold is tuned on them; else ``threshold`` is used.
    """
    from fewlabel.device import configure_torch
    from fewlabel.io import open_ome_zarr
    from fewlabel.models.store import load_model
    from fewlabel.segmentation.bfs.models import S1_ARCH
    from fewlabel.segmentation.bfs.prm import (
        peak_response_maps,
        strongest_response,
        threshold_labels,
        tune_threshold,
    )
    from fewlabel.segmentation.bfs.s1 import s1_peaks
    from fewlabel.segmentation.distance.data import open_input_image

    device = configure_torch(threads, 0)
    loaded = load_model(s1_dir, device, expect=S1_ARCH)
    percentiles = loaded.normalization.get("percentiles", (1.0, 99.8))
    image = open_input_image(str(sample), str(image_path), dims=3, percentiles=percentiles)
    likelihood = open_ome_zarr(likelihood_path, sample=sample)
    if tuple(likelihood.shape) != tuple(image.shape):
        raise InputDataError(
            f"S1 likelihood shape {tuple(likelihood.shape)} differs from the image {image.shape}.",
            sample=sample,
            path=likelihood_path,
            fix="predict S1 on this image again.",
        )
    peaks = s1_peaks(
        likelihood.array,
        image.voxel_size,
        threshold=float(loaded.thresholds.get("peak_threshold", 0.3)),
        min_distance_um=float(loaded.thresholds.get("peak_min_distance_um", 2.0)),
        sample=sample,
        path=likelihood_path,
        workers=threads,
    )
    if clicks is None and threshold is None:
        raise InputDataError(
            "pseudo-labels need the volume's clicks (to tune the threshold) or a threshold.",
            sample=sample,
            fix="give the training volume's points CSV.",
        )
    responses = peak_response_maps(
        loaded.module,
        image.array,
        peaks[["z", "y", "x"]].to_numpy(),
        crop=params.crop,
        batch_size=params.batch_size,
        voxel_size=image.voxel_size,
        smooth_um=params.smooth_um,
        device=device,
        normalise=image.normalise,
        backprop=params.backprop,
        desc=f"PRM {sample}",
    )
    strongest, response = strongest_response(responses, image.shape)  # streamed, one map at a time
    tuning: list[dict[str, float]] = []
    if clicks is not None:
        contrast = params.threshold_rule == "contrast"
        threshold, tuning = tune_threshold(
            strongest,
            response,
            clicks,
            params.threshold_grid,
            # clipped to the percentile range: saturated voxels must not decide the contrast
            image=np.clip(image.normalise(np.asarray(image.array)), 0, 1) if contrast else None,
            f1_tolerance=params.f1_tolerance,
        )
        log.info("sample %s: PRM threshold %.3g tuned on %d clicks", sample, threshold, len(clicks))
    assert threshold is not None
    labels = threshold_labels(strongest, response, float(threshold))
    del strongest
    return {
        "labels": labels,
        "response": response,
        "threshold": float(threshold),
        "tuning": tuning,
        "peaks": peaks,
        "voxel_size": image.voxel_size,
    }


def make_pseudo_labels(
    s1_dir: str | Path,
    image_path: str | Path,
    likelihood_path: str | Path,
    points_csv: str | Path,
    labels_out: str | Path,
    response_out: str | Path,
    *,
    params: BfsPrmConfig | None = None,
    sample: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Write the pseudo instance labels (uint32) and the strongest response (float32) of one
    training volume as OME-Zarr (the image's chunks); returns a summary."""
    from fewlabel.io import (
        atomic_path,
        create_ome_zarr,
        label_source,
        open_ome_zarr,
        read_points_csv,
    )

    params = params if params is not None else BfsPrmConfig()
    image = open_ome_zarr(image_path, sample=sample)
    shape = tuple(int(s) for s in image.shape[-3:])
    clicks = read_points_csv(points_csv, shape=shape, sample=sample)[["z", "y", "x"]].to_numpy()
    result = pseudo_labels_of(
        s1_dir,
        image_path,
        likelihood_path,
        params=params,
        clicks=clicks,
        sample=sample,
        threads=threads,
    )
    chunks = tuple(int(c) for c in image.array.chunks[-3:])
    n_objects = int(len(np.unique(result["labels"][result["labels"] > 0])))
    attrs = {
        "sample": sample,
        "threshold": result["threshold"],
        "threshold_tuning": result["tuning"],
        "n_peaks": len(result["peaks"]),
        "n_objects": n_objects,
        "points": str(points_csv),
    }
    with atomic_path(labels_out) as tmp:
        out = create_ome_zarr(
            tmp,
            shape,
            "uint32",
            chunks,
            image.voxel_size,
            name=f"{sample}:bfs_pseudo_labels",
            extra_attrs={**attrs, "kind": "labels"},
            image_label=label_source(labels_out, image_path),
        )
        out[...] = result["labels"]
    with atomic_path(response_out) as tmp:
        out = create_ome_zarr(
            tmp,
            shape,
            np.float32,
            chunks,
            image.voxel_size,
            name=f"{sample}:bfs_response",
            extra_attrs={**attrs, "kind": "bfs_response"},
        )
        out[...] = result["response"]
    log.info(
        "sample %s: %d S1 peaks -> %d pseudo-label objects (threshold %.3g)",
        sample,
        len(result["peaks"]),
        n_objects,
        result["threshold"],
    )
    return {k: v for k, v in attrs.items() if k != "threshold_tuning"}
