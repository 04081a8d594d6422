"""The ``detection.pu`` section: few-shot particle picking by positive-unlabelled learning
(Vedrenne, Baudrier, Fortun; :mod:`fewlabel.detection.pu`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fewlabel.config.base import (
    ConfigModel,
    NonNegFloat,
    OpenFraction,
    Percentiles,
    PosFloat,
    PosInt,
    ZYXFloat,
    ZYXInt,
)
from fewlabel.config.shared import IntensityAugmentConfig, NormalisationConfig, PredictConfig


class PUModelConfig(ConfigModel):
    """Fully convolutional 3D EfficientNet-b0-style window classifier
    (:class:`fewlabel.detection.pu.classifier.PUClassifier`): valid convolutions, stride 1, so
    the receptive field equals the window and dense prediction equals window classification."""

    width: PosInt = Field(16, description="stem channels (EfficientNet-b0: 32)")
    channels: list[PosInt] = Field(
        [16, 24, 40, 80], description="output channels of the MBConv blocks (one block each)"
    )
    expand: PosInt = Field(4, description="MBConv expansion ratio (b0: 6; first block: 1)")
    head_channels: PosInt = Field(64, description="1x1 head channels before pooling (b0: 1280)")
    drop_connect: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.2, description="drop-connect (stochastic depth) rate of the last residual block"
    )
    reconstruction: bool = Field(
        True, description="auxiliary reconstruction head, loss weight learned (Kendall et al.)"
    )


class PUAugmentConfig(ConfigModel):
    """Window augmentation: rotations in the yx plane only and flips (anisotropic data),
    isotropic scaling."""

    rotate_yx: bool = Field(True, description="random rotation about z (yx plane)")
    flip: bool = Field(True, description="random flips along y and x (and z)")
    scale: tuple[PosFloat, PosFloat] = Field((0.8, 1.2), description="scaling range (low, high)")
    intensity: IntensityAugmentConfig = Field(
        default_factory=IntensityAugmentConfig,
        description="random gain, offset and noise per window (as detection.train."
        "intensity_augment)",
    )


class PUAveragingConfig(ConfigModel):
    """Weight averaging (paper §2.2): true SWA (Izmailov et al. 2018; equal average of the
    weights at the end of each cycle of a cyclic learning rate, then BatchNorm statistics
    recomputed) or the EMA used by the paper authors' code."""

    mode: Literal["swa", "ema", "none"] = Field("swa", description="swa | ema | none")
    start: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.5, description="fraction of the steps before averaging starts"
    )
    cycle_steps: PosInt = Field(10, description="steps per learning-rate cycle (one average each)")
    lr_max: PosFloat = Field(0.02, description="cyclic learning rate at the start of a cycle")
    lr_min: PosFloat = Field(0.002, description="cyclic learning rate at the end of a cycle")
    ema_keep: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="ema: avg = ema_keep * avg + (1 - ema_keep) * new (authors' code: 0.1)"
    )


class PUPostprocessConfig(ConfigModel):
    """Post-processing of the dense score map (paper §2.2, Fig. 3), each step switchable:
    threshold → NMS (sphere of radius r) → average overlapping predictions → recentre on the
    Otsu-thresholded centre of mass → CLAHE + Otsu intensity filter."""

    nms: bool = Field(True, description="NMS with the particle sphere (else every local maximum)")
    average: bool = Field(True, description="average predictions closer than merge_factor * 2r")
    merge_factor: PosFloat = Field(
        1.0, description="overlapping = centres closer than merge_factor x the diameter 2r"
    )
    recentre: bool = Field(True, description="recentre on the crop's Otsu centre of mass")
    recentre_tol_voxels: PosFloat = Field(0.1, description="stop when the shift is below this")
    recentre_max_iter: PosInt = Field(20, description="maximum recentring iterations")
    intensity_filter: bool = Field(True, description="drop candidates below Otsu after CLAHE")
    roi_filter: bool = Field(True, description="drop candidates outside the ROI mask (if any)")
    edge_margin_um: NonNegFloat = Field(
        0.0, description="drop candidates closer than this to the volume border (µm)"
    )
    clahe_kernel_um: ZYXFloat = Field(
        (2.0, 2.0, 2.0), description="CLAHE context size z, y, x (µm) of the intensity filter"
    )
    clahe_clip_limit: Annotated[float, Field(gt=0, le=1)] = Field(
        0.01, description="CLAHE clip limit of the intensity filter"
    )


