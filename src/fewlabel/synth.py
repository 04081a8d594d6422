"""Synthetic volumes with exact ground truth: spots, centriole-like particles, paired nuclei.

Every generator is deterministic given ``seed`` (``numpy.random.default_rng(seed)``) and
returns ZYX ``float32`` arrays plus a points table (``z, y, x`` voxels, 0-based, sub-voxel).

Spots (Particle Tracking Challenge "virus" scenario, Chenouard et al., Nat. Methods 2014)
------------------------------------------------------------------------------------------
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

Centrioles
----------
Each particle is a mother barrel and a shorter, roughly perpendicular daughter barrel. A
barrel of radius ``R`` and length ``L`` around axis ``u`` is 9 "triplets" (lines parallel to
``u`` at angles ``2 pi k / 9``); points ``c + t u + R (cos th e1 + sin th e2)`` are splatted
(trilinear) into the grid, each triplet is dropped with probability ``drop_fraction``
(partial labelling), and the volume is blurred with an anisotropic Gaussian PSF
(``sigma = psf_sigma_um / voxel_size``), then Poisson + Gaussian read noise. Artefacts: bright
specks (point-like) and large blobs. Points are the particle centres (mean of the undropped
model points of both barrels).

Nuclei (paired fluorescence / label-free)
-----------------------------------------
Ellipsoids ``E_i = {x : q_i(x) <= 1}``, ``q_i(x) = ||diag(1/a_i) R_i^T (x - c_i)||`` in
physical units (z scaled by ``anisotropy`` = z spacing / xy spacing). Nuclei are placed
next to each other (centre distance a factor 0.8-1.05 of the sum of the extents along the
joining direction) and compete: voxel ``x`` gets ``argmin_i q_i(x)`` if that minimum is <= 1,
so neighbours touch along a shared face but never overlap. Fluorescence = nucleus brightness x
chromatin texture x dark nucleoli, PSF blur, Poisson + read noise. Label-free = a phase /
defocus image of a refractive-index map ``n`` (nuclei, denser nucleoli, a cytoplasm shell
and granules that the nuclear stain does not show)::

    LF = 1 + g1 * (G_s1 * n - G_s2 * n) + g2 * d/dz (G_s1 * n) + illumination + noise

(a difference of Gaussians = phase-contrast halo, plus a defocus term), so it is not a
monotone function of the fluorescence.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from fewlabel.config import DemoParams, ZYXInt, zyx
from fewlabel.errors import ConfigError

log = logging.getLogger(__name__)

DENSITIES: dict[str, float] = {"low": 100.0, "medium": 275.0, "high": 600.0}
"""Spot densities in spots per 100^3 voxels."""

POINT_COLUMNS = ["z", "y", "x"]


# --------------------------------------------------------------------------- containers
@dataclass
class SynthSpots:
    """A synthetic volume with point ground truth.

    ``image`` float32 ZYX (Poisson counts), ``points`` z,y,x voxels, ``meta`` JSON-able facts
    (parameters, per-spot amplitudes, clutter blobs), ``clean`` the noise-free expected image.
    """

    image: np.ndarray
    points: pd.DataFrame
    meta: dict[str, Any]
    clean: np.ndarray | None = None


@dataclass
class SynthNuclei:
    """Paired nuclei volumes: instance ``labels`` (uint32 ZYX), ``fluorescence`` and
    ``label_free`` (float32 ZYX), ``points`` = label centroids (z,y,x,label), ``meta``."""

    labels: np.ndarray
    fluorescence: np.ndarray
    label_free: np.ndarray
    points: pd.DataFrame
    meta: dict[str, Any]


# --------------------------------------------------------------------------- helpers
def derive_seed(seed: int, *names: str) -> int:
    """A stable 32-bit seed for one named file/part, derived from the run seed."""
    key = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(n.encode()) for n in names]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _shape3(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """A generator's shape as :data:`~fewlabel.config.ZYXInt`; a (y, x) shape is one plane."""
    if isinstance(shape, (list, tuple)) and len(shape) == 2:
        shape = (1, *shape)
    return zyx(shape, f"{what} shape", ZYXInt, broadcast=False)


