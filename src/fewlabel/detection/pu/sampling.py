"""Class prior and training windows of positive-unlabelled picking (Vedrenne et al. §2.1-2.2).

* π: the expected fraction of positive voxels (window centres within r of a particle centre)
  inside the ROI, ``π = k · |ball(r)| / |ROI|`` with ``|ball(r)|`` the voxel count of the
  anisotropic ball ``{d : Σ_a (d_a v_a)² ≤ r²}`` and ``|ROI|`` in voxels; the minimal batch
  holding one positive in expectation is ``⌈1/π⌉``.
* Labelled fraction (decision, as Topaz): the clicked balls are removed from the unlabelled
  set, so the prior of the *unlabelled* windows is ``π_U = (π − f_L) / (1 − f_L)`` with
  ``f_L = |labelled ∩ ROI| / |ROI|``. Topaz silently switches to PN training when
  ``π ≤ f_L``; here that is a :class:`~fewlabel.errors.ConfigError` naming the sample and
  the fix.
* Windows: positives centred on random voxels of the balls of radius r around the clicks,
  unlabelled ones on random ROI voxels outside those balls (rejection sampling, no index of
  the whole volume), with a positive share per batch. Augmentation (rotation about z, flips,
  scaling) resamples each window from a larger crop by trilinear ``grid_sample``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fewlabel.augment import IntensityAugment
from fewlabel.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)


def ball_offsets(radius_um: float, voxel_size: Sequence[float]) -> np.ndarray:
    """Integer offsets ``(M, 3)`` of the anisotropic ball ``Σ (d_a v_a)² ≤ r²``."""
    v = np.asarray(voxel_size, float)
    half = np.floor(radius_um / v * (1 + 1e-9)).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    d = np.stack([g.ravel() for g in grids], axis=1)
    keep = ((d * v) ** 2).sum(axis=1) <= radius_um**2 * (1 + 1e-9)
    return d[keep]


def class_prior_voxels(
    expected_particles: float, radius_um: float, voxel_size: Sequence[float], roi_voxels: int
) -> tuple[float, int]:
    """``(π, ⌈1/π⌉)`` with ``π = k · |ball(r)| / |ROI|`` counted in voxels (anisotropic)."""
    if roi_voxels <= 0:
        raise ValueError("the ROI is empty")
    pi = float(expected_particles) * len(ball_offsets(radius_um, voxel_size)) / float(roi_voxels)
    return pi, int(math.ceil(1.0 / pi))


def unlabelled_prior(pi: float, labelled_fraction: float, *, sample: str | None = None) -> float:
    """``π_U = (π − f_L)/(1 − f_L)``; ConfigError when ``π ≤ f_L`` (no unlabelled positives
    left: Topaz falls back to PN training silently, fewlabel stops)."""
    if pi <= labelled_fraction:
        raise ConfigError(
            f"class prior pi={pi:.4g} is not above the labelled fraction "
            f"{labelled_fraction:.4g} of the ROI: the clicks already cover every expected "
            "particle, so the unlabelled windows would hold no positives.",
            sample=sample,
            fix="raise detection.pu.expected_particles (or roi.expected_particles) to the real "
            "particle count, or set detection.pu.loss: pn for fully annotated volumes.",
        )
    if pi >= 1.0:
        raise ConfigError(
            f"class prior pi={pi:.4g} >= 1: particles would fill the whole ROI.",
            sample=sample,
            fix="lower detection.pu.expected_particles or radius_um, or enlarge the ROI.",
        )
    return (pi - labelled_fraction) / (1.0 - labelled_fraction)


def check_radius(radius_um: float, voxel_size: Sequence[float], window: Sequence[int]) -> None:
    """ConfigError when the particle (radius in voxels) does not fit the window."""
    r_vox = [radius_um / v for v in voxel_size]
    if any(2 * r > w for r, w in zip(r_vox, window, strict=True)):
        raise ConfigError(
            f"particle radius {radius_um} µm = {[round(r, 1) for r in r_vox]} voxels (z, y, x) "
            f"does not fit the classifier window {list(window)} (diameter > window).",
            fix="enlarge detection.pu.window or check detection.pu.radius_um and the voxel size.",
        )


@dataclass
class PUVolume:
    """One training volume: normalised image, clicks (voxels), ROI mask (None: everything)."""

    sample: str
    image: np.ndarray
    clicks: np.ndarray
    voxel_size: tuple[float, float, float]
    roi: np.ndarray | None = None
    labelled: np.ndarray = field(init=False)
    positives: np.ndarray = field(init=False)

    def prepare(self, radius_um: float) -> None:
        """Labelled balls (mask) and positive window centres (click + ball offsets)."""
        shape = np.asarray(self.image.shape)
        offsets = ball_offsets(radius_um, self.voxel_size)
        centres = np.rint(np.asarray(self.clicks, float).reshape(-1, 3)).astype(int)
        pos = (centres[:, None, :] + offsets[None]).reshape(-1, 3)
        pos = pos[np.all((pos >= 0) & (pos < shape), axis=1)]
        self.positives = np.unique(pos, axis=0)
        self.labelled = np.zeros(self.image.shape, bool)
        if len(self.positives):
            self.labelled[tuple(self.positives.T)] = True

    def roi_voxels(self) -> int:
        return int(self.image.size if self.roi is None else np.count_nonzero(self.roi))

    def labelled_fraction(self) -> float:
        inside = self.labelled if self.roi is None else self.labelled & self.roi
        return float(np.count_nonzero(inside)) / max(self.roi_voxels(), 1)

    def clicks_outside_roi(self) -> int:
        if self.roi is None or not len(self.clicks):
            return 0
        idx = np.clip(np.rint(self.clicks).astype(int), 0, np.asarray(self.roi.shape) - 1)
        return int(np.count_nonzero(~self.roi[tuple(idx.T)]))

    def unlabelled_centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random ROI voxels outside the labelled balls (rejection sampling)."""
        allowed = ~self.labelled if self.roi is None else self.roi & ~self.labelled
        shape = np.asarray(self.image.shape)
        out: list[np.ndarray] = []
        have = 0
        for _ in range(1000):
            cand = (rng.random((max(4 * n, 64), 3)) * shape).astype(int)
            cand = cand[allowed[tuple(cand.T)]]
            out.append(cand)
            have += len(cand)
            if have >= n:
                return np.concatenate(out)[:n]
        raise InputDataError(
            "no unlabelled ROI voxel found in 1000 draws (the ROI is empty or all clicked).",
            sample=self.sample,
            fix="check the ROI (roi.* settings) and the points file.",
        )


