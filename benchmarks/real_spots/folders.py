"""Peaks from trained DM-DetNet3D model folders: the density map of one model, or the mean
density map of several (an ensemble), each input normalised by its own folder's recipe as the
tiled engine applies it; peaks at the lowest threshold of the sweeps (0.0125). ``mirror``: each
model averaged over the flips it trained with (:class:`fewlabel.models.compose.Mirrored`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def model_peaks(folders: Sequence[Path], peaks_cfg=None, mirror: bool = False):
    """``peaks(volume) -> table`` for the mean density of the models in ``folders``."""
    from fewlabel.config import PeaksConfig
    from fewlabel.detection.density.tuning import predict_density
    from fewlabel.detection.peaks import find_peaks
    from fewlabel.detection.sizes import peaks_in_voxels
    from fewlabel.models.compose import Mirrored, mirror_axes
    from fewlabel.models.store import load_model
    from fewlabel.normalize import apply_range, prepare

    models = [load_model(f, expect="dmdetnet3d") for f in folders]
    if mirror:
        for loaded in models:
            flip_z = loaded.training["params"]["flip_z"]
            loaded.module = Mirrored(loaded.module, mirror_axes(flip_z))
    peaks_cfg = peaks_cfg or PeaksConfig()

    def peaks(vol):
        maps = []
        for loaded in models:
            view, lo, hi = prepare(vol.image, loaded.normalization, vol.voxel_size)
            maps.append(
                predict_density(
                    loaded.module,
                    view,
                    device="cpu",
                    normalise=lambda b, lo=lo, hi=hi: apply_range(b, lo, hi),
                )  # fmt: skip
            )
        rule = peaks_in_voxels(peaks_cfg, vol.voxel_size)
        density = maps[0] if len(maps) == 1 else np.mean(maps, axis=0)
        return find_peaks(density, threshold=0.0125, min_distance=rule.min_distance)

    return peaks
