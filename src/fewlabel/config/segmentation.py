"""The ``segmentation`` section: ISL pretraining, segmenter fine-tuning, tiled prediction and
h-maxima + watershed instances."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from fewlabel.config.base import (
    ConfigModel,
    NonNegInt,
    OpenFraction,
    PosFloat,
    PosInt,
    ZYXInt,
    ZYXNonNegInt,
    like,
)
from fewlabel.config.bfs import BfsConfig
from fewlabel.config.shared import PredictConfig, TrainConfig, UNetConfig

MaskLoss = Literal["bce", "dice", "focal", "focal_tversky", "combined", "combined_ft"]
MASK_LOSSES: tuple[str, ...] = typing.get_args(MaskLoss)
_COMBINED = ("preset", "weights", "w_cell", "smooth", "focal_gamma", "focal_alpha")
LOSS_PARAMETERS: dict[str, tuple[str, ...]] = {
    "bce": ("w_cell",),
    "dice": ("smooth",),
    "focal": ("gamma", "alpha"),
    "focal_tversky": ("alpha", "beta", "gamma", "smooth"),
    "combined": _COMBINED,
    "combined_ft": (*_COMBINED, "tversky_alpha", "tversky_beta", "tversky_gamma"),
    "mask_distance": ("alpha", "mask_loss", "mask_params", "w_cell"),
}
"""Keyword parameters of each loss of :func:`fewlabel.segmentation.losses.build_loss` (kept
torch-free here so that ``loss_params`` fail at parse time; a unit test compares them with the
loss functions' signatures)."""


class UNetTrainConfig(TrainConfig):
    """Training loop of the U-Net trainers (ISL and segmenter): 2D or 3D."""

    dims: Literal[2, 3] = Field(
        3,
        description="3: z-stack -> 3D network | 2: focal planes as "
        "channels of a 2D network (crop z ignored)",
    )
    epochs: PosInt = like(TrainConfig, "epochs", 25)
    steps_per_epoch: PosInt = like(TrainConfig, "steps_per_epoch", 8)
    batch_size: PosInt = like(TrainConfig, "batch_size", 2)
    crop: ZYXInt = Field((8, 48, 48), description="random crop z, y, x (z ignored when dims: 2)")
    patience: PosInt = Field(
        25,
        description="early stopping: epochs without a better "
        "validation loss (L1 on sparse targets plateaus early: keep "
        "training)",
    )
    val_crops: PosInt = like(TrainConfig, "val_crops", 4)


class IslConfig(UNetTrainConfig):
    """``pretrain_isl``: U-Net label-free -> fluorescence, L1 loss, Adam (in silico
    labelling seed)."""

    lr: PosFloat = like(TrainConfig, "lr", 4e-3)
    model: UNetConfig = Field(default_factory=UNetConfig, description="U-Net body")


class SegmenterModelConfig(UNetConfig):
    """Segmenter network: the U-Net body (used with ``init: scratch``; with ``init: isl`` the
    ISL model's body wins) and the mask + distance head."""

    head_channels: Annotated[int, Field(ge=2)] = Field(
        8, description="channels of the head's hidden layer"
    )
    head_kernel: Literal[1, 3] = Field(3, description="kernel size of the head's first convolution")


def _default_mask_grid() -> tuple[float, ...]:
    return (0.3, 0.4, 0.5, 0.6, 0.7)


def _check_loss_params(name: str, params: dict[str, Any], where: str) -> None:
    allowed = LOSS_PARAMETERS[name]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss '{name}' has no parameter(s) {unknown} in {where}; allowed: {list(allowed)}"
        )
    if name == "mask_distance":
        mask_loss = params.get("mask_loss", "bce")
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss {mask_loss!r} is not one of {list(MASK_LOSSES)}")
        mask_params = params.get("mask_params") or {}
        if not isinstance(mask_params, dict):
            raise ValueError("mask_params must be a mapping")
        _check_loss_params(mask_loss, mask_params, f"{where}.mask_params")


