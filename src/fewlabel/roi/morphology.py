"""Binary morphology with Euclidean balls in µm (anisotropic voxels), via distance transforms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def ball_radii_voxels(radius_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Half-extent in voxels (z, y, x) of the Euclidean ball of ``radius_um`` µm."""
    return tuple(int(math.floor(radius_um / v * (1 + 1e-6))) for v in voxel_size)  # type: ignore[return-value]


def erode_dilate(
    mask: np.ndarray, voxel_size: Sequence[float], erosion_um: float, extend_um: float
) -> np.ndarray:
    """Erode with the ball of ``erosion_um`` then dilate with the ball of ``extend_um`` (µm).

    Ball = ``{d : Σ_a (d_a v_a)² ≤ r²}``. Both use Euclidean distance transforms with the
    voxel size as sampling (exact, cost independent of the radius). Outside the array counts
    as foreground for the erosion (objects cut by the border are not eroded away) and as
    background for the dilation. Local: a voxel depends on inputs within
    ``ball_radii_voxels(erosion) + ball_radii_voxels(extend)`` voxels.
    """
    mask = np.asarray(mask, dtype=bool)
    if (
        erosion_um > 0
        and mask.any()
        and not mask.all()
        and max(ball_radii_voxels(erosion_um, voxel_size)) >= 1
    ):
        mask = ~within_distance(~mask, erosion_um, voxel_size)
    if (
        extend_um > 0
        and mask.any()
        and not mask.all()
        and max(ball_radii_voxels(extend_um, voxel_size)) >= 1
    ):
        mask = within_distance(mask, extend_um, voxel_size)
    return mask


def within_distance(
    targets: np.ndarray, radius_um: float, voxel_size: Sequence[float], *, slab: int = 8
) -> np.ndarray:
    """Voxels whose Euclidean distance (µm) to the nearest ``True`` voxel of ``targets`` is ≤ r.

    Uses the feature transform of :func:`scipy.ndimage.distance_transform_edt` (nearest target
    index per voxel, int32) and forms squared distances slab by slab in float32, so memory is
    ~13 bytes per voxel instead of ~50 for the float64 distance map.
    """
    targets = np.asarray(targets, dtype=bool)
    if not targets.any():
        return np.zeros(targets.shape, bool)
    sampling = [float(v) for v in voxel_size][-targets.ndim :]
    nearest = ndimage.distance_transform_edt(
        ~targets, sampling=sampling, return_distances=False, return_indices=True
    )
    limit = np.float32(radius_um * radius_um * (1 + 1e-6) ** 2)
    out = np.empty(targets.shape, bool)
    shape = targets.shape
    for z0 in range(0, shape[0], slab):
        z1 = min(z0 + slab, shape[0])
        d2 = np.zeros((z1 - z0, *shape[1:]), np.float32)
        for axis in range(targets.ndim):
            index_shape = [1] * targets.ndim
            index_shape[axis] = -1
            own = np.arange(z0, z1) if axis == 0 else np.arange(shape[axis])
            diff = (nearest[axis, z0:z1] - own.reshape(index_shape)).astype(np.float32)
            diff *= np.float32(sampling[axis])
            diff *= diff
            d2 += diff
        out[z0:z1] = d2 <= limit
    return out


__all__ = ["ball_radii_voxels", "erode_dilate", "within_distance"]
