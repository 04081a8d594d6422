"""Post-processing of the PU score map (Vedrenne et al. §2.2, Fig. 3).

Steps (each switchable in ``detection.pu.postprocess`` and logged as candidates in → kept):

1. **threshold + NMS**: local maxima above the threshold that are the largest value within
   the anisotropic ellipsoid of radius r (µm → voxels per axis); chunk-safe and equal to the
   whole-volume result (:func:`fewlabel.detection.peaks.extract_points`).
2. **average**: candidates whose spheres overlap (centres closer than ``merge_factor · 2r``
   µm; single linkage) are replaced by their mean position (score: the maximum).
3. **recentre**: each candidate moves to the centre of mass of its crop (box of half-size
   ⌈r⌉ voxels) above the crop's Otsu threshold, weighted by ``I − t``, until the shift is
   below ``recentre_tol_voxels`` (or ``recentre_max_iter``); candidates that end closer than
   r are merged again.
4. **intensity filter**: CLAHE of the image (global clip range, whole-volume exact block
   views, :class:`fewlabel.roi.CorrectedView`), Otsu's threshold on a voxel subsample;
   candidates whose mean corrected intensity over the box of half-size ⌈r/2⌉ is below it
   are dropped (they lie on background).
5. **ROI / edge**: candidates outside the ROI mask, or closer than ``edge_margin_um`` to the
   volume border, are dropped.

Only crops around candidates and a bounded voxel subsample are read from the image, so the
memory is independent of the volume size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from fewlabel.config.pu import PUPostprocessConfig
from fewlabel.detection.peaks import extract_points
from fewlabel.roi.mixture import otsu_threshold

log = logging.getLogger(__name__)

COLUMNS = ["z", "y", "x", "z_um", "y_um", "x_um", "score"]


def radius_voxels(radius_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """The NMS ellipsoid radii: ``round(r / v)`` per axis, at least 1."""
    return tuple(max(1, int(round(radius_um / v))) for v in voxel_size)  # type: ignore[return-value]


def average_overlapping(
    points: np.ndarray, scores: np.ndarray, voxel_size: Sequence[float], distance_um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean position (max score) of each single-linkage group closer than ``distance_um``."""
    if len(points) < 2:
        return points.reshape(-1, 3).astype(float), scores.astype(float)
    um = points * np.asarray(voxel_size, float)
    pairs = cKDTree(um).query_pairs(distance_um, output_type="ndarray")
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, labels = connected_components(graph, directed=False)
    out = np.zeros((n_groups, 3))
    np.add.at(out, labels, points)
    out /= np.bincount(labels, minlength=n_groups)[:, None]
    best = np.full(n_groups, -np.inf)
    np.maximum.at(best, labels, scores)
    return out, best