def check_volumes(
    volumes: Sequence[PUVolume], *, n_positive: int, radius_um: float, window: Sequence[int]
) -> None:
    """The bad-input checks of training: radius vs window (error), clicks outside the ROI
    and fewer clicks than positives per batch (warnings naming the sample and the fix)."""
    for vol in volumes:
        check_radius(radius_um, vol.voxel_size, window)
        outside = vol.clicks_outside_roi()
        if outside:
            log.warning(
                "sample %s: %d of %d clicks lie outside the ROI (their windows are still used "
                "as positives). Fix: raise roi.extend_radius_um or lower "
                "roi.posterior_threshold, or check the points file.",
                vol.sample,
                outside,
                len(vol.clicks),
            )
    clicks = sum(len(v.clicks) for v in volumes)
    if clicks == 0:
        raise InputDataError(
            "no clicked particle in the training volumes.",
            sample=", ".join(v.sample for v in volumes),
            fix="give the train rows a points file with at least one particle.",
        )
    if clicks < n_positive:
        log.warning(
            "samples %s: %d clicks but %d positive windows per batch: each click is used "
            "several times per batch (augmented). Fix: lower detection.pu.positive_share or "
            "batch_size, or click more particles.",
            ", ".join(v.sample for v in volumes),
            clicks,
            n_positive,
        )