class SegmenterTrainConfig(UNetTrainConfig):
    """``train_segmenter``: mask + distance heads fine-tuned from the ISL network (or from
    scratch); mask threshold tuned on validation Dice, h on validation instance F1."""

    init: Literal["isl", "scratch"] = Field(
        "isl", description="isl: fine-tune the ISL network | scratch: random initialisation"
    )
    loss: Literal["mask_distance"] | MaskLoss = Field(
        "mask_distance",
        description="mask_distance (MSE + alpha * BCE) or the mask term's loss "
        "(bce | dice | focal | focal_tversky | combined | combined_ft)",
    )
    loss_params: dict[str, Any] = Field(
        default_factory=dict,
        description="parameters of the loss, e.g. {preset: balanced} for combined",
    )
    lr: PosFloat = like(TrainConfig, "lr", 2e-3)
    threshold_grid: Annotated[tuple[OpenFraction, ...], Field(min_length=1)] = Field(
        default_factory=_default_mask_grid,
        description="mask thresholds tried on the validation images (Dice)",
    )
    model: SegmenterModelConfig = Field(
        default_factory=SegmenterModelConfig, description="segmenter network"
    )

    @field_validator("loss_params")
    @classmethod
    def _known_loss_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "loss" in info.data:  # else the loss itself is invalid (reported on its own)
            _check_loss_params(info.data["loss"], value, "loss_params")
        return value


class SegmentationPredictConfig(PredictConfig):
    """Tiled inference of the ISL and segmenter models (float32 by default: the segmenter's
    thresholds are tuned on float32 validation predictions)."""

    tile: ZYXInt = like(PredictConfig, "tile", (16, 96, 96))
    overlap: ZYXNonNegInt = like(PredictConfig, "overlap", (8, 44, 44))
    precision: Literal["auto", "float32", "bfloat16", "float16"] = like(
        PredictConfig, "precision", "float32"
    )


class InstancesConfig(ConfigModel):
    """``split_instances``: h-maxima markers + watershed on the mask / distance prediction
    (chunk-safe; :mod:`fewlabel.segmentation.instances`)."""

    mask_threshold: OpenFraction | Literal["auto"] = Field(
        "auto",
        description="foreground = mask probability > this; auto: the threshold the "
        "segmenter tuned on its validation images (thresholds.json)",
    )
    h: PosFloat | Literal["auto"] = Field(
        "auto",
        description="h-maxima height (distance units); auto: tuned on validation (instance F1@0.5)",
    )
    min_size: NonNegInt = Field(0, description="remove objects with fewer voxels (0: keep all)")
    fill_holes: bool = Field(False, description="fill enclosed background inside each object")
    halo: ZYXNonNegInt = Field(
        (8, 32, 32),
        description="voxels of context z, y, x around each block; must exceed the largest object",
    )


class SegmentationConfig(ConfigModel):
    """Few-image instance segmentation (ISL seed + loss-function seed)."""

    enabled: bool = Field(True, description="run segmentation (samples with task segment/both)")
    method: Literal["distance", "bfs"] = Field(
        "distance",
        description="distance: mask + distance segmenter trained on instance labels | bfs: "
        "BFS-Net trained on centroid clicks only (train rows need 'points', not 'labels')",
    )
    pretrain_isl: bool = Field(
        True, description="pretrain label-free -> fluorescence, then fine-tune from it"
    )
    model: str | None = Field(
        None,
        description="a trained segmenter folder to reuse (e.g. "
        "results/models/segmenter of an earlier run): no ISL pretraining "
        "or fine-tuning; null trains on the sheet's rows with labels",
    )
    isl: IslConfig = Field(default_factory=IslConfig, description="ISL pretraining")
    train: SegmenterTrainConfig = Field(
        default_factory=SegmenterTrainConfig, description="segmenter training"
    )
    predict: SegmentationPredictConfig = Field(
        default_factory=SegmentationPredictConfig,
        description="tiled inference for ISL and segmenter models",
    )
    instances: InstancesConfig = Field(
        default_factory=InstancesConfig, description="instance splitting"
    )
    bfs: BfsConfig = Field(
        default_factory=BfsConfig, description="BFS-Net (method: bfs; Dehghani et al.)"
    )
