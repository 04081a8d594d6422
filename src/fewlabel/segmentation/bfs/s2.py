"""S2: segmentation trained on the PRM pseudo-labels (BFS-Net §3.3, eq. 3).

``L_S2 = L_class + λ_BF · L_BF``: ``L_class`` is the (binary) cross-entropy of S2's foreground
logit against the pseudo-label foreground ``[pseudo > 0]``; ``L_BF`` is the image-guided
refinement loss of :mod:`fewlabel.segmentation.bfs.refine` on ``σ(logit)`` (eq. 4 with
``guide: log`` for bright-field / label-free input, eq. 5 with ``guide: gradient`` for
fluorescence). ``λ_BF = 0`` is the ablation "S2 with L_class only".

``mask_threshold: auto``: after training, the threshold at which S2's foreground on the training
volumes has the pseudo-labels' foreground volume (no ground truth involved; a fixed 0.5 let the
class imbalance shrink the masks to half the pseudo-labels' volume on synthetic nuclei).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fewlabel.config import BfsS2Config
from fewlabel.segmentation.bfs.refine import bf_loss


def s2_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    image: torch.Tensor,
    *,
    params: BfsS2Config,
    voxel_size: Sequence[float],
) -> torch.Tensor:
    """Eq. 3 on (B, 1, Z, Y, X) logits, foreground target and normalised image."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    if params.lambda_bf > 0:
        loss = loss + params.lambda_bf * bf_loss(
            torch.sigmoid(logits.float()),
            image,
            sigma1=params.sigma1,
            sigma2=params.sigma2,
            p=params.p,
            guide=params.guide,
            voxel_size=voxel_size,
        )
    return loss


def _foreground(labels: np.ndarray) -> np.ndarray:
    return (labels > 0).astype(np.float32)


def volume_matched_threshold(prob: np.ndarray, target: np.ndarray) -> float:
    """The probability threshold whose foreground fraction equals the target's (clipped to
    [0.05, 0.95])."""
    fraction = float(np.mean(target > 0.5))
    if fraction <= 0:
        return 0.5
    value = float(np.quantile(prob, 1.0 - fraction))
    return float(np.clip(value, 0.05, 0.95))


def train_s2(
    train_items: Sequence[Mapping[str, str]],
    val_items: Sequence[Mapping[str, str]],
    out_dir: str | Path,
    *,
    params: BfsS2Config | None = None,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Train S2 on ``{sample, image, pseudo}`` items (PRM pseudo instance labels)."""
    from fewlabel.device import configure_torch
    from fewlabel.segmentation.bfs.models import S2_ARCH
    from fewlabel.segmentation.bfs.train import (
        load_volume,
        probability_and_target,
        train_bfs_net,
    )

    params = params if params is not None else BfsS2Config()
    device = configure_torch(threads, seed)
    train = [load_volume(i, "pseudo", params.percentiles, _foreground) for i in train_items]
    val = [load_volume(i, "pseudo", params.percentiles, _foreground) for i in val_items]
    voxel = train[0].image.voxel_size if train else (1.0, 1.0, 1.0)

    def loss(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return s2_loss(z, y, x, params=params, voxel_size=voxel)

    def tune(model: torch.nn.Module, volumes: Sequence[Any]) -> dict[str, Any]:
        if params.mask_threshold != "auto":
            return {"mask_threshold": params.mask_threshold, "mask_threshold_from": "config"}
        pairs = [
            probability_and_target(model, v, params.crop, params.val_crops, device) for v in volumes
        ]
        prob = np.concatenate([p for p, _ in pairs])
        target = np.concatenate([t for _, t in pairs])
        return {
            "mask_threshold": volume_matched_threshold(prob, target),
            "mask_threshold_from": "pseudo-label volume on the training volumes",
        }

    return train_bfs_net(
        train,
        val,
        out_dir,
        arch_name=S2_ARCH,
        params=params,
        loss_fn=loss,
        seed=seed,
        threads=threads,
        device=device,
        extra_training={"voxel_size": list(voxel)},
        tune=tune,
    )
