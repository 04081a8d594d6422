"""The training loop shared by BFS-Net's S1 and S2: random crops of (image, target), Adam,
early stopping on the validation loss (:func:`fewlabel.training.fit`), model folder.

Both networks are 3D U-Nets with one logit output (:mod:`fewlabel.segmentation.bfs.models`);
images are percentile-normalised per volume (the model folder's normalization.json, as for the
other U-Nets, so the tiled engine predicts them the same way).
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

from fewlabel.config import BfsS1Config, BfsS2Config
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr
from fewlabel.segmentation.distance.data import (
    VAL_WHOLE_MAX_VOXELS,
    NormalisedImage,
    open_input_image,
)

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits, target, normalised_input)``, all ``(B, 1, Z, Y, X)``."""


@dataclass
class TrainVolume:
    """A normalised image and its float32 ZYX target."""

    image: NormalisedImage
    target: np.ndarray

    @property
    def sample(self) -> str:
        return self.image.sample

    def crop_volume(self) -> Any:
        from fewlabel.sampling import CropVolume

        return CropVolume(
            arrays=[self.image.array, self.target],
            name=self.sample,
            transforms=[self.image.normalise, None],
        )


def load_volume(
    item: Mapping[str, str],
    key: str,
    percentiles: Sequence[float],
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrainVolume:
    """Open ``item['image']`` and its target ``item[key]`` (same ZYX shape, checked)."""
    sample = item["sample"]
    image = open_input_image(sample, item["image"], dims=3, percentiles=percentiles)
    target = open_ome_zarr(item[key], sample=sample)
    if tuple(target.shape) != tuple(image.shape):
        raise InputDataError(
            f"{key} shape {tuple(target.shape)} differs from the image shape {image.shape}.",
            sample=sample,
            path=item[key],
            fix="rebuild the target from this image (rerun the workflow for this sample).",
        )
    data = np.asarray(target.array[...])
    data = convert(data) if convert is not None else data
    return TrainVolume(image=image, target=np.ascontiguousarray(data, dtype=np.float32))


def train_bfs_net(
    train: Sequence[TrainVolume],
    val: Sequence[TrainVolume],
    out_dir: str | Path,
    *,
    arch_name: str,
    params: BfsS1Config | BfsS2Config,
    loss_fn: LossFn,
    seed: int,
    threads: int,
    device: str,
    extra_training: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
    tune: Callable[[nn.Module, Sequence[TrainVolume]], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train one BFS-Net U-Net on random crops and write its model folder; return a summary.

    ``tune(model, train)`` (best weights, eval mode) adds values to thresholds.json."""
    from fewlabel.models.store import save_model
    from fewlabel.runtime import provenance
    from fewlabel.sampling import CropSampler
    from fewlabel.segmentation.bfs.models import build_bfs_net, unet_kwargs
    from fewlabel.training import CurveLogger, fit, json_ready

    if not train:
        raise ConfigError(
            f"{arch_name}: no training volumes.",
            fix="give at least one train row with task segment and a 'points' CSV.",
        )
    t0 = time.monotonic()
    kwargs = json_ready(unet_kwargs(params.model, params.crop[0]))
    model = build_bfs_net(**kwargs).to(device)
    if params.prior_bias:
        prior = float(np.clip(np.mean([float(np.mean(v.target)) for v in train]), 1e-4, 0.5))
        with torch.no_grad():
            model.out_conv.bias.fill_(float(np.log(prior / (1.0 - prior))))
        log.info("%s: output bias initialised to the target prior %.4g", arch_name, prior)
    sampler = CropSampler(
        [v.crop_volume() for v in train],
        params.crop,
        seed=seed,
        flip_axes=(0, 1, 2) if params.flip_z else (1, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

    def train_step_loss(net: nn.Module) -> torch.Tensor:
        x, y = sampler.sample(params.batch_size)
        xt = tensor(x)[:, None]
        return loss_fn(net(xt).float(), tensor(y)[:, None], xt)

    tuned_on = "val"
    if not val:
        log.warning("%s: no validation volumes; early stopping on the training volumes", arch_name)
        val, tuned_on = train, "train"
    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    for vol in val:
        if math.prod(vol.image.shape) <= VAL_WHOLE_MAX_VOXELS:
            x = vol.image.normalise(np.asarray(vol.image.array[...]))
            items.append((tensor(x)[None, None], tensor(vol.target)[None, None]))
        else:
            fixed = CropSampler([vol.crop_volume()], params.crop, seed=seed + 1, flip_axes=())
            for x, y in fixed.fixed_crops(params.val_crops, seed=seed + 1):
                items.append((tensor(x)[None, None], tensor(y)[None, None]))

    def validate(net: nn.Module) -> dict[str, float]:
        losses = [float(loss_fn(net(x).float(), y, x)) for x, y in items]
        return {"val_loss": float(np.mean(losses))}

    result = fit(
        model,
        optimizer=optimizer,
        train_step_loss=train_step_loss,
        validate=validate,
        epochs=params.epochs,
        steps_per_epoch=params.steps_per_epoch,
        device=device,
        patience=params.patience,
        curve=CurveLogger(title=arch_name),
        desc=arch_name,
    )
    thresholds = dict(thresholds or {})
    if tune is not None:
        model.load_state_dict(result.best_state)
        model.eval()
        with torch.no_grad():
            thresholds.update(tune(model, train))
    summary = {
        "n_train_images": len(train),
        "validated_on": tuned_on,
        **result.summary(t0),
        **thresholds,
    }
    training = {
        "stage": arch_name,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "threads": threads,
        "device": device,
        "train": [v.sample for v in train],
        "val": [v.sample for v in val] if tuned_on == "val" else [],
        **dict(extra_training or {}),
        **summary,
        "provenance": provenance(params.model_dump(mode="json")),
    }
    normalization = {
        "method": "percentile",
        "percentiles": list(params.percentiles),
        "per_volume": True,
        "mode": "volume",
        "dims": 3,
        "outputs": ["logit"],
        "prediction_outputs": ["probability"],
    }
    save_model(
        out_dir,
        result.best_state,
        arch={"name": arch_name, "kwargs": kwargs},
        training=training,
        thresholds=thresholds,
        curve=result.curve,
        normalization=normalization,
        extra_states={"weights_last": result.last_state},
    )
    log.info(
        "%s done: best epoch %d, val loss %.4f (%.1fs)",
        arch_name,
        summary["best_epoch"],
        summary["best_val_loss"],
        summary["seconds"],
    )
    return summary


def probability_and_target(
    model: nn.Module, vol: TrainVolume, crop: Sequence[int], n_crops: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """σ(logit) and the target on the same voxels of a training volume (flattened): the whole
    volume when small, else ``n_crops`` fixed crops."""
    from fewlabel.sampling import CropSampler

    if math.prod(vol.image.shape) <= VAL_WHOLE_MAX_VOXELS:
        pairs = [(vol.image.normalise(np.asarray(vol.image.array[...])), vol.target)]
    else:
        fixed = CropSampler([vol.crop_volume()], crop, seed=0, flip_axes=())
        pairs = [(x, y) for x, y in fixed.fixed_crops(n_crops, seed=0)]
    probs, targets = [], []
    for x, y in pairs:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
        probs.append(torch.sigmoid(model(t).float()).cpu().numpy().ravel())
        targets.append(np.asarray(y, dtype=np.float32).ravel())
    return np.concatenate(probs), np.concatenate(targets)


class Probability(nn.Module):
    """``σ(logit)`` of a one-output network, for the tiled engine."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.module(x).float())

    def receptive_field(self) -> tuple[int, int, int]:
        return self.module.receptive_field()  # type: ignore[operator]


def predict_probability(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    expect: str,
    params: Any,
    sample: str,
    threads: int = 1,
) -> dict[str, Any]:
    """σ(logit) of a BFS-Net model over one image, tiled (float32 ZYX OME-Zarr)."""
    from fewlabel.device import configure_torch
    from fewlabel.inference.engine import predict_with_module
    from fewlabel.models.store import load_model

    device = configure_torch(threads, 0)
    loaded = load_model(model_dir, device, expect=expect)
    adapter = Probability(loaded.module).eval()
    return predict_with_module(
        adapter,
        image_path,
        output_path,
        params=params,
        sample=sample,
        normalization=loaded.normalization,
        arch=loaded.arch,
        device=device,
        model_info={"model_dir": str(model_dir), "arch": loaded.arch, "channels": ["prob"]},
    )