def _crop(image: np.ndarray, centre: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``image[c − s//2 : c − s//2 + s]`` per axis, edge-replicated outside the volume."""
    idx = np.ix_(
        *[
            np.clip(np.arange(int(c) - s // 2, int(c) - s // 2 + s), 0, n - 1)
            for c, s, n in zip(centre, size, image.shape, strict=True)
        ]
    )
    return image[idx]


class WindowSampler:
    """Mini-batches of windows: ``n_positive`` at labelled positives, the rest unlabelled."""

    def __init__(
        self,
        volumes: Sequence[PUVolume],
        window: Sequence[int],
        *,
        rotate_yx: bool = True,
        flip: bool = True,
        scale: tuple[float, float] = (1.0, 1.0),
        augment: bool = True,
        intensity: IntensityAugment | None = None,
    ) -> None:
        self.volumes = list(volumes)
        self.window = tuple(int(w) for w in window)
        self.rotate_yx, self.flip, self.scale, self.augment = rotate_yx, flip, scale, augment
        self.intensity = intensity if augment else None
        grow = max(scale[1], 1.0) * (math.sqrt(2.0) if rotate_yx else 1.0)
        self.crop = tuple(
            w if not augment else int(math.ceil(w * (max(scale[1], 1.0) if a == 0 else grow))) + 2
            for a, w in enumerate(self.window)
        )
        weights = np.array([len(v.positives) for v in self.volumes], float)
        self.pos_weights = weights / weights.sum() if weights.sum() else None
        sizes = np.array([v.roi_voxels() for v in self.volumes], float)
        self.unl_weights = sizes / sizes.sum()

    def _centres(self, rng: np.random.Generator, n_pos: int, n_unl: int) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        if n_pos:
            if self.pos_weights is None:
                raise InputDataError("no positive window centre inside the volumes.")
            for v_i in rng.choice(len(self.volumes), size=n_pos, p=self.pos_weights):
                vol = self.volumes[v_i]
                out.append((int(v_i), *vol.positives[rng.integers(len(vol.positives))]))
        counts = rng.multinomial(n_unl, self.unl_weights)
        for v_i, count in enumerate(counts):
            for c in self.volumes[v_i].unlabelled_centres(rng, int(count)):
                out.append((v_i, *c))
        return out

    def batch(
        self, rng: np.random.Generator, n_pos: int, n_unl: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``(n_pos + n_unl, 1, *window)`` (positives first) and labels (1 / 0)."""
        centres = self._centres(rng, n_pos, n_unl)
        crops = np.stack(
            [_crop(self.volumes[c[0]].image, np.asarray(c[1:]), self.crop) for c in centres]
        )
        x = torch.from_numpy(crops[:, None].astype(np.float32))
        if self.augment:
            x = self._augment(x, rng)
        if self.intensity is not None:  # one gain / offset / noise draw per window
            x = torch.from_numpy(np.stack([self.intensity(w.numpy(), rng) for w in x]))
        labels = torch.cat([torch.ones(n_pos), torch.zeros(n_unl)])
        return x, labels

    def _augment(self, crops: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Resample each window: ``src = c + R_z(θ) · diag(f) · s · d`` (d: window offset)."""
        b = crops.shape[0]
        w = self.window
        d = torch.stack(
            torch.meshgrid(
                *[torch.arange(n, dtype=torch.float32) - n // 2 for n in w], indexing="ij"
            ),
            dim=-1,
        ).reshape(-1, 3)
        mats = []
        for _ in range(b):
            theta = rng.uniform(0, 2 * np.pi) if self.rotate_yx else 0.0
            s = rng.uniform(*self.scale)
            f = rng.choice([-1.0, 1.0], size=3) if self.flip else np.ones(3)
            rot = np.array(
                [
                    [1, 0, 0],
                    [0, np.cos(theta), -np.sin(theta)],
                    [0, np.sin(theta), np.cos(theta)],
                ]
            )
            mats.append(rot @ np.diag(f * s))
        m = torch.as_tensor(np.stack(mats), dtype=torch.float32)  # (B, 3, 3)
        centre = torch.tensor([c // 2 for c in self.crop], dtype=torch.float32)
        src = centre + torch.einsum("bij,nj->bni", m, d)  # (B, N, 3) z, y, x voxels
        size = torch.tensor(self.crop, dtype=torch.float32)
        norm = 2.0 * src / (size - 1) - 1.0
        grid = norm.flip(-1).reshape(b, *w, 3)  # grid_sample wants x, y, z
        return F.grid_sample(
            crops, grid, mode="bilinear", padding_mode="border", align_corners=True
        )


__all__ = [
    "PUVolume",
    "WindowSampler",
    "ball_offsets",
    "check_radius",
    "check_volumes",
    "class_prior_voxels",
    "unlabelled_prior",
]