def _box(centre: np.ndarray, half: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    c = np.rint(centre).astype(int)
    return tuple(
        slice(max(0, int(ci) - h), min(int(n), int(ci) + h + 1))
        for ci, h, n in zip(c, half, shape, strict=True)
    )


def recentre_point(
    image: Any, centre: np.ndarray, half: Sequence[int], *, tol: float = 0.1, max_iter: int = 20
) -> tuple[np.ndarray, int]:
    """Iterated Otsu-thresholded centre of mass of the crop around ``centre`` (voxels)."""
    c = np.asarray(centre, float)
    shape = image.shape[-3:]
    for it in range(1, max_iter + 1):
        box = _box(c, half, shape)
        crop = np.asarray(image[box], dtype=np.float64)
        t = otsu_threshold(crop)
        w = np.clip(crop - t, 0, None)
        if not w.sum() > 0:
            return c, it
        grids = np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij")
        new = np.array([(g * w).sum() / w.sum() for g in grids])
        shift = float(np.linalg.norm(new - c))
        c = new
        if shift < tol:
            return c, it
    return c, max_iter


def clahe_view(image: Any, voxel_size: Sequence[float], params: PUPostprocessConfig) -> Any:
    """The CLAHE-corrected image, a block-exact lazy view (:class:`fewlabel.roi.CorrectedView`)."""
    from fewlabel.config import RoiConfig
    from fewlabel.normalize import percentile_range
    from fewlabel.roi import CorrectedView, clahe_kernel_voxels

    roi_params = RoiConfig(
        clahe_kernel_um=params.clahe_kernel_um, clahe_clip_limit=params.clahe_clip_limit
    )
    kernel = clahe_kernel_voxels(roi_params, voxel_size, image.shape[-3:])
    low, high = percentile_range(image, roi_params.clip_percentiles)
    return CorrectedView(image, low, high, kernel, params.clahe_clip_limit)


def intensity_keep(
    image: Any,
    points: np.ndarray,
    voxel_size: Sequence[float],
    params: PUPostprocessConfig,
    radius_vox: Sequence[int],
) -> tuple[np.ndarray, float]:
    """Mask of candidates whose CLAHE intensity reaches Otsu's threshold, and the threshold."""
    from fewlabel.normalize import sample_voxels

    view = clahe_view(image, voxel_size, params)
    threshold = otsu_threshold(sample_voxels(view, max_voxels=500_000, seed=0))
    half = [max(0, int(math.ceil(r / 2))) for r in radius_vox]
    values = np.array([float(np.mean(view[_box(p, half, view.shape)])) for p in points])
    return values >= threshold, threshold


def threshold_for_count(
    score_maps: Sequence[Any],
    expected_particles: float,
    radius_um: float,
    voxel_sizes: Sequence[Sequence[float]],
    *,
    floor: float = 0.01,
    merge_um: float | None = None,
) -> float:
    """The score threshold at which ``score_maps`` hold ``expected_particles`` detections per
    map (the prior's k): just below the k·n-th highest score (the lowest when there are
    fewer), so that the chain's ``score > threshold`` keeps k.

    Detections are the NMS candidates and, with ``merge_um`` (the post-processing's averaging
    distance ``merge_factor · 2r``), the groups of overlapping candidates that the averaging
    step merges into one particle (score: the group's maximum). Without the merge, a model
    that puts two maxima on one particle (paired barrels) reaches k candidates with about
    k/2 particles and its recall is capped after averaging. Calibrates the scores without
    labelled negatives."""
    scores = []
    for score_map, vs in zip(score_maps, voxel_sizes, strict=True):
        table = extract_points(
            score_map,
            threshold=floor,
            min_distance=radius_voxels(radius_um, vs),
            refine_radius=0,
            voxel_size=vs,
        )
        values = table["score"].to_numpy(float)
        if merge_um is not None and len(values) > 1:
            pts = table[["z", "y", "x"]].to_numpy(float)
            _, values = average_overlapping(pts, values, vs, float(merge_um))
        scores.append(values)
    allscores = np.sort(np.concatenate(scores))[::-1] if scores else np.zeros(0)
    k = int(round(expected_particles * len(score_maps)))
    if not len(allscores):
        return floor
    kth = np.float32(allscores[max(1, min(k, len(allscores))) - 1])
    # the chain keeps scores > threshold (extract_points, float32 maps): one float32 step
    # below the k-th score keeps it
    return float(max(np.nextafter(kth, np.float32(-np.inf)), np.float32(0.0)))


def postprocess(
    score_map: Any,
    image: Any,
    *,
    threshold: float,
    radius_um: float,
    voxel_size: Sequence[float],
    params: PUPostprocessConfig,
    roi: Any | None = None,
    workers: int = 1,
    sample: str | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Points (``z, y, x`` voxels, µm, score) and the step log ``[{step, in, out}]``."""
    vs = tuple(float(v) for v in voxel_size)
    r_vox = radius_voxels(radius_um, vs)
    steps: list[dict[str, Any]] = []

    def record(name: str, n_in: int, n_out: int, **extra: Any) -> None:
        steps.append({"step": name, "in": n_in, "out": n_out, **extra})
        log.info("sample %s: %s: %d candidates in, %d kept", sample, name, n_in, n_out)

    table = extract_points(
        score_map,
        threshold=threshold,
        min_distance=r_vox if params.nms else (1, 1, 1),
        refine_radius=0,
        voxel_size=vs,
        workers=workers,
    )
    pts = table[["z", "y", "x"]].to_numpy(float)
    scores = table["score"].to_numpy(float)
    record("threshold+nms" if params.nms else "threshold+local-maxima", len(pts), len(pts))
    shape = tuple(int(s) for s in image.shape[-3:])
    if params.average:
        n = len(pts)
        pts, scores = average_overlapping(pts, scores, vs, params.merge_factor * 2 * radius_um)
        record("average", n, len(pts))
    if params.recentre and len(pts):
        n = len(pts)
        half = [int(math.ceil(r)) for r in r_vox]
        moved = [
            recentre_point(
                image, p, half, tol=params.recentre_tol_voxels, max_iter=params.recentre_max_iter
            )
            for p in pts
        ]
        pts = np.array([m[0] for m in moved]).reshape(-1, 3)
        iters = [m[1] for m in moved]
        pts, scores = average_overlapping(pts, scores, vs, radius_um)
        record("recentre", n, len(pts), max_iterations=int(max(iters)))
    if params.intensity_filter and len(pts):
        n = len(pts)
        keep, t = intensity_keep(image, pts, vs, params, r_vox)
        pts, scores = pts[keep], scores[keep]
        record("intensity_filter", n, len(pts), otsu=t)
    if params.roi_filter and roi is not None and len(pts):
        n = len(pts)
        idx = np.clip(np.rint(pts).astype(int), 0, np.asarray(shape) - 1)
        keep = np.array([bool(roi[tuple(i)]) for i in idx])
        pts, scores = pts[keep], scores[keep]
        record("roi_filter", n, len(pts))
    if params.edge_margin_um > 0 and len(pts):
        n = len(pts)
        margin = np.asarray([params.edge_margin_um / v for v in vs])
        upper = np.asarray(shape) - 1 - margin
        keep = np.all((pts >= margin) & (pts <= upper), axis=1)
        pts, scores = pts[keep], scores[keep]
        record("edge_margin", n, len(pts))
    out = pd.DataFrame(pts.reshape(-1, 3), columns=["z", "y", "x"])
    for axis, v in zip("zyx", vs, strict=True):
        out[f"{axis}_um"] = out[axis] * v
    out["score"] = scores
    order = np.argsort(-out["score"].to_numpy(), kind="stable")
    return out.iloc[order].reset_index(drop=True)[COLUMNS], steps


__all__ = [
    "COLUMNS",
    "average_overlapping",
    "clahe_view",
    "intensity_keep",
    "postprocess",
    "radius_voxels",
    "recentre_point",
    "threshold_for_count",
]