def _add_gaussian(image: np.ndarray, centre: Sequence[float], sigma: Sequence[float],
                  amplitude: float, *, radius: float = 4.0) -> None:
    """Add ``amplitude * exp(-sum((v - c)^2 / (2 sigma^2)))`` in place (patch of ``radius``
    sigmas)."""
    lo = [max(int(np.floor(c - radius * s)), 0) for c, s in zip(centre, sigma, strict=True)]
    hi = [min(int(np.ceil(c + radius * s)) + 1, n)
          for c, s, n in zip(centre, sigma, image.shape, strict=True)]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return
    profiles = [np.exp(-((np.arange(lo_, h) - c) ** 2) / (2.0 * s * s))
                for lo_, h, c, s in zip(lo, hi, centre, sigma, strict=True)]
    patch = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += (amplitude * patch).astype(image.dtype)


def _smooth_field(shape: tuple[int, int, int], rng: np.random.Generator,
                  cells: Sequence[int] = (2, 4, 4)) -> np.ndarray:
    """A smooth random field in [-1, 1]: a coarse uniform grid, cubic-spline upsampled."""
    grid = rng.uniform(-1.0, 1.0, size=tuple(int(c) + 1 for c in cells))
    zoom = [max(n, 2) / g for n, g in zip(shape, grid.shape, strict=True)]
    up = ndi.zoom(grid, zoom, order=3, mode="nearest", grid_mode=True)
    up = up[: shape[0], : shape[1], : shape[2]]
    if up.shape != shape:  # degenerate (size-1) axes
        up = np.resize(up, shape)
    peak = np.abs(up).max()
    return (up / peak if peak > 0 else up).astype(np.float32)


def _sample_separated(rng: np.random.Generator, n: int, low: np.ndarray, high: np.ndarray,
                      scale: np.ndarray, min_dist: float, avoid: Sequence[tuple[np.ndarray,
                      float]] = (), max_tries: int = 200) -> np.ndarray:
    """Up to ``n`` uniform points in the box [low, high] with pairwise scaled distance
    ``||(p - q)/scale|| >= min_dist`` (and away from ``avoid`` = (centre, scaled radius))."""
    points: list[np.ndarray] = []
    for _ in range(n):
        for _try in range(max_tries):
            p = rng.uniform(low, high)
            if points and min_dist > 0:
                d = np.sqrt((((np.asarray(points) - p) / scale) ** 2).sum(axis=1)).min()
                if d < min_dist:
                    continue
            if any(np.sqrt((((c - p) / scale) ** 2).sum()) < r for c, r in avoid):
                continue
            points.append(p)
            break
    return np.asarray(points, dtype=float).reshape(-1, 3)


