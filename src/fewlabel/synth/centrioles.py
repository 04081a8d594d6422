"""Centriole-like particles: paired 9-fold barrels in random 3D orientations.

Each particle is a mother barrel and a shorter, roughly perpendicular daughter barrel. A
barrel of radius ``R`` and length ``L`` around axis ``u`` is 9 "triplets" (lines parallel to
``u`` at angles ``2 pi k / 9``); points ``c + t u + R (cos th e1 + sin th e2)`` are splatted
(trilinear) into the grid, each triplet is dropped with probability ``drop_fraction``
(partial labelling), and the volume is blurred with an anisotropic Gaussian PSF
(``sigma = psf_sigma_um / voxel_size``), then Poisson + Gaussian read noise. Artefacts: bright
specks (point-like) and large blobs. Points are the particle centres (mean of the undropped
model points of both barrels).

Crowding: ``n_clusters > 0`` places the particles in clusters (as the SP-Fluo generator of
Vedrenne et al. does): cluster centres uniform in the volume, each particle drawn from an
isotropic Gaussian of standard deviation ``cluster_sigma_um`` around a random cluster centre;
``min_separation_um`` (default: twice the particle extent) is kept between all centres, so a
dense or clustered volume holds fewer particles than asked when they do not fit (the points
table says how many).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from fewlabel.errors import ConfigError
from fewlabel.synth.common import (
    SynthSpots,
    _add_gaussian,
    _points_frame,
    _random_rotation,
    _sample_separated,
    _shape3,
    _smooth_field,
)


def _barrel_points(
    centre: np.ndarray,
    axis: np.ndarray,
    radius: float,
    length: float,
    step: float,
    rng: np.random.Generator,
    drop_fraction: float,
    n_triplets: int = 9,
) -> tuple[np.ndarray, np.ndarray]:
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


def _sample_clustered(
    rng: np.random.Generator,
    n: int,
    low: np.ndarray,
    high: np.ndarray,
    n_clusters: int,
    sigma_um: float,
    min_dist: float,
    max_tries: int = 200,
) -> np.ndarray:
    """Up to ``n`` centres (µm) in ``[low, high]``: each from an isotropic Gaussian
    (``sigma_um``) around one of ``n_clusters`` uniform cluster centres, pairwise distance
    ``>= min_dist`` (rejection)."""
    clusters = rng.uniform(low, high, size=(n_clusters, 3))
    points: list[np.ndarray] = []
    for _ in range(n):
        for _try in range(max_tries):
            p = clusters[rng.integers(n_clusters)] + rng.normal(0.0, sigma_um, 3)
            if np.any(p < low) or np.any(p > high):
                continue
            if points and np.sqrt(((np.asarray(points) - p) ** 2).sum(axis=1)).min() < min_dist:
                continue
            points.append(p)
            break
    return np.asarray(points, dtype=float).reshape(-1, 3)


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
    n_clusters: int = 0,
    cluster_sigma_um: float = 1.0,
    min_separation_um: float | None = None,
    seed: int = 0,
) -> SynthSpots:
    """Centriole-like particles (paired 9-fold barrels) in random 3D orientations.

    Implements the barrel model of the module docstring: splatted triplet lines, random triplet
    dropping (``drop_fraction``), Gaussian PSF blur ``psf_sigma_um / voxel_size``, Poisson +
    Gaussian read noise, bright specks and blobs as artefacts. Points are particle centres in
    voxels. ``photons`` is the peak signal of one fully labelled triplet (before noise).
    ``n_clusters``, ``cluster_sigma_um``, ``min_separation_um``: crowding (module docstring);
    ``n_clusters = 0`` keeps the uniform placement (same volumes as before for a seed).
    """
    shape = _shape3(shape, "centriole_volume")
    voxel = np.asarray(voxel_size, float)
    if voxel.shape != (3,) or not np.all(voxel > 0):
        raise ConfigError(
            f"centriole_volume: voxel_size {voxel_size!r} is not 3 positive numbers.",
            fix="give [z, y, x] in µm.",
        )
    rng = np.random.default_rng(seed)
    size_um = np.asarray(shape, float) * voxel
    extent = barrel_length_um / 2 + barrel_radius_um + daughter_fraction * barrel_length_um
    margin = np.minimum(np.full(3, extent * 0.75), (size_um - voxel) / 2)
    min_dist = 2.0 * extent if min_separation_um is None else float(min_separation_um)
    if n_clusters < 0 or cluster_sigma_um <= 0 or min_dist < 0:
        raise ConfigError(
            f"centriole_volume: n_clusters={n_clusters}, cluster_sigma_um={cluster_sigma_um}, "
            f"min_separation_um={min_separation_um} out of range.",
            fix="give n_clusters >= 0, cluster_sigma_um > 0 and min_separation_um >= 0.",
        )
    if n_clusters:
        centres_um = _sample_clustered(
            rng, int(n_particles), margin, size_um - voxel - margin, int(n_clusters),
            float(cluster_sigma_um), min_dist,
        )  # fmt: skip
    else:
        centres_um = _sample_separated(
            rng, int(n_particles), margin, size_um - voxel - margin, np.ones(3), min_dist
        )
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
        m_all, m_kept = _barrel_points(
            np.zeros(3), u, barrel_radius_um, lm, step, rng, drop_fraction
        )
        d_all, d_kept = _barrel_points(d_centre, v, barrel_radius_um, ld, step, rng, drop_fraction)
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
        "kind": "centrioles",
        "shape": list(shape),
        "voxel_size": voxel.tolist(),
        "n_particles": len(points),
        "barrel_radius_um": barrel_radius_um,
        "barrel_length_um": barrel_length_um,
        "daughter_fraction": daughter_fraction,
        "psf_sigma_um": list(psf_sigma_um),
        "drop_fraction": drop_fraction,
        "n_clusters": int(n_clusters),
        "cluster_sigma_um": float(cluster_sigma_um),
        "min_separation_um": min_dist,
        "photons": photons,
        "background": background,
        "read_noise": read_noise,
        "artefacts": artefacts,
        "seed": int(seed),
    }
    return SynthSpots(
        image=image.astype(np.float32),
        points=_points_frame(np.asarray(points)),
        meta=meta,
        clean=clean,
    )


__all__ = ["centriole_volume"]
