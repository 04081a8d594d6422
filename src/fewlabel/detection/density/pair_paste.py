"""Copy-paste of close spot pairs into training crops (``detection.train.pair_augment``).

``benchmarks/real_spots/pairs.py`` found that DM-DetNet3D draws two spots 0.56-0.71 µm apart
as one: the real training clicks hold no such pair, so the network never learned that a second
spot on the flank of another is a spot. Copy-paste augmentation (Ghiasi et al., CVPR 2021)
shows it pairs made of the training data's own spots: a clicked spot of the crop, minus its
local background and faded by a Gaussian window, is added at a random offset of
``distance_um`` (uniform distance, uniform 3D direction in µm, rounded to whole voxels).
Fluorescence adds photons, so spot + shifted spot is a physically plausible pair:

    I' = I + w · (I − b)(· − d),   w(v) = exp(−½ Σ_a (v_a/(2σ_a))²)

where ``b`` is the median of the patch's outer shell and σ the target's s.d. (voxels). The
target gets the pasted spot's Gaussian (the maximum of both, as :func:`density_target`
combines overlaps) and its click neighbourhood becomes known: weight λ + 1 where the dilated
target reaches T (the weight of the source click), 1 elsewhere (DM-DetNet3D eq. 2,
:func:`~fewlabel.detection.density.targets.weight_map`).

Measured on the real smFISH crops (``benchmarks/real_spots`` README, ``pairs.py``): with
probability 0.5 it did not draw the test's close pairs as two spots and lowered the
validation F1, so it is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fewlabel.detection.density.partial import click_neighbourhood
from fewlabel.detection.density.targets import density_target, weight_map


@dataclass(frozen=True)
class PairPaste:
    """With ``probability`` per crop, paste a copy of one of its clicked spots at
    ``distance_um`` from it (image, target and weight crops of one volume)."""

    probability: float
    distance_um: tuple[float, float]
    voxel_size: tuple[float, float, float]
    sigma_voxels: tuple[float, float, float]
    click_radius_voxels: tuple[float, float, float]
    T: float

    def __call__(
        self, arrays: list[np.ndarray], clicks: np.ndarray, rng: np.random.Generator
    ) -> list[np.ndarray]:
        """``arrays`` = [image, target, weight] crops; ``clicks`` in crop voxels."""
        if self.probability <= 0 or rng.random() >= self.probability:
            return arrays
        image, target, weight = arrays
        half = np.array([math.ceil(3 * s) for s in self.sigma_voxels])
        shape = np.array(image.shape[-3:])
        clicks = np.asarray(clicks, float).reshape(-1, 3)
        centres = np.rint(clicks).astype(int)
        inside = np.all((centres - half >= 0) & (centres + half < shape), axis=1)
        inside &= weight[tuple(np.clip(centres, 0, shape - 1).T)] > 0  # a known click
        if not inside.any():
            return arrays
        pick = int(rng.choice(np.flatnonzero(inside)))
        source = clicks[pick]
        centre = centres[pick]
        shift = self._offset(rng)
        box = tuple(slice(int(c - h), int(c + h + 1)) for c, h in zip(centre, half, strict=True))
        patch = image[box].astype(np.float32)
        shell = np.ones(patch.shape, bool)
        shell[1:-1, 1:-1, 1:-1] = False
        grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
        window = np.exp(
            -0.5 * sum((g / (2 * s)) ** 2 for g, s in zip(grids, self.sigma_voxels, strict=True))
        )
        spot = ((patch - np.median(patch[shell])) * window).astype(np.float32)
        image = image.copy()
        _add(image, spot, centre + shift - half)
        pasted = source + shift
        new = np.maximum(target, density_target(target.shape, pasted[None], self.sigma_voxels))
        known = click_neighbourhood(target.shape, pasted[None], self.click_radius_voxels)
        lam = float(weight[tuple(centre)]) - 1.0  # the source click's weight is λ + 1
        weight = np.where(known, weight_map(new, lam=lam, T=self.T), weight).astype(np.float32)
        return [image, new.astype(np.float32), weight]

    def _offset(self, rng: np.random.Generator) -> np.ndarray:
        """A whole-voxel shift of ``distance_um`` (uniform) in a uniform 3D direction (µm),
        never zero."""
        while True:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            um = direction * rng.uniform(*self.distance_um)
            shift = np.rint(um / np.asarray(self.voxel_size)).astype(int)
            if shift.any():
                return shift


def _add(image: np.ndarray, spot: np.ndarray, corner: Sequence[int]) -> None:
    """``image[corner : corner + spot.shape] += spot``, clipped to the image."""
    lo = np.maximum(np.asarray(corner), 0)
    hi = np.minimum(np.asarray(corner) + spot.shape, image.shape[-3:])
    if np.any(hi <= lo):
        return
    src = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(lo, hi, corner, strict=True))
    dst = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    image[dst] += spot[src]
