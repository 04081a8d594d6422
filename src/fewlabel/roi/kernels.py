"""µm → voxel conversion of the ROI operators' kernels, bounded so that unit mistakes fail fast.

A kernel size in µm divided by a voxel size in the wrong unit (metres: 3e-7 instead of 0.3)
gives millions of voxels per axis; a Gaussian filter of that σ on even a tiny volume runs for
hours. Every conversion therefore goes through :func:`kernel_voxels`, which raises
:class:`~fewlabel.errors.ConfigError` when the kernel exceeds both :data:`MAX_KERNEL_VOXELS`
and the volume's largest side.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

from fewlabel.errors import ConfigError

MAX_KERNEL_VOXELS = 256
"""A converted kernel (σ, radius or CLAHE region, in voxels along any axis) may exceed this
only up to the volume's largest side: limit = max(MAX_KERNEL_VOXELS, max(shape))."""


def kernel_limit(shape: Sequence[int]) -> int:
    """The largest allowed kernel size in voxels for a volume of ``shape``."""
    return max(MAX_KERNEL_VOXELS, *(int(s) for s in shape))


def kernel_voxels(
    key: str,
    value_um: float | Sequence[float],
    voxel_size: Sequence[float],
    shape: Sequence[int],
    *,
    sample: str | None = None,
    path: str | Path | None = None,
) -> tuple[float, ...]:
    """``value_um / voxel_size`` per axis (z, y, x), checked against :func:`kernel_limit`.

    ``value_um`` is one size for every axis or one per axis. Raises ConfigError naming the
    config ``key``, the µm value, the voxel size and the resulting voxel counts when any axis
    exceeds the limit (or is not finite).
    """
    sizes = (
        [float(value_um)] * len(voxel_size)
        if isinstance(value_um, numbers.Real)
        else [float(u) for u in value_um]
    )
    voxels = tuple(u / float(v) for u, v in zip(sizes, voxel_size, strict=True))
    limit = kernel_limit(shape)
    if voxels and not max(voxels) <= limit:
        shown = value_um if isinstance(value_um, numbers.Real) else tuple(sizes)
        counts = "(" + ", ".join(f"{c:.4g}" for c in voxels) + ")"
        raise ConfigError(
            f"config key '{key}' = {shown} µm at voxel size "
            f"{tuple(float(v) for v in voxel_size)} µm (z, y, x) is {counts} voxels, more than "
            f"{limit} (the larger of {MAX_KERNEL_VOXELS} and the largest side of the volume, "
            f"shape {tuple(int(s) for s in shape)}): far beyond the volume, and filters that "
            "large take hours.",
            sample=sample,
            path=path,
            fix="give the voxel size in µm (sample sheet column 'voxel_size' or the image "
            f"metadata; a value like 3e-07 is in metres), or lower {key}.",
        )
    return voxels


__all__ = ["MAX_KERNEL_VOXELS", "kernel_limit", "kernel_voxels"]
