"""Intensity augmentation of training crops: random gain, offset and Gaussian noise.

Few clicks usually come from one acquisition, while the volumes a detector is applied to differ
in staining, exposure and camera offset. After per-volume normalisation the spot contrast still
varies between crops (a factor 2.5 in noise units, a factor 30 after percentiles, on the real
smFISH crops of ``benchmarks/real_spots``). Training on crops whose intensities are rescaled
teaches the network that a spot is a shape relative to its surroundings, not a level:

    I' = a * I + b + n,    log a ~ U(log a_min, log a_max),  b ~ U(b_min, b_max),
    n ~ N(0, s^2),         s ~ U(s_min, s_max)

This is Spotiflow's 3D training augmentation (``IntensityScaleShift`` with probability 0.85,
scale 0.5-2, shift -0.2-0.2; ``GaussianNoise`` with probability 0.5, sigma 0-0.05; Dominguez
Mantes et al., Nat. Methods 2025) with one change: the gain is drawn log-uniformly, so that
halving and doubling are equally likely. Values are in the units of the normalised input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityAugment:
    """Random gain/offset (with ``probability``) and additive Gaussian noise (with
    ``noise_probability``) applied to one image crop; draws nothing when both are 0."""

    probability: float
    scale: tuple[float, float]
    shift: tuple[float, float]
    noise_probability: float
    noise_std: tuple[float, float]

    @property
    def active(self) -> bool:
        return self.probability > 0 or self.noise_probability > 0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.asarray(image, dtype=np.float32)
        if self.probability > 0 and rng.random() < self.probability:
            gain = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
            out = out * np.float32(gain) + np.float32(rng.uniform(*self.shift))
        if self.noise_probability > 0 and rng.random() < self.noise_probability:
            std = float(rng.uniform(*self.noise_std))
            out = out + rng.normal(0.0, std, size=out.shape).astype(np.float32)
        return out
