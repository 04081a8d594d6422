"""File-level PU training: items (image, points, ROI) → model folder (``train_pu`` stage).

Resolves the particle radius r and the expected count k (``detection.pu`` first, else the
``roi`` section), normalises each volume as ``detection.pu.normalisation`` says
(:func:`fewlabel.normalize.prepare`: percentiles, robust z-score or top-hat background
subtraction; the recipe is stored in the model folder's normalization.json and applied again by
the tiled engine at prediction, so training windows and predicted tiles see the same input),
trains
(:func:`fewlabel.detection.pu.training.train_pu`), sets the score threshold (``auto``:
:func:`fewlabel.detection.pu.postprocess.threshold_for_count` on the training volumes, counting
detections after the averaging step when ``postprocess.average`` is on) and
writes the model folder with ``thresholds.json`` = ``{detection_threshold, radius_um,
expected_particles}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewlabel.config import RoiConfig
from fewlabel.config.pu import PUConfig
from fewlabel.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_prior(params: PUConfig, roi: RoiConfig | None) -> tuple[float, float]:
    """``(radius_um, expected_particles)`` from ``detection.pu``, else ``roi``; ConfigError."""
    radius = params.radius_um or (roi.particle_radius_um if roi else None)
    k = params.expected_particles or (roi.expected_particles if roi else None)
    if radius is None or k is None:
        raise ConfigError(
            "detection.method: pu needs the particle radius and the expected particle count "
            f"per volume (radius_um={radius}, expected_particles={k}).",
            fix="set detection.pu.radius_um and detection.pu.expected_particles (or "
            "roi.particle_radius_um and roi.expected_particles).",
        )
    return float(radius), float(k)


def load_volume(item: Mapping[str, Any], params: PUConfig) -> Any:
    """A :class:`~fewlabel.detection.pu.sampling.PUVolume` from an item's files, normalised by
    ``detection.pu.normalisation`` exactly as the tiled engine normalises it at prediction (the
    same view of the stored array, the same subsampled statistics)."""
    from fewlabel.detection.pu.sampling import PUVolume
    from fewlabel.io import open_ome_zarr, read_points_csv, zyx_view
    from fewlabel.normalize import apply_range, prepare

    sample = str(item["sample"])
    image = open_ome_zarr(item["image"], sample=sample)
    norm = params.normalisation.recipe(params.percentiles)
    view, low, high = prepare(zyx_view(image.array), norm, image.voxel_size)
    array = np.asarray(view[...], dtype=np.float32)
    log.info(
        "PU volume %s: shape %s, normalisation %s, range [%g, %g]",
        sample,
        array.shape,
        norm,
        low,
        high,
    )
    points = read_points_csv(item["points"], shape=array.shape, sample=sample)
    roi = None
    if item.get("roi"):
        roi = np.asarray(open_ome_zarr(item["roi"], sample=sample).array[...]) > 0
        if roi.shape != array.shape:
            raise ConfigError(
                f"ROI mask shape {roi.shape} differs from the image {array.shape}.",
                sample=sample,
                path=item["roi"],
                fix="rerun segment_roi for this sample.",
            )
    return PUVolume(
        sample,
        apply_range(array, low, high),
        points[["z", "y", "x"]].to_numpy(float),
        tuple(float(v) for v in image.voxel_size),  # type: ignore[arg-type]
        roi=roi,
    )


def score_map(module: Any, vol: Any, params: PUConfig, device: str) -> np.ndarray:
    """Dense score map of a (normalised, in-memory) training volume by the tiled engine's
    blending loop (bounded memory), zero outside its ROI."""
    from fewlabel.inference.model_info import blend_margin
    from fewlabel.inference.tiling import predict_tiled

    predict = params.predict
    shape = vol.image.shape
    tile = tuple(min(t, n) for t, n in zip(predict.tile, shape, strict=True))
    overlap = tuple(min(o, t - 1) for o, t in zip(predict.overlap, tile, strict=True))
    margin = blend_margin(params.window, overlap, sample=vol.sample, shape=shape, tile=tile)
    out = np.zeros(vol.image.shape, np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    predict_tiled(
        run, vol.image, out, tile=tile, overlap=overlap, batch_size=predict.batch_size,
        margin=margin, prefetch=False, block_shape=shape, progress_desc="score map",
    )  # fmt: skip
    return np.where(vol.roi, out, 0.0) if vol.roi is not None else out


def train_to_folder(
    items: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    params: PUConfig,
    roi: RoiConfig | None = None,
    seed: int = 0,
    device: str = "cpu",
    object_diameter_um: float | None = None,
) -> dict[str, Any]:
    """Train on ``items`` (``{sample, image, points, roi}``) and write the model folder;
    ``object_diameter_um`` sets ``normalisation.background_um`` left at its default
    (:func:`fewlabel.detection.sizes.derive_normalisation`, as for the density detector)."""
    from fewlabel.detection.pu.classifier import ARCH_NAME
    from fewlabel.detection.pu.postprocess import threshold_for_count
    from fewlabel.detection.pu.training import model_kwargs, train_pu
    from fewlabel.detection.sizes import derive_normalisation
    from fewlabel.inference.resample import training_grid
    from fewlabel.models.store import save_model
    from fewlabel.runtime import provenance

    params = derive_normalisation(params, object_diameter_um)
    if not items:
        raise ConfigError(
            "train_pu has no training sample (train/val rows with task detect and points).",
            fix="add train rows with a points file (the clicked particles).",
        )
    radius, k = resolve_prior(params, roi)
    volumes = [load_volume(item, params) for item in items]
    module, summary, curve = train_pu(
        volumes, params, radius_um=radius, expected_particles=k, seed=seed, device=device
    )
    if params.threshold == "auto":
        maps = [score_map(module, vol, params, device) for vol in volumes]
        post = params.postprocess
        merge = post.merge_factor * 2 * radius if post.average else None
        threshold = threshold_for_count(
            maps, k, radius, [v.voxel_size for v in volumes], merge_um=merge
        )
    else:
        threshold = float(params.threshold)
    summary.update({"radius_um": radius, "expected_particles": k, "threshold": threshold})
    settings = params.model_dump(mode="json")
    save_model(
        out_dir,
        module,
        arch={"name": ARCH_NAME, "kwargs": model_kwargs(params)},
        training={
            "stage": "train_pu",
            "params": settings,
            "seed": seed,
            "device": str(device),
            "train": [str(item["sample"]) for item in items],
            # recorded, never resampled to (predict_pu predicts on the image's own grid):
            # postprocess_pu warns when a volume's voxel size differs from it
            "voxel_size_um": list(training_grid([v.voxel_size for v in volumes])),
            "summary": summary,
            "provenance": provenance(settings),
        },
        thresholds={"detection_threshold": threshold, "radius_um": radius, "expected_particles": k},
        curve=curve,
        normalization=params.normalisation.recipe(params.percentiles),
    )
    log.info("PU model written to %s (threshold %.4g)", out_dir, threshold)
    return summary


__all__ = ["load_volume", "resolve_prior", "train_to_folder"]
