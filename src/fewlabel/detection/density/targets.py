"""Training targets from point annotations: Gaussian density maps and AWing weight maps.

DM-DetNet3D (Spilger et al.) regresses a density map in which every annotated particle is an
anisotropic Gaussian with peak 1; overlapping Gaussians are combined by their maximum. The
adaptive-wing loss is weighted by a map that emphasises the foreground (seed eq. 2):
``W = λ + 1`` where the 3×3×3 grey dilation of the target is ``≥ T``, else ``W = 1``.

Everything is ZYX, points are ``z,y,x`` voxels (0-based, float). Targets are computed chunk by
chunk (each block sees the points within block ± 4σ), which is exactly equal to the
whole-volume computation because every Gaussian is evaluated on an absolute-coordinate window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fewlabel.blocks import block_grid, map_blocks
from fewlabel.config import DensityTargetsConfig
from fewlabel.detection.density import partial
from fewlabel.detection.sizes import derive_targets
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr, read_points_csv
from fewlabel.logs import progress

log = logging.getLogger(__name__)

TRUNCATE_SIGMAS = 4.0


def _sigma3(sigma: float | Sequence[float], *, what: str = "sigma") -> tuple[float, float, float]:
    values = [float(sigma)] * 3 if np.isscalar(sigma) else [float(s) for s in sigma]  # type: ignore[arg-type, union-attr]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(
            f"{what} must be one positive number or three (z, y, x); got {sigma!r}.",
            fix="e.g. sigma: [1.0, 2.0, 2.0] (voxels) or a single value.",
        )
    return values[0], values[1], values[2]


def gaussian_radius(sigma_zyx: Sequence[float]) -> tuple[int, int, int]:
    """Half-width ``ceil(4σ)`` (voxels) of the window on which one Gaussian is evaluated."""
    return tuple(int(math.ceil(TRUNCATE_SIGMAS * float(s))) for s in sigma_zyx)  # type: ignore[return-value]


def density_target(
    shape: Sequence[int],
    points: np.ndarray,
    sigma_zyx: float | Sequence[float],
    *,
    origin: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Gaussian density map for ``points`` on a ZYX grid (DM-DetNet3D target).

    Every point contributes ``g(v) = exp(-½ Σ_a ((v_a − p_a)/σ_a)²) / g(round(p))`` on the window
    ``|v_a − p_a| ≤ ceil(4σ_a)``, so its nearest voxel has value exactly 1 (sub-voxel centres
    keep their shape); overlaps are combined by the maximum, so the map lies in [0, 1].

    Parameters
    ----------
    shape : ZYX shape of the grid (a block of a larger volume when ``origin`` is set).
    points : (N, 3) ``z,y,x`` voxel coordinates in the *volume's* frame.
    sigma_zyx : Gaussian standard deviation(s) in voxels.
    origin : volume coordinates of the grid's first voxel (for chunk-wise computation).
    """
    shape = tuple(int(s) for s in shape)
    sigma = np.asarray(_sigma3(sigma_zyx), dtype=np.float64)
    radius = gaussian_radius(sigma)
    out = np.zeros(shape, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if pts.size == 0:
        return out
    origin_a = np.asarray(origin, dtype=np.int64)
    # peak normalisation: value at the nearest voxel is 1 (independent of the block)
    offset = np.abs(pts - np.rint(pts))
    norm = np.exp(-0.5 * np.sum((offset / sigma) ** 2, axis=1))
    for point, peak in zip(pts, norm, strict=True):
        lo_abs = np.floor(point - np.asarray(radius)).astype(np.int64)
        hi_abs = np.ceil(point + np.asarray(radius)).astype(np.int64) + 1
        lo = np.maximum(lo_abs - origin_a, 0)
        hi = np.minimum(hi_abs - origin_a, shape)
        if np.any(hi <= lo):
            continue
        profiles = []
        for axis in range(3):
            coords = np.arange(lo[axis], hi[axis], dtype=np.float64) + origin_a[axis]
            dist = coords - point[axis]
            inside = np.abs(dist) <= radius[axis]
            profiles.append(np.where(inside, np.exp(-0.5 * (dist / sigma[axis]) ** 2), 0.0))
        window = (
            profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
        ) / peak
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        np.maximum(out[region], np.minimum(window, 1.0).astype(np.float32), out=out[region])
    return out


def weight_map(target: np.ndarray, *, lam: float, T: float) -> np.ndarray:
    """AWing weight map (seed eq. 2): ``W = λ + 1`` where ``dilate₃ₓ₃ₓ₃(target) ≥ T``, else 1."""
    dilated = ndimage.maximum_filter(np.asarray(target, dtype=np.float32), size=3, mode="nearest")
    return np.where(dilated >= T, np.float32(lam + 1.0), np.float32(1.0)).astype(np.float32)


def sigma_in_voxels(
    sigma: float | Sequence[float], unit: str, voxel_size: Sequence[float]
) -> tuple[float, float, float]:
    """Convert ``sigma`` given in ``unit`` ('voxel' or 'um') to voxels per ZYX axis."""
    values = _sigma3(sigma)
    if unit == "voxel":
        return values
    if unit == "um":
        return tuple(float(s) / float(v) for s, v in zip(values, voxel_size, strict=True))  # type: ignore[return-value]
    raise ConfigError(f"sigma_unit must be 'voxel' or 'um'; got {unit!r}.")


def known_attrs(
    annotated_region: str | None,
    params: DensityTargetsConfig,
    voxel_size: Sequence[float],
) -> dict[str, Any]:
    """What is known of one annotated volume, as :func:`partial.known_volume` reads it:
    ``annotation`` (full | clicks), ``annotated_region`` (a box CSV or mask; "" for none) and
    ``click_radius_voxels``. ``params``: ``detection.targets`` already derived for the volume
    (:func:`fewlabel.detection.sizes.derive_targets`). Density targets record it; the LoG
    baseline's tuning scores with it, so both count the same detections."""
    kind = partial.region_kind(annotated_region, params.annotation)
    sigma_vox = sigma_in_voxels(params.sigma, params.sigma_unit, voxel_size)
    radius = partial.click_radius_voxels(sigma_vox, params.click_radius_um, voxel_size)
    return {
        "annotation": "full" if kind == "full" else "clicks",
        "annotated_region": "" if kind != "regions" else str(annotated_region),
        "click_radius_voxels": list(radius),
    }


def make_density_targets(
    image_zarr: str | Path,
    points_csv: str | Path,
    target_out: str | Path,
    weight_out: str | Path,
    *,
    params: DensityTargetsConfig | None = None,
    sample: str | None = None,
    workers: int = 1,
    object_diameter_um: float | None = None,
    annotated_region: str | None = None,
    roi: str | Path | None = None,
) -> dict[str, object]:
    """Write the density target and the weight map of one sample as chunked OME-Zarr.

    ``params`` (:class:`~fewlabel.config.DensityTargetsConfig`, the ``detection.targets``
    section): Gaussian sigma z, y, x and its unit, weight-map ``lam`` and ``T``.
    Both outputs have the image's shape, chunks and voxel size. Chunk-wise: each block gets
    the points within the block ± (4σ + 1) and is computed with :func:`density_target`
    (absolute-coordinate windows, so the result equals the whole-volume map); the weight map
    (seed eq. 2) is computed with a 1-voxel halo. ``object_diameter_um``
    (``detection.object_diameter_um``): σ left at its default becomes d/4 µm
    (:func:`fewlabel.detection.sizes.derive_targets`).

    Partial annotation (:mod:`fewlabel.detection.density.partial`): unless the volume is fully
    annotated (``annotated_region`` = ``full``, or empty with ``params.annotation = full``),
    the weight map keeps its value only on known voxels (click neighbourhoods and the
    ``annotated_region`` boxes/mask), is ``-params.unlabelled_weight`` on unlabelled voxels
    (inside the ROI mask ``roi`` when given) and 0 elsewhere; what is known is recorded in the
    target's attributes for threshold tuning. Returns a small summary dict.
    """
    params = params if params is not None else DensityTargetsConfig()
    lam, T = params.lam, params.T
    image = open_ome_zarr(image_zarr, sample=sample)
    shape = tuple(int(s) for s in image.shape[-3:])
    chunks = tuple(int(c) for c in image.array.chunks[-3:])
    table = read_points_csv(points_csv, shape=shape, sample=sample)
    params = derive_targets(params, object_diameter_um, image.voxel_size, sample=sample)
    lam, T = params.lam, params.T
    points = table[["z", "y", "x"]].to_numpy(np.float64)
    sigma_vox = sigma_in_voxels(params.sigma, params.sigma_unit, image.voxel_size)
    radius = np.asarray(gaussian_radius(sigma_vox)) + 1
    kind = partial.region_kind(annotated_region, params.annotation)
    known = known_attrs(annotated_region, params, image.voxel_size)
    click_radius = known["click_radius_voxels"]
    attrs = {
        "sample": sample,
        "kind": "density_target",
        "sigma_voxels": list(sigma_vox),
        "points": str(points_csv),
        "n_points": int(len(points)),
        **known,
        "unlabelled_weight": float(params.unlabelled_weight),
        "unlabelled_prior": float(params.unlabelled_prior),
        "T": float(T),
        "roi": str(roi) if roi else "",
    }
    blocks = block_grid(shape, chunks)

    def fill(block: tuple[slice, ...], out: object) -> None:
        start = np.array([b.start for b in block])
        stop = np.array([b.stop for b in block])
        near = np.all((points >= start - radius) & (points < stop + radius), axis=1)
        data = density_target(tuple(stop - start), points[near], sigma_vox, origin=start)
        out[block] = data  # type: ignore[index]

    with atomic_path(target_out) as tmp_target, atomic_path(weight_out) as tmp_weight:
        target = create_ome_zarr(
            tmp_target,
            shape,
            np.float32,
            chunks,
            image.voxel_size,
            name=f"{sample}:density",
            extra_attrs=attrs,
        )
        if workers <= 1:
            for block in progress(blocks, desc="density target blocks", logger=log):
                fill(block, target)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in progress(
                    pool.map(lambda b: fill(b, target), blocks),
                    total=len(blocks),
                    desc="density target blocks",
                    logger=log,
                ):
                    pass
        weight = create_ome_zarr(
            tmp_weight,
            shape,
            np.float32,
            chunks,
            image.voxel_size,
            name=f"{sample}:weight",
            fill_value=1,
            extra_attrs={**attrs, "kind": "weight_map", "lam": lam, "T": T},
        )
        map_blocks(
            lambda b: weight_map(b, lam=lam, T=T),
            target,
            weight,
            halo=1,
            workers=workers,
            desc="weight map blocks",
        )
        known_share = 1.0
        if kind != "full":
            known_share = _mask_weights(
                weight,
                points,
                click_radius,
                annotated_region if kind == "regions" else None,
                roi,
                params.unlabelled_weight,
                shape=shape,
                blocks=blocks,
                sample=sample,
            )
    log.info(
        "density targets for %s: %d points, sigma (voxels) %s, annotation %s (%.1f %% of the "
        "voxels known) -> %s, %s",
        sample,
        len(points),
        sigma_vox,
        kind,
        100.0 * known_share,
        target_out,
        weight_out,
    )
    return {
        "sample": sample,
        "n_points": int(len(points)),
        "sigma_voxels": list(sigma_vox),
        "lam": lam,
        "T": T,
        "shape": list(shape),
        "annotation": kind,
        "known_fraction": known_share,
    }


def _mask_weights(
    weight: Any,
    points: np.ndarray,
    click_radius: Sequence[float],
    region_spec: str | None,
    roi: str | Path | None,
    unlabelled_weight: float,
    *,
    shape: Sequence[int],
    blocks: Sequence[tuple[slice, ...]],
    sample: str | None,
) -> float:
    """Apply the partial-annotation loss mask to the weight map block by block; returns the
    share of known voxels."""
    region = partial.load_region(region_spec, shape, sample=sample)
    roi_array = None
    if roi:
        roi_vol = open_ome_zarr(roi, sample=sample)
        if tuple(roi_vol.shape[-3:]) != tuple(shape):
            raise InputDataError(
                f"ROI mask shape {roi_vol.shape} differs from the image shape {tuple(shape)}.",
                sample=sample,
                path=roi,
                fix="recompute the ROI of this image (segment_roi).",
            )
        roi_array = roi_vol.array
    radius = np.ceil(np.asarray(click_radius)) + 1
    known_total = 0
    for block in blocks:
        start = np.array([b.start for b in block])
        stop = np.array([b.stop for b in block])
        near = np.all((points >= start - radius) & (points < stop + radius), axis=1)
        known = partial.click_neighbourhood(
            tuple(stop - start), points[near], click_radius, origin=start
        )
        if region is not None:
            known |= region[block]
        roi_block = None if roi_array is None else np.asarray(roi_array[block]) != 0
        weight[block] = partial.partial_weight(  # type: ignore[index]
            np.asarray(weight[block]), known, unlabelled_weight=unlabelled_weight, roi=roi_block
        )
        known_total += int(known.sum())
    return known_total / float(math.prod(shape))
