"""PU class prior π from the expected particle count and radius, and plausibility warnings."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

PI_HIGH = 0.5
PI_LOW = 1e-4


def class_prior(
    expected_particles: float, particle_radius_um: float, roi_volume_um3: float
) -> tuple[float, int]:
    """``π = k · (4/3)πr³ / |ROI|`` and the minimal mini-batch ``⌈1/π⌉`` (Vedrenne et al. §2.2)."""
    if not roi_volume_um3 > 0:
        raise ValueError("ROI volume must be positive")
    pi = expected_particles * (4.0 / 3.0) * math.pi * particle_radius_um**3 / roi_volume_um3
    return pi, int(math.ceil(1.0 / pi))


def prior_warnings(pi: float, *, sample: str | None = None) -> list[str]:
    """Warnings for an implausible class prior (π > 0.5 or π < 1e-4); each is also logged."""
    out: list[str] = []
    if pi > PI_HIGH:
        out.append(
            f"class prior pi={pi:.4g} > {PI_HIGH}: particles would fill more than half "
            "of the ROI; roi.expected_particles or roi.particle_radius_um is too large, or "
            "the ROI too small (lower posterior_threshold / raise extend_radius_um)."
        )
    elif pi < PI_LOW:
        out.append(
            f"class prior pi={pi:.3g} < {PI_LOW:g}: a mini-batch needs >= "
            f"{math.ceil(1 / pi)} windows to hold one particle; roi.expected_particles "
            "or roi.particle_radius_um is too small, or the ROI too large."
        )
    for message in out:
        log.warning("sample %s: %s", sample, message)
    return out


__all__ = ["PI_HIGH", "PI_LOW", "class_prior", "prior_warnings"]
