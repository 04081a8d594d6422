"""Few-image instance segmentation: fine-tune the ISL U-Net to a mask + distance segmenter.

Targets (built on the fly from an instance label image, ISL seed): the foreground mask
``g = [labels > 0]`` and the distance map ``d``: for each object ``i`` the Euclidean distance of
its voxels to the nearest voxel *not* in object ``i`` (background or another object), computed
with :func:`scipy.ndimage.distance_transform_edt` using the voxel size as sampling, normalised
by the object's maximum, so ``d ∈ [0, 1]`` peaks at 1 in every object's centre and touching
objects are separated by a valley (image borders do not count as background).

Network (:class:`fewlabel.models.unet.Segmenter`, arch ``segmenter``): the ISL U-Net body
(its single linear fluorescence output ``f̂`` kept) + head ``Conv(1→8)→ReLU→Conv(8→2)`` on
``f̂ − 0.5``; channel 0 = mask logit ``z``, channel 1 = distance ``d̂``.

* ``init: isl`` — the body gets the ISL model's weights (same architecture, read from its
  model.json: dims, planes, channels, depth, norm, pooling); the head starts as the adapted
  output activation centred at 0.5: ``z = 4·(f̂ − 0.5)``, ``d̂ = ReLU(f̂ − 0.5)``
  (:meth:`Segmenter.init_head_from_fluorescence`), so training starts from
  ``mask = σ(4·(f̂ − 0.5))``. All weights are then fine-tuned.
  Without an ISL folder (pretraining disabled: ``--init-from ''``) ``init: isl`` falls back to
  scratch with a warning; training.json records ``init: scratch, init_requested: isl``.
* ``init: scratch`` — the same architecture (from ``model`` params), random initialisation.

Loss: ``L = MSE(d̂, d) + α·L_mask(z, g)`` (:func:`fewlabel.segmentation.losses.build_loss`
``mask_distance``; α = MSE₀/L_mask,₀ from the first batch). ``loss`` names the mask term's loss
(``bce`` (default of mask_distance), ``dice``, ``focal``, ``focal_tversky``, ``combined``,
``combined_ft``) with ``loss_params`` as its parameters; ``loss: mask_distance`` takes
``loss_params`` for the mask_distance loss itself (alpha, mask_loss, mask_params, w_cell).
Adam; random crops + flips of the percentile-normalised image; validation each epoch on whole
images (large: fixed crops): ``val_loss`` (early stopping, best weights) and ``val_dice`` of
``σ(z) > 0.5``. With the best weights, the mask threshold maximising the pooled validation
Dice over ``threshold_grid`` is stored in thresholds.json (``mask_threshold``), and so is the
h-maxima height ``h`` that maximises the instance F1@0.5 on the whole validation images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewlabel.config import SegmenterTrainConfig
from fewlabel.errors import ConfigError, ModelError
from fewlabel.segmentation.distance.annotated import load_annotated, validation_set
from fewlabel.segmentation.distance.data import (
    PLANES_AS_CHANNELS,
    coerce_items,
    flip_axes,
    to_model_input,
    to_model_target,
    train_crop,
)
from fewlabel.segmentation.distance.tuning import tune_h, tune_threshold
from fewlabel.training import json_ready

log = logging.getLogger(__name__)

HEAD_GAIN = 4.0
"""Initial slope of the ISL-initialised mask logit ``z = HEAD_GAIN·(f̂ − 0.5)``."""


def build_segmenter_loss(params: SegmenterTrainConfig) -> nn.Module:
    """The mask + distance loss module of ``params`` (see the module docstring): ``loss:
    mask_distance`` takes ``loss_params`` itself, any other ``loss`` names the mask term."""
    from fewlabel.segmentation.losses import build_loss

    if params.loss == "mask_distance":
        return build_loss("mask_distance", **params.loss_params)
    return build_loss("mask_distance", mask_loss=params.loss, mask_params=dict(params.loss_params))


# --------------------------------------------------------------------------- model setup
def _isl_body(
    init_from: str | Path, params: SegmenterTrainConfig, planes: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(body kwargs, body state_dict, ISL normalisation) of an ISL model folder, checked."""
    from fewlabel.models.store import load_model

    isl = load_model(init_from, "cpu", expect="unet")
    kwargs = dict(isl.arch["kwargs"])
    isl_dims = int(kwargs.get("dims", 3))
    if isl_dims != params.dims:
        raise ModelError(
            f"the ISL model is {isl_dims}D but the segmenter is configured as {params.dims}D; "
            "its weights cannot initialise the segmenter.",
            path=init_from,
            fix=f"pretrain ISL with dims: {params.dims}, set the segmenter dims to {isl_dims}, "
            "or use init: scratch.",
        )
    if int(kwargs.get("out_channels", 1)) != 1:
        raise ModelError(
            f"the ISL model has {kwargs.get('out_channels')} output channels; the "
            "segmenter head expects one fluorescence output.",
            path=init_from,
        )
    want = planes if params.dims == 2 else 1
    if int(kwargs.get("in_channels", 1)) != want:
        raise ModelError(
            f"the ISL model takes {kwargs.get('in_channels')} input plane(s)/channel(s) but the "
            f"segmentation images have {want}.",
            path=init_from,
            fix="pretrain ISL on images with the same number of planes, or use init: scratch.",
        )
    if kwargs.get("final_activation") is not None:
        log.warning(
            "ISL model has final activation %r; the segmenter body uses a linear output",
            kwargs.get("final_activation"),
        )
    body = {
        k: kwargs[k]
        for k in ("dims", "in_channels", "base_channels", "depth", "norm", "pool_z", "pool_kernels")
        if k in kwargs
    }
    mine = params.model
    differs = {
        k: (getattr(mine, k), body[k])
        for k in ("base_channels", "depth", "norm")
        if k in body and getattr(mine, k) != body[k]
    }
    if differs:
        log.warning(
            "init: isl - the body architecture comes from the ISL model; ignoring the "
            "segmenter 'model' values (mine, ISL's): %s",
            differs,
        )
    state = dict(isl.module.state_dict())
    return body, state, isl.normalization