def _points_frame(coords: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(coords, float).reshape(-1, 3), columns=POINT_COLUMNS)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (normalised Gaussian quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


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
        raise ConfigError(f"spot_volume: background must be > 0, got {background}.",
                          fix="use e.g. 10 (photons).")
    if isinstance(density, str):
        if density not in DENSITIES:
            raise ConfigError(f"spot_volume: unknown density '{density}'.",
                              fix=f"use one of {list(DENSITIES)} or a number of spots per "
                                  "100^3 voxels.")
        per_mvox = DENSITIES[density]
    else:
        per_mvox = float(density)
        if not per_mvox > 0:
            raise ConfigError(f"spot_volume: density must be > 0, got {density}.",
                              fix="give spots per 100^3 voxels, e.g. 275.")
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
            blobs.append({"centre": centre.tolist(),
                          "sigma": (sigma * blob_sigma_factor[k]).tolist()})

    # spots: inside [0.5, size - 1.5] (at least the nearest voxel is inside), separated,
    # away from the clutter blobs (2 blob sigmas + min_separation spot sigmas)
    low = np.minimum(0.5, (size - 1) / 2)
    high = np.maximum(size - 1.5, low)
    avoid = [(np.asarray(b["centre"]), 2.0 * blob_sigma_factor[k] + min_separation)
             for k, b in enumerate(blobs)]
    coords = _sample_separated(rng, n_spots, low, high, sigma, min_separation, avoid)
    if len(coords) < n_spots:
        log.warning("spot_volume: only %d of %d spots fit with min_separation=%g", len(coords),
                    n_spots, min_separation)

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
        "kind": "spots", "shape": list(shape), "snr": float(snr), "density": density,
        "density_per_100cube": per_mvox, "n_spots": len(coords), "sigma_zyx": sigma.tolist(),
        "background": float(background), "clutter": bool(clutter),
        "min_separation": float(min_separation), "seed": int(seed),
        "peak_intensity": ptc_peak_intensity(snr, background), "amplitudes": amplitudes,
        "clutter_blobs": blobs,
        "snr_definition": "(I_obj - I_bg) / sqrt(I_obj), Poisson noise (PTC)",
    }
    return SynthSpots(image=image, points=_points_frame(coords), meta=meta, clean=clean)


