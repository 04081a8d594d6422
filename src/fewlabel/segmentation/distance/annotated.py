"""Annotated images of segmenter training: instance targets, loading, validation set.

:func:`instance_targets` builds the mask + normalised distance targets from an instance label
image (see :mod:`fewlabel.segmentation.distance.segmenter`), :func:`load_annotated` opens and
checks one image with its labels, and :func:`validation_set` builds the per-epoch validation
closure used by :func:`fewlabel.segmentation.distance.segmenter.train_segmenter`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from fewlabel.config import SegmenterTrainConfig
from fewlabel.errors import InputDataError
from fewlabel.io import open_ome_zarr
from fewlabel.segmentation.distance.data import (
    VAL_WHOLE_MAX_VOXELS,
    NormalisedImage,
    expected_target_shape,
    open_input_image,
    to_model_input,
    to_model_target,
    train_crop,
)
from fewlabel.segmentation.distance.tuning import dice_counts

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- targets
def instance_targets(
    labels: np.ndarray, voxel_size: Sequence[float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """``(2, Z, Y, X)`` float32 targets from ZYX instance labels: mask and normalised distance.

    ``d(v) = EDT_i(v) / max EDT_i`` for ``v`` in object ``i``, where ``EDT_i`` is the Euclidean
    distance (µm, ``sampling = voxel_size``) to the nearest voxel outside object ``i`` within
    the image (:mod:`fewlabel.segmentation.distance.segmenter`); 0 on the background.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    mask = labels > 0
    distance = np.zeros(labels.shape, dtype=np.float32)
    sampling = [float(v) for v in voxel_size][-3:]
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        inside = labels[grown] == index
        edt = ndi.distance_transform_edt(inside, sampling=sampling)
        peak = float(edt.max())
        if peak <= 0:
            continue
        region = distance[grown]
        region[inside] = (edt[inside] / peak).astype(np.float32)
    return np.stack([mask.astype(np.float32), distance])


# --------------------------------------------------------------------------- data
@dataclass
class AnnotatedImage:
    image: NormalisedImage
    targets: np.ndarray  # (2, Z, Y, X); 2D: (2, 1, Y, X)
    labels: np.ndarray  # instance labels, ZYX (2D: 1 × Y × X)
    n_objects: int

    @property
    def sample(self) -> str:
        return self.image.sample

    def crop_volume(self) -> Any:
        from fewlabel.sampling import CropVolume

        return CropVolume(
            arrays=[self.image.array, self.targets],
            name=self.sample,
            transforms=[self.image.normalise, None],
        )


def load_annotated(
    item: Mapping[str, str], params: SegmenterTrainConfig, planes: int | None, *, training: bool
) -> AnnotatedImage:
    sample = item["sample"]
    image = open_input_image(
        sample, item["image"], dims=params.dims, percentiles=params.percentiles, planes=planes
    )
    labels = open_ome_zarr(item["labels"], sample=sample)
    expected = expected_target_shape(image.shape, params.dims)
    if tuple(labels.shape) != expected:
        raise InputDataError(
            f"instance label shape {tuple(labels.shape)} differs from the image shape "
            f"{image.shape} (expected {expected}{'; 2D: one plane' if params.dims == 2 else ''}).",
            sample=sample,
            path=item["labels"],
            fix="give the instance mask of the same field of view (sheet column 'labels').",
        )
    data = np.asarray(labels.array[...])
    if data.dtype.kind not in "uib":
        raise InputDataError(
            f"instance labels have non-integer dtype {data.dtype}.",
            sample=sample,
            path=item["labels"],
            fix="save instance labels as an integer image (0 = background).",
        )
    n_objects = int(len(np.unique(data[data > 0])))
    if n_objects == 0:
        if training:
            raise InputDataError(
                "the instance label image holds no objects (every voxel is 0), so it cannot "
                "teach the segmenter what to segment.",
                sample=sample,
                path=item["labels"],
                fix="annotate the objects of this image, or give it the split 'test'/'predict' "
                "instead of 'train'.",
            )
        log.warning("validation sample %s has no labelled objects", sample)
    targets = instance_targets(data, image.voxel_size)
    log.info(
        "%s sample %s: image %s, %d objects, intensity range [%g, %g]",
        "training" if training else "validation",
        sample,
        image.shape,
        n_objects,
        image.low,
        image.high,
    )
    return AnnotatedImage(image=image, targets=targets, labels=data, n_objects=n_objects)


def validation_set(
    vols: Sequence[AnnotatedImage],
    params: SegmenterTrainConfig,
    loss_fn: nn.Module,
    device: str,
    seed: int,
) -> tuple[
    Callable[[nn.Module], dict[str, float]],
    list[tuple[torch.Tensor, torch.Tensor]],
    list[tuple[torch.Tensor, AnnotatedImage]],
]:
    """Validation closure, its (input, target) tensors, and the whole-image inputs with their
    volumes (images up to VAL_WHOLE_MAX_VOXELS; larger ones are validated on fixed crops)."""
    from fewlabel.sampling import CropSampler

    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    whole: list[tuple[torch.Tensor, AnnotatedImage]] = []
    for vol in vols:
        if math.prod(vol.image.shape) <= VAL_WHOLE_MAX_VOXELS:
            x = vol.image.normalise(np.asarray(vol.image.array[...]))[None]
            x_model = to_model_input(x, params.dims, device)
            items.append((x_model, to_model_target(vol.targets[None], params.dims, device)))
            whole.append((x_model, vol))
        else:
            sampler = CropSampler(
                [vol.crop_volume()], train_crop(params, params.dims), seed=seed + 1, flip_axes=()
            )
            for x, y in sampler.fixed_crops(params.val_crops, seed=seed + 1):
                items.append(
                    (
                        to_model_input(x[None], params.dims, device),
                        to_model_target(y[None], params.dims, device),
                    )
                )

    def validate(model: nn.Module) -> dict[str, float]:
        losses, num, den = [], 0.0, 0.0
        for x, y in items:
            out = model(x).float()
            losses.append(float(loss_fn(out, y)))
            a, b = dice_counts(torch.sigmoid(out[:, 0]), y[:, 0], 0.5)
            num, den = num + a, den + b
        return {"val_loss": float(np.mean(losses)), "val_dice": num / den if den else 1.0}

    return validate, items, whole
