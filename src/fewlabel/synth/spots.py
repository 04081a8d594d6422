"""Spots (Particle Tracking Challenge "virus" scenario, Chenouard et al., Nat. Methods 2014).

PSF: an anisotropic Gaussian with peak amplitude ``A_i`` centred at the sub-voxel position
``p_i``::

    S(v) = sum_i A_i * exp(-(vz-pz)^2/(2 sz^2) - (vy-py)^2/(2 sxy^2) - (vx-px)^2/(2 sxy^2))

The expected image is ``E(v) = B(v) + S(v) + C(v)`` (``B`` the background, ``C`` the clutter
blobs) and the recorded image is Poisson: ``I(v) ~ Poisson(E(v))``.

SNR (PTC definition): ``SNR = (I_obj - I_bg) / sqrt(I_obj)`` with ``I_obj`` the object's
peak intensity (background included) and ``sqrt(I_obj)`` the Poisson noise s.d. at the
object. Given ``I_bg = B(p_i)`` (the *local* background, so that every spot has the requested
SNR even on an uneven background) the peak intensity solves
``I_obj - SNR*sqrt(I_obj) - I_bg = 0``::

    sqrt(I_obj) = (SNR + sqrt(SNR^2 + 4 I_bg)) / 2,      A_i = I_obj - I_bg.

Density is given in spots per 100^3 voxels: ``low`` = 100, ``medium`` = 275, ``high`` = 600
(a 10x128x128 volume holds 16 / 45 / 98 spots); the count is ``round(density * V / 1e6)``.
Spots are at least ``min_separation`` PSF widths apart (distance in units of ``(sz, sxy,
sxy)``). Clutter: ``B(v) = b * (1 + a * f(v))`` with ``f`` a smooth field in [-1, 1] (a coarse
random grid, cubic-spline upsampled) and a few large, bright Gaussian blobs (sigma 3.5-5x
the PSF, never in the points table, kept away from the spots).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from fewlabel.errors import ConfigError
from fewlabel.synth.common import (
    SynthSpots,
    _add_gaussian,
    _points_frame,
    _sample_separated,
    _shape3,
    _smooth_field,
)

log = logging.getLogger(__name__)

DENSITIES: dict[str, float] = {"low": 100.0, "medium": 275.0, "high": 600.0}
"""Spot densities in spots per 100^3 voxels."""


def ptc_peak_intensity(snr: float, background: float) -> float:
    """Object peak intensity ``I_obj`` with ``(I_obj - I_bg)/sqrt(I_obj) = snr`` (PTC SNR)."""
    root = (snr + np.sqrt(snr * snr + 4.0 * background)) / 2.0
    return float(root * root)


# --------------------------------------------------------------------------- spots
def spot_volume(
    shape: Sequence[int] = (10, 128, 128),
    *,
    snr: float = 4.0,
    density: str | float = "medium",
    sigma_xy: float = 1.0,
    sigma_z: float = 0.7,
    background: float = 10.0,
    clutter: bool = True,
    min_separation: float = 3.0,
    background_variation: float = 0.4,
    n_clutter_blobs: int | None = None,
    seed: int = 0,
) -> SynthSpots:
    """Spots (PTC virus-like) with Poisson noise at a given PTC SNR.

    Implements ``I ~ Poisson(B + sum_i A_i G_i + C)`` with ``A_i`` solving
    ``(I_obj - I_bg)/sqrt(I_obj) = snr`` at each spot's local background (module docstring).

    Parameters
    ----------
    shape : ZYX voxels. snr : PTC SNR (> 0). density : ``low|medium|high`` or spots per
    100^3 voxels. sigma_xy, sigma_z : PSF s.d. in voxels. background : mean background
    (photons). clutter : uneven background + large out-of-class blobs. min_separation : minimum
    spot distance in PSF s.d. units. seed : random seed.
    """
    shape = _shape3(shape, "spot_volume")
    if not snr > 0:
        raise ConfigError(f"spot_volume: snr must be > 0, got {snr}.", fix="use e.g. 1, 2, 4, 7.")
    if not background > 0:
        raise ConfigError(
            f"spot_volume: background must be > 0, got {background}.", fix="use e.g. 10 (photons)."
        )
    if isinstance(density, str):
        if density not in DENSITIES:
            raise ConfigError(
                f"spot_volume: unknown density '{density}'.",
                fix=f"use one of {list(DENSITIES)} or a number of spots per 100^3 voxels.",
            )
        per_mvox = DENSITIES[density]
    else:
        per_mvox = float(density)
        if not per_mvox > 0:
            raise ConfigError(
                f"spot_volume: density must be > 0, got {density}.",
                fix="give spots per 100^3 voxels, e.g. 275.",
            )
    rng = np.random.default_rng(seed)
    size = np.asarray(shape, float)
    sigma = np.array([sigma_z, sigma_xy, sigma_xy], float)
    n_spots = max(1, int(round(per_mvox * float(np.prod(size)) / 1e6)))

    # background (smooth, uneven when clutter) and clutter blobs
    if clutter:
        field_ = _smooth_field(shape, rng)
        bg = (background * (1.0 + background_variation * field_)).astype(np.float32)
    else:
        bg = np.full(shape, background, np.float32)
    blobs: list[dict[str, Any]] = []
    if clutter:
        n_blobs = n_clutter_blobs
        if n_blobs is None:
            n_blobs = max(1, int(round(3 * float(np.prod(size)) / (10 * 128 * 128))))
        blob_sigma_factor = rng.uniform(3.5, 5.0, size=n_blobs)
        margin = np.minimum(sigma * 2, (size - 1) / 2)
        for k in range(n_blobs):
            centre = rng.uniform(margin, size - 1 - margin + 1e-9)
            blobs.append(
                {"centre": centre.tolist(), "sigma": (sigma * blob_sigma_factor[k]).tolist()}
            )

    # spots: inside [0.5, size - 1.5] (at least the nearest voxel is inside), separated,
    # away from the clutter blobs (2 blob sigmas + min_separation spot sigmas)
    low = np.minimum(0.5, (size - 1) / 2)
    high = np.maximum(size - 1.5, low)
    avoid = [
        (np.asarray(b["centre"]), 2.0 * blob_sigma_factor[k] + min_separation)
        for k, b in enumerate(blobs)
    ]
    coords = _sample_separated(rng, n_spots, low, high, sigma, min_separation, avoid)
    if len(coords) < n_spots:
        log.warning(
            "spot_volume: only %d of %d spots fit with min_separation=%g",
            len(coords),
            n_spots,
            min_separation,
        )

    clean = bg.copy()
    amplitudes = []
    for p in coords:
        local_bg = float(ndi.map_coordinates(bg, p[:, None], order=1, mode="nearest")[0])
        amplitude = ptc_peak_intensity(snr, local_bg) - local_bg
        amplitudes.append(amplitude)
        _add_gaussian(clean, p, sigma, amplitude)
    ref_amplitude = ptc_peak_intensity(snr, background) - background
    for blob in blobs:
        blob["amplitude"] = float(ref_amplitude * rng.uniform(1.0, 2.0))
        _add_gaussian(clean, blob["centre"], blob["sigma"], blob["amplitude"], radius=3.0)

    image = rng.poisson(clean.astype(np.float64)).astype(np.float32)
    meta = {
        "kind": "spots",
        "shape": list(shape),
        "snr": float(snr),
        "density": density,
        "density_per_100cube": per_mvox,
        "n_spots": len(coords),
        "sigma_zyx": sigma.tolist(),
        "background": float(background),
        "clutter": bool(clutter),
        "min_separation": float(min_separation),
        "seed": int(seed),
        "peak_intensity": ptc_peak_intensity(snr, background),
        "amplitudes": amplitudes,
        "clutter_blobs": blobs,
        "snr_definition": "(I_obj - I_bg) / sqrt(I_obj), Poisson noise (PTC)",
    }
    return SynthSpots(image=image, points=_points_frame(coords), meta=meta, clean=clean)


__all__ = ["DENSITIES", "ptc_peak_intensity", "spot_volume"]