# --------------------------------------------------------------------------- centrioles
def _barrel_points(centre: np.ndarray, axis: np.ndarray, radius: float, length: float,
                   step: float, rng: np.random.Generator, drop_fraction: float,
                   n_triplets: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Model points of one barrel (physical units): all, and those kept after dropping."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(-length / 2, length / 2 + 1e-9, step)
    keep = rng.random(n_triplets) >= drop_fraction
    all_pts, kept = [], []
    for k in range(n_triplets):
        theta = phase + 2 * np.pi * k / n_triplets
        ring = radius * (np.cos(theta) * e1 + np.sin(theta) * e2)
        pts = centre + t[:, None] * axis + ring
        all_pts.append(pts)
        if keep[k]:
            kept.append(pts)
    empty = np.zeros((0, 3))
    return np.concatenate(all_pts), (np.concatenate(kept) if kept else empty)


def _splat(grid: np.ndarray, coords: np.ndarray, weights: np.ndarray) -> None:
    """Trilinear deposit of ``weights`` at voxel ``coords`` (N, 3) into ``grid`` in place."""
    if len(coords) == 0:
        return
    base = np.floor(coords).astype(int)
    frac = coords - base
    for corner in np.ndindex(2, 2, 2):
        off = np.asarray(corner)
        idx = base + off
        w = weights * np.prod(np.where(off, frac, 1 - frac), axis=1)
        ok = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
        np.add.at(grid, (idx[ok, 0], idx[ok, 1], idx[ok, 2]), w[ok])


def centriole_volume(
    shape: Sequence[int] = (32, 128, 128),
    *,
    n_particles: int = 10,
    voxel_size: Sequence[float] = (0.1, 0.05, 0.05),
    barrel_radius_um: float = 0.2,
    barrel_length_um: float = 0.5,
    daughter_fraction: float = 0.6,
    psf_sigma_um: Sequence[float] = (0.1, 0.04, 0.04),
    drop_fraction: float = 0.25,
    photons: float = 60.0,
    background: float = 20.0,
    read_noise: float = 2.0,
    n_specks: int | None = None,
    n_blobs: int | None = None,
    seed: int = 0,
) -> SynthSpots:
    """Centriole-like particles (paired 9-fold barrels) in random 3D orientations.

    Implements the barrel model of the module docstring: splatted triplet lines, random triplet
    dropping (``drop_fraction``), Gaussian PSF blur ``psf_sigma_um / voxel_size``, Poisson +
    Gaussian read noise, bright specks and blobs as artefacts. Points are particle centres in
    voxels. ``photons`` is the peak signal of one fully labelled triplet (before noise).
    """
    shape = _shape3(shape, "centriole_volume")
    voxel = np.asarray(voxel_size, float)
    if voxel.shape != (3,) or not np.all(voxel > 0):
        raise ConfigError(f"centriole_volume: voxel_size {voxel_size!r} is not 3 positive "
                          "numbers.", fix="give [z, y, x] in µm.")
    rng = np.random.default_rng(seed)
    size_um = np.asarray(shape, float) * voxel
    extent = barrel_length_um / 2 + barrel_radius_um + daughter_fraction * barrel_length_um
    margin = np.minimum(np.full(3, extent * 0.75), (size_um - voxel) / 2)
    centres_um = _sample_separated(rng, int(n_particles), margin, size_um - voxel - margin,
                                   np.ones(3), 2.0 * extent)
    step = float(voxel.min()) / 2
    grid = np.zeros(shape, np.float64)
    points = []
    for centre in centres_um:
        rot = _random_rotation(rng)
        u, v = rot[:, 0], rot[:, 1]
        tilt = np.deg2rad(rng.uniform(-15, 15))  # perpendicular-ish daughter
        v = np.cos(tilt) * v + np.sin(tilt) * u
        v /= np.linalg.norm(v)
        lm, ld = barrel_length_um, daughter_fraction * barrel_length_um
        # daughter grows from the mother's proximal wall, outward along v
        d_centre = -u * (0.25 * lm) + v * (barrel_radius_um * 1.3 + ld / 2)
        m_all, m_kept = _barrel_points(np.zeros(3), u, barrel_radius_um, lm, step, rng,
                                       drop_fraction)
        d_all, d_kept = _barrel_points(d_centre, v, barrel_radius_um, ld, step, rng,
                                       drop_fraction)
        offset = centre - np.concatenate([m_all, d_all]).mean(axis=0)  # centre of the model
        kept = np.concatenate([m_kept, d_kept]) + offset
        brightness = rng.lognormal(0.0, 0.25)
        _splat(grid, kept / voxel, np.full(len(kept), brightness * step))
        points.append(centre / voxel)
    sigma_vox = np.asarray(psf_sigma_um, float) / voxel
    # normalise: a fully labelled triplet line (weight 1 per µm) along x peaks at ``photons``;
    # its blurred peak is (weight per voxel along x) / (2 pi sigma_z sigma_y)
    line_peak = voxel[2] / (2 * np.pi * sigma_vox[0] * sigma_vox[1])
    signal = ndi.gaussian_filter(grid, sigma_vox, mode="constant") * (photons / line_peak)

    n_specks = int(n_specks if n_specks is not None else max(1, round(n_particles / 2)))
    n_blobs = int(n_blobs if n_blobs is not None else max(1, round(n_particles / 5)))
    vol_size = np.asarray(shape, float)
    artefacts = []
    for _ in range(n_specks):
        c = rng.uniform(0, vol_size - 1)
        _add_gaussian(signal, c, sigma_vox, photons * rng.uniform(2.0, 4.0))
        artefacts.append({"kind": "speck", "centre": c.tolist()})
    for _ in range(n_blobs):
        c = rng.uniform(0, vol_size - 1)
        s = sigma_vox * rng.uniform(5.0, 8.0)
        _add_gaussian(signal, c, s, photons * rng.uniform(0.5, 1.0), radius=3.0)
        artefacts.append({"kind": "blob", "centre": c.tolist(), "sigma": s.tolist()})
    bg = background * (1.0 + 0.3 * _smooth_field(shape, rng))
    clean = (bg + signal).astype(np.float32)
    image = rng.poisson(clean.astype(np.float64)) + rng.normal(0, read_noise, size=shape)
    meta = {
        "kind": "centrioles", "shape": list(shape), "voxel_size": voxel.tolist(),
        "n_particles": len(points), "barrel_radius_um": barrel_radius_um,
        "barrel_length_um": barrel_length_um, "daughter_fraction": daughter_fraction,
        "psf_sigma_um": list(psf_sigma_um), "drop_fraction": drop_fraction, "photons": photons,
        "background": background, "read_noise": read_noise, "artefacts": artefacts,
        "seed": int(seed),
    }
    return SynthSpots(image=image.astype(np.float32), points=_points_frame(np.asarray(points)),
                      meta=meta, clean=clean)


# --------------------------------------------------------------------------- nuclei
def _extent_along(inv_axes_rot: np.ndarray, direction: np.ndarray) -> float:
    """Distance from an ellipsoid's centre to its surface along the unit ``direction``."""
    return float(1.0 / np.linalg.norm(inv_axes_rot @ direction))


def _place_nuclei(rng: np.random.Generator, n: int, size_phys: np.ndarray,
                  forms: list[np.ndarray], extents_z: np.ndarray) -> np.ndarray:
    """Centres (physical units) of touching / near-touching ellipsoids (attachment growth)."""
    def inside(c: np.ndarray, i: int) -> bool:
        margin = np.array([0.6 * extents_z[i], 4.0, 4.0])
        margin = np.minimum(margin, size_phys / 2 - 1e-6)
        return bool(np.all(c >= margin) and np.all(c <= size_phys - margin))

    def clear(c: np.ndarray, i: int, centres: list[np.ndarray], skip: int = -1) -> bool:
        for k, ck in enumerate(centres):
            if k == skip:
                continue
            d = c - ck
            dist = np.linalg.norm(d)
            if dist == 0:
                return False
            u = d / dist
            if dist < 0.8 * (_extent_along(forms[k], u) + _extent_along(forms[i], u)):
                return False
        return True

    centres: list[np.ndarray] = [rng.uniform(size_phys * 0.3, size_phys * 0.7)]
    for i in range(1, n):
        placed = None
        for attempt in range(300):
            attach = attempt < 200 and (i == 1 or rng.random() < 0.8)
            if attach:
                k = int(rng.integers(len(centres)))
                u = rng.normal(size=3) * np.array([0.35, 1.0, 1.0])  # prefer lateral neighbours
                u /= np.linalg.norm(u)
                factor = 0.85 if i == 1 else rng.uniform(0.8, 1.05)
                c = centres[k] + u * factor * (_extent_along(forms[k], u)
                                               + _extent_along(forms[i], u))
                ok = inside(c, i) and clear(c, i, centres, skip=k)
            else:
                c = rng.uniform(np.zeros(3), size_phys)
                ok = inside(c, i) and clear(c, i, centres)
            if ok:
                placed = c
                break
        if placed is None:
            log.warning("nuclei_pair: placed only %d of %d nuclei", len(centres), n)
            break
        centres.append(placed)
    return np.asarray(centres)


def nuclei_pair(
    shape: Sequence[int] = (24, 64, 64),
    *,
    n_nuclei: int = 8,
    radius_range: Sequence[float] = (5.0, 9.0),
    anisotropy: float = 1.0,
    psf_sigma: Sequence[float] = (1.5, 1.0, 1.0),
    photons: float = 200.0,
    seed: int = 0,
) -> SynthNuclei:
    """Touching ellipsoidal nuclei with a fluorescence and a paired label-free channel.

    Implements ``label(x) = argmin_i q_i(x)`` where ``min_i q_i(x) <= 1`` (module docstring),
    fluorescence = brightness x texture x nucleoli (blur, Poisson + read noise) and
    ``LF = 1 + g1 (G_s1*n - G_s2*n) + g2 d/dz(G_s1*n) + illumination + noise``.

    Parameters
    ----------
    shape : ZYX voxels. n_nuclei : number of nuclei. radius_range : largest semi-axis range in
    xy voxels. anisotropy : z spacing / xy spacing (z semi-axes in voxels are divided by it).
    psf_sigma : PSF s.d. in physical units of xy voxels (z, y, x). seed : random seed.
    """
    shape = _shape3(shape, "nuclei_pair")
    r_lo, r_hi = (float(r) for r in radius_range)
    if not 0 < r_lo <= r_hi or not anisotropy > 0 or n_nuclei < 1:
        raise ConfigError(f"nuclei_pair: invalid radius_range {radius_range!r}, anisotropy "
                          f"{anisotropy} or n_nuclei {n_nuclei}.",
                          fix="use 0 < r_min <= r_max, anisotropy > 0, n_nuclei >= 1.")
    rng = np.random.default_rng(seed)
    spacing = np.array([anisotropy, 1.0, 1.0])
    size_phys = np.asarray(shape, float) * spacing
    n = int(n_nuclei)
    axes, rots, forms = [], [], []
    for _ in range(n):
        r = rng.uniform(r_lo, r_hi)
        a = r * np.array([rng.uniform(0.55, 0.8), rng.uniform(0.75, 1.0), 1.0])
        # flattened nuclei: shortest axis near z (random tilt, half of a uniform rotation),
        # random in-plane orientation
        phi = rng.uniform(0, 2 * np.pi)
        spin = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(phi), -np.sin(phi)],
                         [0.0, np.sin(phi), np.cos(phi)]])
        rot = _small_rotation(_random_rotation(rng), 0.35) @ spin
        axes.append(a)
        rots.append(rot)
        forms.append(np.diag(1.0 / a) @ rot.T)
    extents_z = np.array([_extent_along(f, np.array([1.0, 0, 0])) for f in forms])
    centres = _place_nuclei(rng, n, size_phys, forms, extents_z)
    n = len(centres)

    q = np.stack([_ellipsoid_q(shape, spacing, centres[i], forms[i]) for i in range(n)])
    owner = np.argmin(q, axis=0)
    qmin = np.take_along_axis(q, owner[None], axis=0)[0]
    labels = np.where(qmin <= 1.0, owner + 1, 0).astype(np.uint32)
    labels = _keep_largest_components(labels)

    # nucleoli (a few small dense ellipsoids inside each nucleus), in normalised coordinates
    nucleoli = np.zeros(shape, bool)
    for i in range(n):
        for _ in range(int(rng.integers(1, 3))):
            off = rng.normal(size=3)
            off = off / np.linalg.norm(off) * rng.uniform(0.0, 0.45)
            local = _ellipsoid_q(shape, spacing, centres[i], forms[i], offset=off)
            nucleoli |= (local <= rng.uniform(0.18, 0.28)) & (labels == i + 1)
    inside = labels > 0
    ids = np.arange(1, n + 1)

    # fluorescence: brightness x chromatin texture x dark nucleoli, blurred, noisy
    brightness = np.concatenate([[0.0], rng.uniform(0.6, 1.4, size=n)])
    chromatin = ndi.gaussian_filter(rng.normal(size=shape), 1.0 / spacing)
    chromatin /= chromatin.std() + 1e-12
    stain = brightness[labels] * (1.0 + 0.25 * chromatin) * np.where(nucleoli, 0.35, 1.0)
    stain = np.clip(stain, 0, None) * inside
    psf_vox = np.asarray(psf_sigma, float) / spacing
    fluo_clean = 5.0 + photons * ndi.gaussian_filter(stain, psf_vox)
    fluorescence = (rng.poisson(fluo_clean) + rng.normal(0.0, 2.0, size=shape)).astype(
        np.float32)

    # label-free: refractive-index map incl. cytoplasm and granules, DoG + defocus transform
    from skimage.segmentation import expand_labels

    cells = expand_labels(labels, distance=4.0, spacing=spacing)
    cytoplasm = (cells > 0) & ~inside
    texture2 = ndi.gaussian_filter(rng.normal(size=shape), 1.5 / spacing)
    texture2 /= texture2.std() + 1e-12
    mixed = 0.5 * chromatin + 0.87 * texture2
    granules = ndi.gaussian_filter((rng.random(shape) < 0.02).astype(float) * cytoplasm,
                                   0.7 / spacing) * 4.0
    ri = (inside * (0.020 + 0.004 * mixed) + nucleoli * 0.015
          + cytoplasm * (0.010 + 0.003 * texture2) + granules * 0.01)
    s1 = np.array([1.2, 1.0, 1.0]) / spacing
    s2 = np.array([4.0, 3.0, 3.0]) / spacing
    near = ndi.gaussian_filter(ri, s1)
    dog = near - ndi.gaussian_filter(ri, s2)
    defocus = np.gradient(near, axis=0) if shape[0] > 1 else np.zeros(shape)
    illumination = 0.05 * _smooth_field(shape, rng, cells=(1, 2, 2))
    label_free = (1.0 + 8.0 * dog + 6.0 * defocus + illumination
                  + rng.normal(0.0, 0.01, size=shape)).astype(np.float32)

    present = [i for i in ids if np.any(labels == i)]
    centroids = ndi.center_of_mass(inside, labels, present)
    points = _points_frame(np.asarray(centroids))
    points["label"] = np.asarray(present, dtype=np.int64)
    meta = {
        "kind": "nuclei", "shape": list(shape), "n_nuclei": len(present),
        "radius_range": [r_lo, r_hi], "anisotropy": float(anisotropy),
        "centres_zyx_voxels": (centres / spacing).tolist(),
        "semi_axes_xy_voxels": [a.tolist() for a in axes], "psf_sigma": list(psf_sigma),
        "photons": photons, "seed": int(seed),
    }
    return SynthNuclei(labels=labels, fluorescence=fluorescence, label_free=label_free,
                       points=points, meta=meta)


