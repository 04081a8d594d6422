"""The ``segment_roi`` stage: streaming ROI mask + summary of one ingested volume.

Algorithm, block processing and memory: see the package docstring (:mod:`fewlabel.roi`).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.blocks import map_blocks, reduce_blocks
from fewlabel.config import RoiConfig
from fewlabel.errors import InputDataError
from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr
from fewlabel.io.chunk_cache import CachedChunks
from fewlabel.normalize import sample_voxels
from fewlabel.roi.correction import LEVELS, checked_clahe_kernel, checked_smooth_sigma
from fewlabel.roi.kernels import kernel_voxels
from fewlabel.roi.mixture import (
    MIN_COMPONENT_WEIGHT,
    fit_gmm_1d,
    foreground_threshold,
    mixture_degeneracy,
    otsu_threshold,
)
from fewlabel.roi.morphology import ball_radii_voxels, erode_dilate
from fewlabel.roi.prior import class_prior, prior_warnings
from fewlabel.roi.views import ClaheView, QuantisedView, SmoothedView

log = logging.getLogger(__name__)


def segment_roi(
    image_zarr_path: str | Path,
    mask_out_path: str | Path,
    json_out_path: str | Path,
    *,
    params: RoiConfig,
    sample: str,
    workers: int = 1,
    seed: int = 0,
    block_shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Segment the ROI of one ingested volume; write a uint8 OME-Zarr mask and a JSON summary.

    Parameters
    ----------
    image_zarr_path : single-channel ZYX OME-Zarr (from :func:`fewlabel.io.ingest_volume`).
    mask_out_path : ROI mask, uint8 0/1 OME-Zarr with the input's chunks and voxel size,
        written atomically.
    json_out_path : summary: roi_fraction, roi_voxels, total_voxels, roi_volume_um3, gmm
        (means, variances, weights on the corrected [0, 1] scale), threshold, clip range, CLAHE
        kernel, pi and min_batch_size (= ⌈1/π⌉, when k and r are configured), warnings,
        ``adjusted`` (smoothing σ / CLAHE region raised to a minimum in voxels, see
        :func:`~fewlabel.roi.correction.checked_clahe_kernel`) and ``fallback`` (null, or how
        the foreground was found when the mixture is degenerate: ``{"method": "otsu" |
        "whole_volume", "reason"}``).
    params : :class:`~fewlabel.config.RoiConfig` (the ``roi`` config section).
    sample : sample id (for messages).
    workers : threads over blocks. seed : seed of the chunk subsampling.
    block_shape : processing block (default: the input chunks). It must be whole chunks when
        ``workers > 1``; a single block covering the volume is whole-volume processing.

    Returns the summary dictionary. Memory: one grown block per worker, ``max_fit_voxels``
    floats and a cache of decoded chunks (:class:`~fewlabel.io.chunk_cache.CachedChunks`, at
    most three z-rows of chunks and 256 MiB), independent of the number of planes; the
    quantised and the corrected volume are staged as uint16 next to ``mask_out_path`` and
    removed at the end.
    """
    from fewlabel.runtime import write_json

    volume = open_ome_zarr(image_zarr_path, sample=sample)
    source = volume.array
    if source.ndim != 3:
        raise InputDataError(
            f"expected a single-channel ZYX volume, got shape {source.shape}.",
            sample=sample,
            path=image_zarr_path,
            fix="ingest one channel (sample sheet 'channel' column).",
        )
    shape = tuple(int(s) for s in source.shape)
    voxel = tuple(float(v) for v in volume.voxel_size)
    chunks = tuple(int(c) for c in source.chunks)
    blocks_shape = tuple(int(b) for b in (block_shape or chunks))
    if workers > 1 and any(
        b % c and b < s for b, c, s in zip(blocks_shape, chunks, shape, strict=True)
    ):
        raise ValueError(f"block_shape {blocks_shape} is not whole chunks {chunks}")

    # µm -> voxels, bounded first: a voxel size in the wrong unit fails here, not hours later
    where: dict[str, Any] = {"sample": sample, "path": image_zarr_path}
    # coarse voxels: a kernel below a few voxels is raised to a minimum (warned, recorded)
    sigma_vox, sigma_fix = checked_smooth_sigma(params, voxel, shape, **where)
    kernel, kernel_fix = checked_clahe_kernel(params, voxel, shape, **where)
    adjusted = {a["key"]: a for a in (sigma_fix, kernel_fix) if a is not None}
    warnings: list[str] = [a["reason"] for a in adjusted.values()]
    for key in ("erosion_radius_um", "extend_radius_um"):
        kernel_voxels(f"roi.{key}", getattr(params, key), voxel, shape, **where)

    # 1-2. denoising and global clip percentiles from a bounded subsample of random chunks;
    # halo reads go through a cache of decoded chunks (each chunk decoded about once)
    raw: Any = CachedChunks(source) if params.smooth_sigma_um > 0 else source
    smoothed: Any = SmoothedView(raw, sigma_vox) if params.smooth_sigma_um > 0 else source
    values = sample_voxels(smoothed, max_voxels=params.max_fit_voxels, seed=seed)
    low, high = (float(v) for v in np.percentile(values, list(params.clip_percentiles)))
    del values
    if not high > low:
        raise InputDataError(
            f"volume is (nearly) constant: its {params.clip_percentiles[0]} and "
            f"{params.clip_percentiles[1]} percentiles are both {low:g}; no ROI can be found.",
            sample=sample,
            path=image_zarr_path,
            fix="check the channel and the input image (or widen roi.clip_percentiles).",
        )
    log.info(
        "sample %s: shape=%s voxel=%s µm chunks=%s smoothing σ=%s voxels clip=[%g, %g] "
        "CLAHE region=%s voxels",
        sample,
        shape,
        voxel,
        chunks,
        tuple(round(s, 3) for s in sigma_vox),
        low,
        high,
        kernel,
    )

    mask_out_path = Path(mask_out_path)
    mask_out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = mask_out_path.parent / f".{mask_out_path.name}.scratch-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        # 2a. smoothed, clipped intensities as CLAHE grey levels (uint16), computed once
        quantised = create_ome_zarr(
            scratch / "quantised",
            shape,
            np.uint16,
            chunks,
            voxel,
            name=f"{sample}:quantised",
            compression_level=1,
            pyramid=None,
        )
        map_blocks(
            _identity,
            QuantisedView(smoothed, low, high),
            quantised,
            halo=0,
            block_shape=blocks_shape,
            workers=workers,
            desc=f"{sample} smoothing",
        )
        if isinstance(raw, CachedChunks):
            raw.clear()
        # 2b. CLAHE: region histograms over the block's context, interpolation on the block
        levels = create_ome_zarr(
            scratch / "corrected",
            shape,
            np.uint16,
            chunks,
            voxel,
            name=f"{sample}:corrected",
            compression_level=1,
            pyramid=None,
        )
        map_blocks(
            _identity,
            ClaheView(CachedChunks(quantised), kernel, params.clahe_clip_limit),
            levels,
            halo=0,
            block_shape=blocks_shape,
            workers=workers,
            desc=f"{sample} CLAHE",
        )

        # 3. mixture on a bounded subsample of corrected intensities (random whole chunks)
        fit_values = sample_voxels(levels, max_voxels=params.max_fit_voxels, seed=seed + 1)
        fit_values = fit_values * np.float32(1.0 / LEVELS)
        gmm = fit_gmm_1d(fit_values, sample=sample, strict=False)
        t = params.posterior_threshold
        degenerate = mixture_degeneracy(gmm)
        fallback: dict[str, Any] | None = None
        if degenerate is not None:
            cut = otsu_threshold(fit_values)
            above = float(np.mean(fit_values >= np.float32(cut)))
            method = "otsu"
            if not MIN_COMPONENT_WEIGHT <= above <= 1 - MIN_COMPONENT_WEIGHT:
                method, cut = "whole_volume", 0.0
            fallback = {"method": method, "reason": degenerate, "intensity_threshold": cut}
            from_posterior = False
            warnings.append(
                f"degenerate intensity mixture: {degenerate}; foreground and background are not "
                + (
                    f"two Gaussians. Fallback: Otsu threshold {cut:.4g} on the corrected "
                    f"intensities ({above:.1%} of the sampled voxels above it)."
                    if method == "otsu"
                    else "two Gaussians and Otsu's split is as unbalanced. Fallback: the "
                    "whole volume is the ROI."
                )
                + " Check the image and roi.clahe_kernel_um / roi.smooth_sigma_um against the "
                "voxel size and object size (roi.json 'fallback')."
            )
            log.warning("sample %s: %s", sample, warnings[-1])
        else:
            cut, from_posterior = foreground_threshold(gmm, t)
        del fit_values
        if fallback is None and not from_posterior:
            warnings.append(
                f"P(bright | x) never exceeds posterior_threshold={t:g} (the bright "
                "component sits on the shoulder of the background); foreground = "
                f"corrected intensities >= the bright mean {cut:.4g}."
            )
            log.warning("sample %s: %s", sample, warnings[-1])
        log.info(
            "sample %s: GMM means=%s variances=%s weights=%s (%d EM iterations)",
            sample,
            _fmt(gmm.means),
            _fmt(gmm.variances),
            _fmt(gmm.weights),
            gmm.n_iter,
        )

        # 4. posterior threshold, erosion, dilation; exact block-wise with halo = sum of radii
        reach = [
            e + d
            for e, d in zip(
                ball_radii_voxels(params.erosion_radius_um, voxel),
                ball_radii_voxels(params.extend_radius_um, voxel),
                strict=True,
            )
        ]
        halo = tuple(min(r, s) for r, s in zip(reach, shape, strict=True))

        def segment(block: np.ndarray) -> np.ndarray:
            x = block.astype(np.float32)
            x *= np.float32(1.0 / LEVELS)
            foreground = x >= np.float32(cut)
            del x
            return erode_dilate(
                foreground, voxel, params.erosion_radius_um, params.extend_radius_um
            ).astype(np.uint8)

        with atomic_path(mask_out_path) as tmp:
            mask = create_ome_zarr(
                tmp,
                shape,
                np.uint8,
                chunks,
                voxel,
                name=f"{sample}:roi",
                extra_attrs={"sample": sample, "kind": "roi", "source": str(image_zarr_path)},
            )
            map_blocks(
                segment,
                CachedChunks(levels),
                mask,
                halo=halo,
                block_shape=blocks_shape,
                workers=workers,
                desc=f"{sample} ROI",
            )
            counts = reduce_blocks(
                lambda b: int(np.count_nonzero(b)), mask, block_shape=chunks, workers=workers
            )
            roi_voxels = int(sum(counts))
            if roi_voxels == 0:
                raise InputDataError(
                    "the ROI is empty (no voxel survives the posterior threshold and the erosion).",
                    sample=sample,
                    path=image_zarr_path,
                    fix="lower roi.posterior_threshold or roi.erosion_radius_um.",
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    total = int(np.prod(shape))
    summary: dict[str, Any] = {
        "sample": sample,
        "shape": list(shape),
        "voxel_size": list(voxel),
        "total_voxels": total,
        "roi_voxels": roi_voxels,
        "roi_fraction": roi_voxels / total,
        "roi_volume_um3": roi_voxels * float(np.prod(voxel)),
        "clip_range": [low, high],
        "smooth_sigma_voxels": list(sigma_vox),
        "clahe_kernel_voxels": list(kernel),
        "adjusted": adjusted,
        "fallback": fallback,
        "gmm": {
            "means": list(gmm.means),
            "variances": list(gmm.variances),
            "weights": list(gmm.weights),
            "log_likelihood": gmm.log_likelihood if np.isfinite(gmm.log_likelihood) else None,
            "n_iter": gmm.n_iter,
            "converged": gmm.converged,
            "scale": "corrected intensity in [0, 1] (after clipping + CLAHE)",
        },
        "threshold": t,
        "intensity_threshold": cut,
        "threshold_from_posterior": from_posterior,
        "pi": None,
        "min_batch_size": None,
        "warnings": warnings,
        "params": params.model_dump(mode="json"),
    }
    if params.expected_particles is not None and params.particle_radius_um is not None:
        pi, batch = class_prior(
            params.expected_particles, params.particle_radius_um, summary["roi_volume_um3"]
        )
        summary["pi"] = pi
        summary["min_batch_size"] = batch
        summary["warnings"] = warnings + prior_warnings(pi, sample=sample)
    log.info(
        "sample %s: ROI %d / %d voxels (%.2f%%), pi=%s, min batch=%s",
        sample,
        roi_voxels,
        total,
        100.0 * summary["roi_fraction"],
        summary["pi"],
        summary["min_batch_size"],
    )
    write_json(summary, json_out_path)
    return summary


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


__all__ = ["segment_roi"]
