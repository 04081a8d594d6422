"""Training of the PU window classifier (Vedrenne et al. §2.2-2.3).

SGD with momentum 0.9 and weight decay (the task log-variances: Adam, lr 0.01); the loss is
GE-binomial (or PN) plus, with the reconstruction head, a learned-weight multitask sum
(:class:`~.loss.MultiTaskLoss`).

Weight averaging (``averaging.mode``):

* ``swa`` (Izmailov et al. 2018): cosine decay from ``lr`` for the first ``start`` fraction of
  the steps, then a cyclic learning rate ``α(t) = (1 − u) lr_max + u lr_min``,
  ``u = (t mod c + 1)/c`` over cycles of ``c = cycle_steps``; at the end of each cycle the
  weights enter an equal average (``torch.optim.swa_utils.AveragedModel``); at the end the
  BatchNorm statistics of the average are recomputed (``update_bn``) on training windows.
* ``ema``: the same schedule, the average updated as ``avg = keep · avg + (1 − keep) · new``
  (what the paper authors' public code calls SWA; ``keep = 0.1``).
* ``none``: cosine decay over all steps, the last weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from fewlabel.config.pu import PUConfig
from fewlabel.detection.pu.classifier import PUClassifier, parameter_count
from fewlabel.detection.pu.loss import MultiTaskLoss, ge_binomial_loss, pn_loss
from fewlabel.detection.pu.sampling import (
    PUVolume,
    WindowSampler,
    ball_offsets,
    check_volumes,
    unlabelled_prior,
)

log = logging.getLogger(__name__)


class _Classify(nn.Module):
    """``forward = classify`` (logits), for ``update_bn`` on windows."""

    def __init__(self, module: PUClassifier) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.classify(x)[0]


def learning_rate(step: int, steps: int, params: PUConfig) -> float:
    """The schedule of the module docstring at ``step`` (0-based)."""
    avg = params.averaging
    start = int(avg.start * steps) if avg.mode != "none" else steps
    if step < start:
        return params.lr * 0.5 * (1 + math.cos(math.pi * step / max(start, 1)))
    u = ((step - start) % avg.cycle_steps + 1) / avg.cycle_steps
    return (1 - u) * avg.lr_max + u * avg.lr_min


def model_kwargs(params: PUConfig) -> dict[str, Any]:
    m = params.model
    return {
        "window": list(params.window),
        "in_channels": 1,
        "width": m.width,
        "channels": list(m.channels),
        "expand": m.expand,
        "head_channels": m.head_channels,
        "drop_connect": m.drop_connect,
        "reconstruction": m.reconstruction,
    }


def pooled_prior(
    volumes: Sequence[PUVolume], params: PUConfig, radius_um: float, expected: float
) -> dict[str, float]:
    """π over all training ROIs, the labelled fraction and π_U (see :mod:`.sampling`)."""
    roi = sum(v.roi_voxels() for v in volumes)
    ball = sum(len(ball_offsets(radius_um, v.voxel_size)) for v in volumes) / len(volumes)
    pi = float(expected) * len(volumes) * ball / roi
    f_l = sum(v.labelled_fraction() * v.roi_voxels() for v in volumes) / roi
    names = ", ".join(v.sample for v in volumes)
    pi_u = unlabelled_prior(pi, f_l, sample=names) if params.loss == "ge_binomial" else pi
    return {"pi": pi, "labelled_fraction": f_l, "pi_unlabelled": pi_u, "min_batch": 1 / pi_u}


def train_pu(
    volumes: Sequence[PUVolume],
    params: PUConfig,
    *,
    radius_um: float,
    expected_particles: float,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[PUClassifier, dict[str, Any], pd.DataFrame]:
    """Train the classifier on ``volumes`` (images normalised); returns the final (averaged)
    module in eval mode, a summary dict and the training curve."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    for vol in volumes:
        vol.prepare(radius_um)
    n_pos = max(1, int(round(params.positive_share * params.batch_size)))
    n_unl = params.batch_size - n_pos
    check_volumes(volumes, n_positive=n_pos, radius_um=radius_um, window=params.window)
    prior = pooled_prior(volumes, params, radius_um, expected_particles)
    if n_unl < prior["min_batch"]:
        log.warning(
            "%d unlabelled windows per batch hold %.2f positives in expectation (< 1; "
            "minimal batch 1/pi_U = %.0f). Fix: raise detection.pu.batch_size or shrink the ROI.",
            n_unl,
            n_unl * prior["pi_unlabelled"],
            prior["min_batch"],
        )
    aug = params.augment
    sampler = WindowSampler(
        volumes,
        params.window,
        rotate_yx=aug.rotate_yx,
        flip=aug.flip,
        scale=aug.scale,
        intensity=aug.intensity.build(),
    )
    model = PUClassifier(**model_kwargs(params)).to(device)
    mtl = MultiTaskLoss(2).to(device) if params.model.reconstruction else None
    opt = torch.optim.SGD(
        model.parameters(), lr=params.lr, momentum=0.9, weight_decay=params.weight_decay
    )
    # the task log-variances get Adam with a small fixed step: SGD with momentum lets the large
    # initial GE penalty throw them far off (weight 1e-4 on the classification in tests)
    opt_mtl = torch.optim.Adam(mtl.parameters(), lr=0.01) if mtl is not None else None
    avg = params.averaging
    averaged: AveragedModel | None = None
    if avg.mode == "swa":
        averaged = AveragedModel(model)
    elif avg.mode == "ema":
        keep = avg.ema_keep
        averaged = AveragedModel(model, avg_fn=lambda a, new, n: keep * a + (1 - keep) * new)
    start = int(avg.start * params.steps) if averaged is not None else params.steps
    rows = []
    n_averaged = 0
    model.train()
    for step in range(params.steps):
        lr = learning_rate(step, params.steps, params)
        for group in opt.param_groups:
            group["lr"] = lr
        x, _ = sampler.batch(rng, n_pos, n_unl)
        x = x.to(device)
        logits, recon = model.classify(x)
        if params.loss == "ge_binomial":
            cls = ge_binomial_loss(
                logits[:n_pos], logits[n_pos:], pi=prior["pi_unlabelled"], slack=params.slack
            )
        else:
            cls = pn_loss(logits[:n_pos], logits[n_pos:])
        rec = F.mse_loss(recon, x.clamp(0, 1)) if recon is not None else None
        loss = mtl(cls, rec) if mtl is not None and rec is not None else cls
        opt.zero_grad(set_to_none=True)
        if opt_mtl is not None:
            opt_mtl.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if opt_mtl is not None:
            opt_mtl.step()
        if averaged is not None and step >= start and (step - start + 1) % avg.cycle_steps == 0:
            averaged.update_parameters(model)
            n_averaged += 1
        if step % 10 == 0 or step == params.steps - 1:
            p = torch.sigmoid(logits.detach())
            rows.append(
                {
                    "epoch": step,
                    "loss": float(loss.detach()),
                    "cls_loss": float(cls.detach()),
                    "recon_loss": float(rec.detach()) if rec is not None else float("nan"),
                    "p_positive": float(p[:n_pos].mean()),
                    "p_unlabelled": float(p[n_pos:].mean()),
                    "lr": lr,
                }
            )
    final = model
    if averaged is not None and n_averaged:
        final = averaged.module  # type: ignore[assignment]
        batches = [sampler.batch(rng, n_pos, n_unl)[0].to(device) for _ in range(10)]
        update_bn(batches, _Classify(final), device=torch.device(device))
    final.eval()
    summary = {
        **prior,
        "positives_per_batch": n_pos,
        "unlabelled_per_batch": n_unl,
        "clicks": int(sum(len(v.clicks) for v in volumes)),
        "samples": [v.sample for v in volumes],
        "averaging": avg.mode,
        "averaged_models": n_averaged,
        "task_weights": mtl.weights() if mtl is not None else None,
        "parameters": parameter_count(final),
        "parameters_without_decoder": parameter_count(final, include_decoder=False),
        "seconds": time.perf_counter() - t0,
    }
    log.info("PU training: %s", summary)
    return final, summary, pd.DataFrame(rows)


__all__ = ["learning_rate", "model_kwargs", "pooled_prior", "train_pu"]