def _pu_normalisation() -> NormalisationConfig:
    # background: the small window classifies on the local contrast, not on absolute
    # intensities that vary between volumes (validation: benchmarks/real_spots README, protocol 2)
    return NormalisationConfig(mode="background")


def _pu_predict() -> PredictConfig:
    # float32: the auto threshold is tuned on float32 training score maps (fit.py)
    return PredictConfig(
        tile=(32, 96, 96), overlap=(12, 24, 24), pad_to_tile=True, precision="float32"
    )


class PUConfig(ConfigModel):
    """``method: pu`` (Vedrenne et al.; Topaz GE-binomial): windows at clicks (positive) and
    at random ROI voxels (unlabelled), the GE-binomial loss with the class prior π, SWA, dense
    tiled prediction, post-processing. π = k · |ball(r)| / |ROI| is reduced by the labelled
    fraction (Topaz): π_U = (π − f_L)/(1 − f_L); π ≤ f_L is an error (not a silent fallback)."""

    window: ZYXInt = Field(
        (12, 24, 24), description="classifier window z, y, x (voxels) = receptive field"
    )
    radius_um: PosFloat | None = Field(
        None, description="particle radius r (µm); null: roi.particle_radius_um"
    )
    expected_particles: PosInt | None = Field(
        None, description="k, expected particles per volume; null: roi.expected_particles"
    )
    loss: Literal["ge_binomial", "pn"] = Field(
        "ge_binomial",
        description="ge_binomial: PU (paper eq. 1) | pn: unlabelled windows are negatives",
    )
    slack: NonNegFloat = Field(1.0, description="λ, weight of the GE-binomial term")
    batch_size: Annotated[int, Field(ge=2)] = Field(64, description="windows per mini-batch")
    positive_share: OpenFraction = Field(
        0.125, description="share of each batch centred on labelled positives"
    )
    steps: PosInt = Field(400, description="optimiser steps")
    lr: PosFloat = Field(0.02, description="SGD (momentum 0.9) learning rate, cosine decay")
    weight_decay: NonNegFloat = Field(1e-4, description="weight decay")
    percentiles: Percentiles = Field(
        (1.0, 99.8),
        description="per-volume intensity normalisation percentiles (normalisation mode "
        "percentile)",
    )
    normalisation: NormalisationConfig = Field(
        default_factory=_pu_normalisation,
        description="input intensity normalisation of training windows, the auto threshold's "
        "score maps and tiled prediction (as detection.train.normalisation; mode percentile "
        "uses detection.pu.percentiles)",
    )
    model: PUModelConfig = Field(default_factory=PUModelConfig, description="classifier")
    augment: PUAugmentConfig = Field(default_factory=PUAugmentConfig, description="augmentation")
    averaging: PUAveragingConfig = Field(
        default_factory=PUAveragingConfig, description="SWA / EMA weight averaging"
    )
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = Field(
        "auto",
        description="score threshold of the post-processing; auto: the score at which the "
        "training volumes hold k (expected_particles) detections each, counted after the "
        "averaging step (postprocess.average) so that paired maxima count once",
    )
    predict: PredictConfig = Field(
        default_factory=_pu_predict,
        description="tiled dense prediction (overlap >= window - 1 for seam-free maps)",
    )
    postprocess: PUPostprocessConfig = Field(
        default_factory=PUPostprocessConfig, description="post-processing steps"
    )

    @model_validator(mode="after")
    def _window_fits_tile(self) -> PUConfig:
        if any(w > t for w, t in zip(self.window, self.predict.tile, strict=True)):
            raise ValueError(
                f"window {list(self.window)} is larger than predict.tile "
                f"{list(self.predict.tile)}: enlarge detection.pu.predict.tile"
            )
        return self