def _ellipsoid_q(shape: tuple[int, int, int], spacing: np.ndarray, centre: np.ndarray,
                 form: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """``q(x) = ||form (x - centre) - offset||`` on the voxel grid (physical ``x``), float32."""
    d = [(np.arange(n) * sp - c).astype(np.float32)
         for n, sp, c in zip(shape, spacing, centre, strict=True)]
    d = [d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]]
    total = np.zeros(shape, np.float32)
    for k in range(3):
        comp = form[k, 0] * d[0] + form[k, 1] * d[1] + form[k, 2] * d[2]
        if offset is not None:
            comp = comp - offset[k]
        total += comp * comp
    return np.sqrt(total)


def _small_rotation(rot: np.ndarray, fraction: float) -> np.ndarray:
    """A rotation ``fraction`` of the way from the identity to ``rot`` (axis-angle scaling)."""
    angle = np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))
    if angle < 1e-8:
        return np.eye(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-8:
        return np.eye(3)
    axis /= norm
    theta = angle * fraction
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def _keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 6-connected component of every label (others -> 0)."""
    out = labels.copy()
    for index, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        lab = index + 1
        mask = labels[sl] == lab
        comp, count = ndi.label(mask)
        if count > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            region = out[sl]
            region[mask & (comp != int(np.argmax(sizes)))] = 0
    return out


# --------------------------------------------------------------------------- demo data
DEMO_SPLITS = ("train", "val", "test")


def write_tiff(path: str | Path, data: np.ndarray, voxel_size: Sequence[float]) -> None:
    """Write a ZYX array atomically as an ImageJ hyperstack TIFF with voxel size (µm).

    uint8/uint16/float32 go to ImageJ TIFF (wider unsigned integers, e.g. uint32 labels, are
    stored as uint16 when their maximum allows); anything else goes to OME-TIFF.
    """
    import tifffile

    from fewlabel.io import atomic_path

    vz, vy, vx = (float(v) for v in voxel_size)
    if data.dtype.kind == "u" and data.dtype.itemsize > 2 and int(data.max(initial=0)) < 65536:
        data = data.astype(np.uint16)
    with atomic_path(path) as tmp:
        if data.dtype in (np.uint8, np.uint16, np.float32):
            tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / vx, 1.0 / vy),
                             metadata={"axes": "ZYX", "spacing": vz, "unit": "um"})
        else:
            tifffile.imwrite(tmp, data, ome=True, photometric="minisblack",
                             metadata={"axes": "ZYX", "PhysicalSizeZ": vz, "PhysicalSizeY": vy,
                                       "PhysicalSizeX": vx})


def _write_csv(points: pd.DataFrame, path: Path) -> None:
    from fewlabel.io import write_points_csv

    write_points_csv(points[POINT_COLUMNS], path)


def make_demo(outdir: str | Path, *, params: DemoParams | None = None,
              seed: int = 0) -> list[dict[str, str]]:
    """Write the demo inputs and return their sample-sheet rows.

    Files (for each split train, val, test): ``spots_{split}.tif`` (uint16 Poisson counts)
    + ``spots_{split}.csv``; ``nuclei_{split}_labelfree.tif``, ``nuclei_{split}_fluo.tif``
    (float32), ``nuclei_{split}_labels.tif`` (uint16 instance ids) + ``nuclei_{split}.csv``
    (centroids); ``manifest.json`` written last (its presence means complete). Each file set
    uses its own seed ``derive_seed(seed, kind, split)``. Rows have keys sample, image,
    channel, voxel_size, split, task, points, labels, target (paths as ``outdir/<name>``).
    """
    from fewlabel.runtime import checksum, write_json

    params = params if params is not None else DemoParams()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()  # an old manifest must not vouch for a partial rewrite
    p = params
    rows: list[dict[str, str]] = []
    files: list[str] = []

    def vs_text(v: Sequence[float]) -> str:
        return ",".join(f"{float(x):g}" for x in v)

    for split in DEMO_SPLITS:
        s = spot_volume(p.spots_shape, snr=p.spots_snr, density=p.spots_density,
                        sigma_xy=p.spots_sigma_xy, sigma_z=p.spots_sigma_z,
                        background=p.spots_background, clutter=p.spots_clutter,
                        seed=derive_seed(seed, "spots", split))
        image = np.clip(np.rint(s.image), 0, 65535).astype(np.uint16)
        write_tiff(outdir / f"spots_{split}.tif", image, p.spots_voxel_size)
        _write_csv(s.points, outdir / f"spots_{split}.csv")
        files += [f"spots_{split}.tif", f"spots_{split}.csv"]
        rows.append({"sample": f"spots_{split}", "image": str(outdir / f"spots_{split}.tif"),
                     "channel": "", "voxel_size": vs_text(p.spots_voxel_size), "split": split,
                     "task": "detect", "points": str(outdir / f"spots_{split}.csv"),
                     "labels": "", "target": ""})

    for split in DEMO_SPLITS:
        anisotropy = float(p.nuclei_voxel_size[0]) / float(p.nuclei_voxel_size[2])
        n = nuclei_pair(p.nuclei_shape, n_nuclei=p.nuclei_count,
                        radius_range=p.nuclei_radius_range, anisotropy=anisotropy,
                        seed=derive_seed(seed, "nuclei", split))
        stem = f"nuclei_{split}"
        write_tiff(outdir / f"{stem}_labelfree.tif", n.label_free, p.nuclei_voxel_size)
        write_tiff(outdir / f"{stem}_fluo.tif", n.fluorescence, p.nuclei_voxel_size)
        write_tiff(outdir / f"{stem}_labels.tif", n.labels, p.nuclei_voxel_size)
        _write_csv(n.points, outdir / f"{stem}.csv")
        files += [f"{stem}_labelfree.tif", f"{stem}_fluo.tif", f"{stem}_labels.tif",
                  f"{stem}.csv"]
        rows.append({"sample": stem, "image": str(outdir / f"{stem}_labelfree.tif"),
                     "channel": "", "voxel_size": vs_text(p.nuclei_voxel_size), "split": split,
                     "task": "segment", "points": str(outdir / f"{stem}.csv"),
                     "labels": str(outdir / f"{stem}_labels.tif"),
                     "target": str(outdir / f"{stem}_fluo.tif")})
    write_json({"seed": int(seed), "params": params.model_dump(mode="json"),
                "files": {name: checksum(outdir / name) for name in files},
                "samples": rows}, manifest_path)
    log.info("demo data: %d files in %s", len(files), outdir)
    return rows
