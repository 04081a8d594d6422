"""S1: centre-likelihood regression (BFS-Net §3.2, eq. 2) and its peaks.

``L_S1 = BCE(z, p) + λ · focal(z, p | p > 0.7)``: binary cross-entropy against the Voronoi centre
map ``p`` (:mod:`fewlabel.segmentation.bfs.centres`) over all voxels plus a focal term
(:func:`fewlabel.segmentation.losses.focal`, γ = 2) on the voxels near a centre. The local maxima
of ``σ(z)`` are the detected centres (also usable as a detector).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fewlabel.config import BfsS1Config
from fewlabel.errors import InputDataError
from fewlabel.segmentation.losses import focal

log = logging.getLogger(__name__)


def s1_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    focal_weight: float = 1.0,
    min_target: float = 0.7,
) -> torch.Tensor:
    """Eq. 2: BCE over every voxel + ``focal_weight`` · focal over voxels with target > min."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    near = target > min_target
    if focal_weight == 0 or not bool(near.any()):
        return bce
    return bce + float(focal_weight) * focal(logits, target, valid=near)


def train_s1(
    train_items: Sequence[Mapping[str, str]],
    val_items: Sequence[Mapping[str, str]],
    out_dir: str | Path,
    *,
    params: BfsS1Config | None = None,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Train S1 on ``{sample, image, centres}`` items (centre maps of the clicks)."""
    from fewlabel.device import configure_torch
    from fewlabel.segmentation.bfs.models import S1_ARCH
    from fewlabel.segmentation.bfs.train import load_volume, train_bfs_net

    params = params if params is not None else BfsS1Config()
    device = configure_torch(threads, seed)
    train = [load_volume(i, "centres", params.percentiles) for i in train_items]
    val = [load_volume(i, "centres", params.percentiles) for i in val_items]

    def loss(z: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
        return s1_loss(z, y, focal_weight=params.focal_weight, min_target=params.focal_min_target)

    return train_bfs_net(
        train,
        val,
        out_dir,
        arch_name=S1_ARCH,
        params=params,
        loss_fn=loss,
        seed=seed,
        threads=threads,
        device=device,
        thresholds={
            "peak_threshold": params.peak_threshold,
            "peak_min_distance_um": params.peak_min_distance_um,
        },
    )


def min_distance_voxels(distance_um: float, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """A µm radius as whole voxels per axis (at least 1)."""
    return tuple(max(1, math.ceil(float(distance_um) / float(v) - 1e-9)) for v in voxel_size)  # type: ignore[return-value]


def s1_peaks(
    likelihood: Any,
    voxel_size: Sequence[float],
    *,
    threshold: float,
    min_distance_um: float,
    sample: str | None = None,
    path: str | Path | None = None,
    workers: int = 1,
    require: bool = True,
) -> pd.DataFrame:
    """Local maxima of S1's likelihood (chunk-safe :func:`fewlabel.detection.peaks.extract_points`).

    Columns ``z, y, x`` (voxels), ``z_um, y_um, x_um``, ``score``. With ``require``, no peak is
    an error naming the sample and the fix.
    """
    from fewlabel.detection.peaks import extract_points

    table = extract_points(
        likelihood,
        threshold=float(threshold),
        min_distance=min_distance_voxels(min_distance_um, voxel_size),
        refine_radius=1,
        voxel_size=voxel_size,
        workers=workers,
    )
    if require and table.empty:
        peak = float(np.max(np.asarray(likelihood[...]))) if likelihood is not None else 0.0
        raise InputDataError(
            f"S1 found no centre (no local maximum of the centre likelihood above "
            f"{threshold:g}; its maximum is {peak:.3g}).",
            sample=sample,
            path=path,
            fix="train S1 longer (segmentation.bfs.s1.epochs), check that the image shows the "
            "clicked cells, or lower segmentation.bfs.s1.peak_threshold.",
        )
    return table
