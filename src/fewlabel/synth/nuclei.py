"""Touching nuclei with a paired fluorescence and label-free channel.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from fewlabel.errors import ConfigError
from fewlabel.synth.common import _points_frame, _random_rotation, _shape3, _smooth_field

log = logging.getLogger(__name__)


@dataclass
class SynthNuclei:
    """Paired nuclei volumes: instance ``labels`` (uint32 ZYX), ``fluorescence`` and
    ``label_free`` (float32 ZYX), ``points`` = label centroids (z,y,x,label), ``meta``."""

    labels: np.ndarray
    fluorescence: np.ndarray
    label_free: np.ndarray
    points: pd.DataFrame
    meta: dict[str, Any]


def _extent_along(inv_axes_rot: np.ndarray, direction: np.ndarray) -> float:
    """Distance from an ellipsoid's centre to its surface along the unit ``direction``."""
    return float(1.0 / np.linalg.norm(inv_axes_rot @ direction))


def _place_nuclei(
    rng: np.random.Generator,
    n: int,
    size_phys: np.ndarray,
    forms: list[np.ndarray],
    extents_z: np.ndarray,
) -> np.ndarray:
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
                c = centres[k] + u * factor * (
                    _extent_along(forms[k], u) + _extent_along(forms[i], u)
                )
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
        raise ConfigError(
            f"nuclei_pair: invalid radius_range {radius_range!r}, anisotropy "
            f"{anisotropy} or n_nuclei {n_nuclei}.",
            fix="use 0 < r_min <= r_max, anisotropy > 0, n_nuclei >= 1.",
        )
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
        spin = np.array(
            [[1.0, 0.0, 0.0], [0.0, np.cos(phi), -np.sin(phi)], [0.0, np.sin(phi), np.cos(phi)]]
        )
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
    fluorescence = (rng.poisson(fluo_clean) + rng.normal(0.0, 2.0, size=shape)).astype(np.float32)

    # label-free: refractive-index map incl. cytoplasm and granules, DoG + defocus transform
    from skimage.segmentation import expand_labels

    cells = expand_labels(labels, distance=4.0, spacing=spacing)
    cytoplasm = (cells > 0) & ~inside
    texture2 = ndi.gaussian_filter(rng.normal(size=shape), 1.5 / spacing)
    texture2 /= texture2.std() + 1e-12
    mixed = 0.5 * chromatin + 0.87 * texture2
    granules = (
        ndi.gaussian_filter((rng.random(shape) < 0.02).astype(float) * cytoplasm, 0.7 / spacing)
        * 4.0
    )
    ri = (
        inside * (0.020 + 0.004 * mixed)
        + nucleoli * 0.015
        + cytoplasm * (0.010 + 0.003 * texture2)
        + granules * 0.01
    )
    s1 = np.array([1.2, 1.0, 1.0]) / spacing
    s2 = np.array([4.0, 3.0, 3.0]) / spacing
    near = ndi.gaussian_filter(ri, s1)
    dog = near - ndi.gaussian_filter(ri, s2)
    defocus = np.gradient(near, axis=0) if shape[0] > 1 else np.zeros(shape)
    illumination = 0.05 * _smooth_field(shape, rng, cells=(1, 2, 2))
    label_free = (
        1.0 + 8.0 * dog + 6.0 * defocus + illumination + rng.normal(0.0, 0.01, size=shape)
    ).astype(np.float32)

    present = [i for i in ids if np.any(labels == i)]
    centroids = ndi.center_of_mass(inside, labels, present)
    points = _points_frame(np.asarray(centroids))
    points["label"] = np.asarray(present, dtype=np.int64)
    meta = {
        "kind": "nuclei",
        "shape": list(shape),
        "n_nuclei": len(present),
        "radius_range": [r_lo, r_hi],
        "anisotropy": float(anisotropy),
        "centres_zyx_voxels": (centres / spacing).tolist(),
        "semi_axes_xy_voxels": [a.tolist() for a in axes],
        "psf_sigma": list(psf_sigma),
        "photons": photons,
        "seed": int(seed),
    }
    return SynthNuclei(
        labels=labels, fluorescence=fluorescence, label_free=label_free, points=points, meta=meta
    )


def _ellipsoid_q(
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    centre: np.ndarray,
    form: np.ndarray,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """``q(x) = ||form (x - centre) - offset||`` on the voxel grid (physical ``x``), float32."""
    d = [
        (np.arange(n) * sp - c).astype(np.float32)
        for n, sp, c in zip(shape, spacing, centre, strict=True)
    ]
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


__all__ = ["SynthNuclei", "nuclei_pair"]
