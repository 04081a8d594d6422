"""In silico labelling (ISL) pretraining: a U-Net maps label-free images to fluorescence.

Training (ISL seed): the label-free input ``x`` and the fluorescence target ``y`` of every pair
are normalised per image to their (1, 99.8) percentiles, ``x' = (x − p1)/(p99.8 − p1)``
(:mod:`fewlabel.normalize`); random crops with random y/x flips (z optional) are mapped by a
U-Net with a linear output to ``ŷ`` under the L1 loss ``L = mean |ŷ − y'|``; Adam. Each epoch
the validation images are predicted whole (large ones: fixed deterministic crops) and the
curve records ``train_loss``, ``val_loss`` (L1) and ``val_pcc``, the mean over validation images
of the Pearson correlation ``PCC = cov(ŷ, y) / (σ_ŷ σ_y)``. Early stopping on ``val_loss``
keeps the best weights; the model folder (:mod:`fewlabel.models.store`) holds them.

Dimensionality: ``dims=3`` trains a 3D U-Net on ZYX volumes (input and target of identical
shape). ``dims=2`` is the "planes as channels" mode: a 2D sample with K focal planes is a ZYX
array with Z = K fed as K input channels ``(B, K, Y, X)``; its target is a single plane
(Z = 1, same Y, X). Every 2D image of a run (and at prediction) must have the same K.

Data helpers: :mod:`fewlabel.segmentation.distance.data`; prediction (:func:`predict_isl`):
:mod:`fewlabel.segmentation.distance.predict`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fewlabel.config import IslConfig
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr
from fewlabel.normalize import apply_range, percentile_range
from fewlabel.segmentation.distance.data import (
    PLANES_AS_CHANNELS,
    VAL_WHOLE_MAX_VOXELS,
    NormalisedImage,
    coerce_items,
    expected_target_shape,
    flip_axes,
    load_array,
    open_input_image,
    pearson,
    to_model_input,
    to_model_target,
    train_crop,
)
from fewlabel.training import json_ready

log = logging.getLogger(__name__)


@dataclass
class _Pair:
    image: NormalisedImage
    target: Any
    target_path: str
    t_low: float
    t_high: float

    @property
    def sample(self) -> str:
        return self.image.sample

    def normalise_target(self, block: np.ndarray) -> np.ndarray:
        return apply_range(block, self.t_low, self.t_high)

    def crop_volume(self) -> Any:
        from fewlabel.sampling import CropVolume

        return CropVolume(
            arrays=[self.image.array, self.target],
            name=self.sample,
            transforms=[self.image.normalise, self.normalise_target],
        )


def _load_pair(item: Mapping[str, str], params: IslConfig, planes: int | None) -> _Pair:
    sample = item["sample"]
    image = open_input_image(
        sample, item["image"], dims=params.dims, percentiles=params.percentiles, planes=planes
    )
    target = open_ome_zarr(item["target"], sample=sample)
    expected = expected_target_shape(image.shape, params.dims)
    if tuple(target.shape) != expected:
        mode = (
            "3D: input and target must have the same ZYX shape"
            if params.dims == 3
            else "2D planes as channels: the target is one plane (Z = 1) of the input's Y, X"
        )
        raise InputDataError(
            f"fluorescence target shape {tuple(target.shape)} differs from its label-free input "
            f"shape {image.shape} ({mode}; expected {expected}).",
            sample=sample,
            path=item["target"],
            fix="pair each label-free image with the fluorescence "
            "acquisition of the same field of view (sheet column "
            "'target'), or set pretrain dims accordingly.",
        )
    t_low, t_high = percentile_range(target.array, params.percentiles)
    return _Pair(
        image=image,
        target=load_array(target.array),
        target_path=item["target"],
        t_low=t_low,
        t_high=t_high,
    )


def _isl_validation(
    pairs: Sequence[_Pair], params: IslConfig, device: str, seed: int
) -> tuple[Callable[[nn.Module], dict[str, float]], list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """Validation L1 and mean per-image PCC: whole images (small) or fixed crops (large).

    Returns the validation function and its items (read once), for :func:`_isl_scores`."""
    from fewlabel.sampling import CropSampler

    items: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for pair in pairs:
        if math.prod(pair.image.shape) <= VAL_WHOLE_MAX_VOXELS:
            x = pair.image.normalise(np.asarray(pair.image.array[...]))[None]
            y = pair.normalise_target(np.asarray(pair.target[...]))[None]
            items.append(
                (
                    pair.sample,
                    to_model_input(x, params.dims, device),
                    to_model_target(y, params.dims, device),
                )
            )
        else:
            sampler = CropSampler(
                [pair.crop_volume()], train_crop(params, params.dims), seed=seed + 1, flip_axes=()
            )
            for k, (x, y) in enumerate(sampler.fixed_crops(params.val_crops, seed=seed + 1)):
                items.append(
                    (
                        f"{pair.sample}#{k}",
                        to_model_input(x[None], params.dims, device),
                        to_model_target(y[None], params.dims, device),
                    )
                )

    def validate(model: nn.Module) -> dict[str, float]:
        loss, per_image = _isl_scores(model, items)
        return {"val_loss": loss, "val_pcc": float(np.mean(list(per_image.values())))}

    return validate, items


def _isl_scores(
    model: nn.Module, items: Sequence[tuple[str, torch.Tensor, torch.Tensor]]
) -> tuple[float, dict[str, float]]:
    """Mean L1 over the validation items and the mean PCC per image (over its crops)."""
    losses: list[float] = []
    per_image: dict[str, list[float]] = {}
    for name, x, y in items:
        pred = model(x).float()
        losses.append(float(torch.mean(torch.abs(pred - y))))
        per_image.setdefault(name.split("#")[0], []).append(pearson(pred, y))
    return float(np.mean(losses)), {k: float(np.mean(v)) for k, v in per_image.items()}


def pretrain_isl(
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    params: IslConfig | None = None,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Pretrain a U-Net label-free → fluorescence (ISL, L1 loss) and write the model folder.

    Parameters
    ----------
    train_items, val_items : dicts ``{sample, image, target}`` (label-free and fluorescence
        OME-Zarr paths). Without validation items the training pairs are used for early
        stopping (logged).
    out_dir : model folder (weights.pt = best, weights_last.pt, model.json (arch 'unet'),
        training.json, normalization.json, curve.tsv/png).
    params : :class:`~fewlabel.config.IslConfig` (``segmentation.isl``; default: its defaults).
    seed, threads : determinism and CPU threads (same seed + threads → same weights on CPU).

    Returns
    -------
    Summary dict: best epoch, best validation L1, validation PCC per image, timing.
    """
    from fewlabel.device import configure_torch
    from fewlabel.models.store import save_model
    from fewlabel.models.unet import ARCH_NAME, UNet
    from fewlabel.runtime import provenance
    from fewlabel.sampling import CropSampler
    from fewlabel.training import CurveLogger, fit

    params = params if params is not None else IslConfig()
    train = coerce_items(train_items, ("image", "target"), "ISL training")
    val = coerce_items(val_items, ("image", "target"), "ISL validation")
    if not train:
        raise ConfigError(
            "no paired label-free/fluorescence samples in the train split; ISL "
            "pretraining needs at least one.",
            fix="fill the 'target' column for a train sample, or disable "
            "pretraining (pretrain.isl: false).",
        )
    device = configure_torch(threads, seed)
    t0 = time.monotonic()
    first = _load_pair(train[0], params, None)
    planes = first.image.shape[0] if params.dims == 2 else None
    train_pairs = [first] + [_load_pair(item, params, planes) for item in train[1:]]
    val_pairs = [_load_pair(item, params, planes) for item in val]
    tuned_on = "val"
    if not val_pairs:
        log.warning("no validation pairs: early stopping uses the training pairs")
        val_pairs, tuned_on = train_pairs, "train"
    in_channels = planes if params.dims == 2 else 1
    crop = train_crop(params, params.dims)
    kwargs = {
        "dims": params.dims,
        "in_channels": in_channels,
        "out_channels": 1,
        "base_channels": params.model.base_channels,
        "depth": params.model.depth,
        "norm": params.model.norm,
        "final_activation": None,
        "pool_z": params.model.resolve_pool_z(params.dims, crop[0]),
        "pool_kernels": params.model.pool_kernels,
    }
    model = UNet(**kwargs).to(device)
    log.info(
        "ISL pretraining: %d train / %d val pair(s), dims %d (%s), %d parameters, receptive "
        "field %s, device %s, seed %d, %d thread(s)",
        len(train_pairs),
        len(val),
        params.dims,
        PLANES_AS_CHANNELS if params.dims == 2 else "volume",
        sum(p.numel() for p in model.parameters()),
        model.receptive_field(),
        device,
        seed,
        threads,
    )
    sampler = CropSampler(
        [p.crop_volume() for p in train_pairs],
        crop,
        seed=seed,
        flip_axes=flip_axes(params, params.dims),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)

    def train_step_loss(net: nn.Module) -> torch.Tensor:
        x, y = sampler.sample(params.batch_size)
        pred = net(to_model_input(x, params.dims, device))
        return torch.mean(torch.abs(pred.float() - to_model_target(y, params.dims, device)))

    validate, val_items = _isl_validation(val_pairs, params, device, seed)
    result = fit(
        model,
        optimizer=optimizer,
        train_step_loss=train_step_loss,
        validate=validate,
        epochs=params.epochs,
        steps_per_epoch=params.steps_per_epoch,
        device=device,
        patience=params.patience,
        curve=CurveLogger(title="ISL U-Net"),
        desc="pretrain_isl",
    )
    model.load_state_dict(result.best_state)
    model.eval()
    with torch.no_grad():
        _, per_image = _isl_scores(model, val_items)  # the items read once for validation
    best_row = result.curve.loc[result.curve["epoch"] == result.best_epoch].iloc[0]
    summary = {
        **result.summary(t0),
        "best_val_pcc": float(best_row["val_pcc"]),
        "val_pcc_per_image": per_image,
        "evaluated_on": tuned_on,
    }
    normalization = {
        "method": "percentile",
        "percentiles": list(params.percentiles),
        "per_volume": True,
        "target_percentiles": list(params.percentiles),
        "mode": PLANES_AS_CHANNELS if params.dims == 2 else "volume",
        "dims": params.dims,
        "planes": planes,
        "output": "fluorescence (normalised units: target (p_low, p_high) -> (0, 1))",
    }
    training = {
        "stage": "pretrain_isl",
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "threads": threads,
        "device": device,
        "train": train,
        "val": val,
        "normalisation_ranges": {
            p.sample: {"input": [p.image.low, p.image.high], "target": [p.t_low, p.t_high]}
            for p in [*train_pairs, *([] if tuned_on == "train" else val_pairs)]
        },
        **summary,
        "provenance": provenance(params.model_dump(mode="json")),
    }
    save_model(
        out_dir,
        result.best_state,
        arch={"name": ARCH_NAME, "kwargs": json_ready(kwargs)},
        training=training,
        thresholds={},
        curve=result.curve,
        normalization=normalization,
        extra_states={"weights_last": result.last_state},
    )
    log.info(
        "ISL pretraining done: best epoch %d, val L1 %.4f, val PCC %.3f (%.1fs)",
        summary["best_epoch"],
        summary["best_val_loss"],
        summary["best_val_pcc"],
        summary["seconds"],
    )
    return summary
