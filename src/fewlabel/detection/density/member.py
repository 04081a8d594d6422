"""One DM-DetNet3D network trained on the prepared volumes (an ensemble trains several).

:func:`fit_member` is the training loop of :func:`fewlabel.detection.density.training.
train_detector` for one seed: random crops (flips, optional intensity augmentation, crops
centred on voxels that carry loss under partial annotation), the weighted adaptive wing loss
(Spilger et al., eqs. 1-3), AMSGrad, early stopping on the validation loss or detection F1.
Member ``i`` of an ensemble trained with seed ``s`` equals a single training with seed
``s + i``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fewlabel.config import DetectorTrainConfig, PeaksConfig
from fewlabel.detection.density.awing import DensityLoss
from fewlabel.detection.density.tuning import tune_threshold, validation_fn
from fewlabel.detection.density.volumes import Volume, loss_centres
from fewlabel.errors import ConfigError
from fewlabel.models.compose import compose, mirror_axes
from fewlabel.sampling import CropSampler
from fewlabel.training import CurveLogger, batches_to_device, fit, json_ready

SELECT_LOSS_WEIGHT = 1e-4  # select: f1 — weight of the validation loss in 1 - F1 (tie-break)
PRIOR_LIFT = 4.0  # LoG prior: the clicks' median response, in logits above the head's bias
PRIOR_CLICKS = 64  # clicks per training volume read to set the prior's gain

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MemberRun:
    """What every ensemble member trains and validates on."""

    train_vols: list[Volume]
    val_vols: list[Volume]
    val_peaks: dict[str, PeaksConfig]
    params: DetectorTrainConfig
    peaks: PeaksConfig
    device: str
    gate: float
    gate_unit: str
    grid: Any  # the training grid (voxel_size_um)
    tune_grid: Any  # the grid validation volumes are predicted on (None: their own)
    arch: dict[str, Any]
    init_state: dict[str, torch.Tensor] | None = None  # init_from's weights (read once)


def fit_member(run: MemberRun, seed: int) -> tuple[nn.Module, Any]:
    """Train one DM-DetNet3D (crops, initialisation and validation crops from ``seed``, torch
    seeded by the caller); returns the network with its best weights and the fit result."""
    from fewlabel.detection.density.detnet import DMDetNet3D
    from fewlabel.detection.density.log_prior import init_gain

    params, device = run.params, run.device
    point_fraction = params.point_fraction
    partial_train = [v for v in run.train_vols if v.partial]
    if partial_train:
        for i, vol in enumerate(partial_train):
            vol.centres = loss_centres(vol, seed + 7 + i)
        point_fraction = max(point_fraction, 1.0 - params.background_crop_fraction)
        log.info(
            "partial annotation / ROI on %s: %.0f %% of the crops centred on voxels carrying "
            "loss (clicks, known regions, unlabelled ROI), the rest at random",
            [v.item.sample for v in partial_train],
            100 * point_fraction,
        )
    sampler = CropSampler(
        [v.crop_volume(params.pair_augment) for v in run.train_vols],
        params.crop,
        seed=seed,
        flip_axes=(0, 1, 2) if params.flip_z else (1, 2),
        pad_values=[None, 0.0, 0.0],
        point_fraction=point_fraction,
        image_augment=params.intensity_augment.build(),
    )
    if sampler.image_augment is not None:
        log.info("intensity augmentation of training crops: %s", sampler.image_augment)
    if params.pair_augment.probability > 0:
        log.info(
            "pair augmentation: %.0f %% of the training crops get a copy of one of their "
            "clicked spots %s µm away",
            100 * params.pair_augment.probability,
            list(params.pair_augment.distance_um),
        )
    model = DMDetNet3D(**run.arch["kwargs"]).to(device)
    if run.init_state is not None:
        model.load_state_dict(run.init_state)
    elif model.log_prior is not None:
        gain = init_gain(
            model.log_prior, prior_windows(run.train_vols, model.log_prior.radius), PRIOR_LIFT
        )
        log.info("LoG prior gain %.4g: the clicks' median response is %g logits", gain, PRIOR_LIFT)
    log.info(
        "model %s, %d parameters, receptive field %s voxels",
        run.arch,
        sum(p.numel() for p in model.parameters()),
        model.receptive_field(),
    )
    priors = [float(v.attrs.get("unlabelled_prior", 0.0)) for v in run.train_vols]
    loss_fn = DensityLoss(
        params.loss,
        params.awing,
        prior=float(np.mean(priors)),
        positive_threshold=float(run.train_vols[0].attrs.get("T", 0.2)),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, betas=(0.9, 0.999), amsgrad=True)

    def train_step_loss(net: nn.Module) -> torch.Tensor:
        x, y, w = batches_to_device(sampler.sample(params.batch_size), device)
        return loss_fn(net(x), y, w)

    validate = validation_fn(run.val_vols, params, loss_fn, device, seed)
    monitor = "val_loss"
    if params.select == "f1":
        validate_loss = validate
        monitor = "val_error"

        axes = mirror_axes(params.flip_z, params.mirror)

        def validate(net: nn.Module) -> dict[str, float]:
            out = validate_loss(net)
            _, table, _ = tune_threshold(
                compose([net], axes),  # mirrored as it will predict (detection.train.mirror)
                run.val_vols,
                run.val_peaks,
                params,
                run.peaks,
                device,
                gate=run.gate,
                gate_unit=run.gate_unit,
                grid=run.tune_grid,
                trained=run.grid,
            )
            f1 = float(table["f1"].max())
            # 1 - F1; equal F1 (few validation points) is decided by the loss
            return {
                **out,
                "val_f1": f1,
                "val_error": 1.0 - f1 + SELECT_LOSS_WEIGHT * out["val_loss"],
            }

    result = fit(
        model,
        optimizer=optimizer,
        train_step_loss=train_step_loss,
        validate=validate,
        epochs=params.epochs,
        steps_per_epoch=params.steps_per_epoch,
        device=device,
        patience=params.patience,
        monitor=monitor,
        curve=CurveLogger(title="DM-DetNet3D"),
        desc="train_detector",
        validate_first=model.log_prior is not None,
    )
    warning = barely_trained(result, monitor)
    if warning:
        log.warning("seed %d: %s", seed, warning)
        result.extra["warning"] = warning  # training.json's warnings (the report shows them)
    model.load_state_dict(result.best_state)
    return model, result


def prior_windows(vols: list[Volume], radius: tuple[int, ...]) -> list[tuple[np.ndarray, Any]]:
    """(normalised window, click) pairs around up to :data:`PRIOR_CLICKS` clicks per volume,
    ``radius`` voxels each side (the LoG prior's kernel radius: its response at the click is
    the whole volume's)."""
    out = []
    for vol in vols:
        for click in vol.points[:PRIOR_CLICKS]:
            centre = np.rint(click).astype(int)
            lo = [max(0, c - r) for c, r in zip(centre, radius, strict=True)]
            hi = [min(n, c + r + 1) for c, r, n in zip(centre, radius, vol.shape, strict=True)]
            window = vol.normalise(np.asarray(vol.image[tuple(map(slice, lo, hi))]))
            out.append((np.asarray(window, dtype=np.float32), (centre - np.array(lo))[None]))
    return out


def barely_trained(result: Any, monitor: str) -> str | None:
    """The warning for weights kept from the first epoch of a longer run (the validation
    ``monitor`` got worse as the network learned), else None."""
    if result.best_epoch == 0:
        return (
            f"no epoch of {result.epochs_run} beat the starting network (the LoG prior, or "
            f"init_from's weights) on the validation "
            f"{'loss' if monitor == 'val_loss' else 'F1'}: the saved network is the starting "
            "one. The clicks did not teach a correction that holds on the validation volumes; "
            "more (or complete) annotation may."
        )
    if not result.best_epoch <= 1 < result.epochs_run:
        return None
    fix = (
        "detection.train.select: f1 (pick the epoch by detection F1), more validation points, "
        "or a higher patience"
        if monitor == "val_loss"
        else "more validation points (with the LoG prior: the network is close to the LoG)"
    )
    return (
        f"the best {monitor} was at epoch {result.best_epoch} of {result.epochs_run}: the saved "
        f"weights are barely trained (the validation "
        f"{'loss' if monitor == 'val_loss' else 'F1'} got worse as the network learned). "
        f"Fix: {fix}."
    )


def initial_state(arch: dict, folder: str | Path, recipe: dict) -> dict[str, torch.Tensor]:
    """The weights of another DM-DetNet3D model folder to start from (fine-tuning): same
    architecture and input normalisation, else a ConfigError naming both."""
    from fewlabel.models.store import load_model

    source = load_model(folder, expect=arch["name"])
    if json_ready(source.arch.get("kwargs", {})) != arch["kwargs"]:
        raise ConfigError(
            f"init_from {folder}: its architecture {source.arch.get('kwargs')} differs from "
            f"detection.train.model {arch['kwargs']}.",
            fix="set detection.train.model to the pretrained model's settings.",
        )
    theirs = {k: v for k, v in source.normalization.items() if k != "per_volume"}
    if theirs != recipe:
        raise ConfigError(
            f"init_from {folder}: it was trained on inputs normalised by {theirs}, this "
            f"training uses {recipe}.",
            fix="set detection.train.normalisation (and percentiles) to the pretrained model's.",
        )
    log.info("initialising from the weights of %s", folder)
    return source.network.state_dict()