def _build_segmenter(
    params: SegmenterTrainConfig, init_from: str | Path | None, planes: int | None, device: str
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    from fewlabel.models.unet import Segmenter

    head = {
        "head_channels": params.model.head_channels,
        "head_kernel": params.model.head_kernel,
        "center": 0.5,
    }
    info: dict[str, Any] = {"init": params.init, "init_requested": params.init, "init_from": None}
    if params.init == "isl" and not init_from:
        log.warning(
            "segmenter init is 'isl' but no ISL model folder was given (ISL "
            "pretraining disabled or without paired data): training from scratch"
        )
        info["init"] = "scratch"
    if info["init"] == "isl":
        body, state, isl_norm = _isl_body(str(init_from), params, planes)
        kwargs = {**body, **head}
        model = Segmenter(**kwargs)
        model.body.load_state_dict(state, strict=True)
        model.init_head_from_fluorescence(HEAD_GAIN)
        info.update(
            init_from=str(init_from),
            head_gain=HEAD_GAIN,
            isl_percentiles=isl_norm.get("percentiles"),
        )
        if list(isl_norm.get("percentiles", params.percentiles)) != list(params.percentiles):
            log.warning(
                "ISL model was trained with percentiles %s, the segmenter uses %s",
                isl_norm.get("percentiles"),
                list(params.percentiles),
            )
    else:
        if init_from:
            log.info("init: scratch - ignoring the ISL model folder %s", init_from)
        crop = train_crop(params, params.dims)
        kwargs = {
            "dims": params.dims,
            "in_channels": planes if params.dims == 2 else 1,
            "base_channels": params.model.base_channels,
            "depth": params.model.depth,
            "norm": params.model.norm,
            "pool_z": params.model.resolve_pool_z(params.dims, crop[0]),
            "pool_kernels": params.model.pool_kernels,
            **head,
        }
        model = Segmenter(**kwargs)
    return model.to(device), json_ready(kwargs), info


# --------------------------------------------------------------------------- training
def train_segmenter(
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    params: SegmenterTrainConfig | None = None,
    init_from: str | Path | None = None,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Fine-tune (``init: isl``) or train from scratch the mask + distance segmenter.

    Parameters
    ----------
    train_items, val_items : dicts ``{sample, image, labels}`` (label-free image and instance
        label OME-Zarr). The training-set size is the number of train items (1, 2, 10, ...).
        Without validation items the training images are used for early stopping (logged).
    out_dir : model folder (weights.pt = best, weights_last.pt, model.json (arch 'segmenter'),
        training.json, thresholds.json (mask_threshold), normalization.json, curve.tsv/png).
    params : :class:`~fewlabel.config.SegmenterTrainConfig` (``segmentation.train``; default:
        its defaults).
    init_from : ISL model folder for ``init: isl`` (None/'' → from scratch, with a warning);
        ignored for ``init: scratch``.
    seed, threads : determinism and CPU threads.

    Returns
    -------
    Summary dict: best epoch, validation loss and Dice, tuned mask threshold, timing.
    """
    from fewlabel.device import configure_torch
    from fewlabel.models.store import save_model
    from fewlabel.models.unet import SEGMENTER_ARCH_NAME
    from fewlabel.runtime import provenance
    from fewlabel.sampling import CropSampler
    from fewlabel.training import CurveLogger, fit

    params = params if params is not None else SegmenterTrainConfig()
    train = coerce_items(train_items, ("image", "labels"), "segmenter training")
    val = coerce_items(val_items, ("image", "labels"), "segmenter validation")
    if not train:
        raise ConfigError(
            "no samples with instance labels in the train split; the segmenter "
            "needs at least one annotated training image.",
            fix="set split=train and a 'labels' file for at least one sample.",
        )
    device = configure_torch(threads, seed)
    t0 = time.monotonic()
    first = load_annotated(train[0], params, None, training=True)
    planes = first.image.shape[0] if params.dims == 2 else None
    train_vols = [first] + [load_annotated(i, params, planes, training=True) for i in train[1:]]
    val_vols = [load_annotated(i, params, planes, training=False) for i in val]
    tuned_on = "val"
    if not val_vols:
        log.warning(
            "no validation images: early stopping and the mask threshold use the "
            "training images (optimistic)"
        )
        val_vols, tuned_on = train_vols, "train"
    model, kwargs, init_info = _build_segmenter(params, init_from, planes, device)
    log.info(
        "segmenter (%s init): %d train / %d val image(s), dims %d, %d parameters, "
        "receptive field %s, device %s, seed %d, %d thread(s)",
        init_info["init"],
        len(train_vols),
        len(val),
        params.dims,
        sum(p.numel() for p in model.parameters()),
        model.receptive_field(),
        device,
        seed,
        threads,
    )
    loss_fn = build_segmenter_loss(params).to(device)
    sampler = CropSampler(
        [v.crop_volume() for v in train_vols],
        train_crop(params, params.dims),
        seed=seed,
        flip_axes=flip_axes(params, params.dims),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)

    def train_step_loss(net: nn.Module) -> torch.Tensor:
        x, y = sampler.sample(params.batch_size)
        out = net(to_model_input(x, params.dims, device))
        return loss_fn(out.float(), to_model_target(y, params.dims, device))

    validate, val_tensors, val_whole = validation_set(val_vols, params, loss_fn, device, seed)
    result = fit(
        model,
        optimizer=optimizer,
        train_step_loss=train_step_loss,
        validate=validate,
        epochs=params.epochs,
        steps_per_epoch=params.steps_per_epoch,
        device=device,
        patience=params.patience,
        curve=CurveLogger(title=f"segmenter ({init_info['init']} init)"),
        desc="train_segmenter",
    )
    model.load_state_dict(result.best_state)
    model.eval()
    thresholds = tune_threshold(model, val_tensors, params.threshold_grid, tuned_on)
    thresholds.update(tune_h(model, val_whole, thresholds["mask_threshold"], tuned_on))
    best_row = result.curve.loc[result.curve["epoch"] == result.best_epoch].iloc[0]
    alpha = getattr(loss_fn, "alpha", None)
    summary = {
        "init": init_info["init"],
        "n_train_images": len(train_vols),
        **result.summary(t0),
        "best_val_dice": float(best_row["val_dice"]),
        "mask_threshold": thresholds["mask_threshold"],
        "h": thresholds["h"],
    }
    normalization = {
        "method": "percentile",
        "percentiles": list(params.percentiles),
        "per_volume": True,
        "mode": PLANES_AS_CHANNELS if params.dims == 2 else "volume",
        "dims": params.dims,
        "planes": planes,
        "outputs": ["mask_logit", "distance"],
        "prediction_outputs": ["mask_probability", "distance"],
    }
    training = {
        "stage": "train_segmenter",
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "threads": threads,
        "device": device,
        "train": train,
        "val": val,
        **init_info,
        "loss_alpha": None if alpha is None else float(alpha),
        "objects": {v.sample: v.n_objects for v in train_vols},
        "normalisation_ranges": {v.sample: [v.image.low, v.image.high] for v in train_vols},
        **summary,
        "provenance": provenance(params.model_dump(mode="json")),
    }
    save_model(
        out_dir,
        result.best_state,
        arch={"name": SEGMENTER_ARCH_NAME, "kwargs": kwargs},
        training=training,
        thresholds=thresholds,
        curve=result.curve,
        normalization=normalization,
        extra_states={"weights_last": result.last_state},
    )
    log.info(
        "segmenter done: best epoch %d, val loss %.4f, val Dice %.3f, mask threshold %.2f, "
        "h %s (%.1fs)",
        summary["best_epoch"],
        summary["best_val_loss"],
        summary["best_val_dice"],
        summary["mask_threshold"],
        summary["h"],
        summary["seconds"],
    )
    return summary
