"""The ``segmentation.bfs`` sub-section: BFS-Net (Dehghani et al.), instance segmentation from
centroid clicks only (:mod:`fewlabel.segmentation.bfs`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fewlabel.config.base import ConfigModel, OpenFraction, PosFloat, PosInt, ZYXInt, like
from fewlabel.config.shared import TrainConfig, UNetConfig

THRESHOLD_GRID = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)
THRESHOLD_GRID += (0.075, 0.1, 0.15, 0.2, 0.3, 0.5)


class BfsCentresConfig(ConfigModel):
    """Voronoi centre maps (paper eq. 1): ``p = 0`` on Voronoi borders, ``exp(−k·D/d_m)`` where
    the distance ``D`` (µm) to the nearest click is ≤ ``d_m``, else 0."""

    k: PosFloat = Field(2.0, description="decay k of exp(-k * D / d_m)")
    d_m: PosFloat = Field(
        3.0, description="d_m (µm): radius of the centre blob; must exceed the voxel size"
    )


class BfsTrainConfig(TrainConfig):
    """Training loop of S1 (centre regression) and S2 (segmentation on pseudo-labels)."""

    epochs: PosInt = like(TrainConfig, "epochs", 30)
    steps_per_epoch: PosInt = like(TrainConfig, "steps_per_epoch", 8)
    batch_size: PosInt = like(TrainConfig, "batch_size", 2)
    crop: ZYXInt = Field((8, 48, 48), description="random crop z, y, x (voxels)")
    lr: PosFloat = like(TrainConfig, "lr", 2e-3)
    patience: PosInt = like(TrainConfig, "patience", 30)
    model: UNetConfig = Field(default_factory=UNetConfig, description="U-Net body")
    prior_bias: bool = Field(
        True,
        description="start the output bias at the logit of the targets' mean (RetinaNet prior "
        "init): sparse targets are learnt in far fewer steps",
    )


class BfsS1Config(BfsTrainConfig):
    """S1 (paper eq. 2): ``L = BCE + λ·focal`` with the focal term on voxels with p > 0.7."""

    focal_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="λ of eq. 2")
    focal_min_target: OpenFraction = Field(
        0.7, description="the focal term covers voxels whose target p exceeds this"
    )
    peak_threshold: OpenFraction = Field(
        0.3, description="S1 local maxima above this likelihood are centres"
    )
    peak_min_distance_um: PosFloat = Field(
        2.0, description="non-maximum suppression radius of S1 peaks (µm)"
    )


class BfsPrmConfig(ConfigModel):
    """Peak response maps (Zhou et al. 2018): one back-propagation per S1 peak, in crops."""

    crop: ZYXInt = Field(
        (16, 64, 64), description="input crop z, y, x around each peak (bounds memory)"
    )
    batch_size: PosInt = Field(4, description="peaks back-propagated together")
    backprop: Literal["excitation", "gradient"] = Field(
        "excitation",
        description="excitation: PRM's peak back-propagation (excitation backprop: positive "
        "weights, signal shared by input contribution) | gradient: plain input gradient",
    )
    threshold_grid: Annotated[tuple[OpenFraction, ...], Field(min_length=1)] = Field(
        THRESHOLD_GRID,
        description="thresholds on the max-normalised response tried on the training volume "
        "(default: 1-2-3-5-7.5 per decade)",
    )
    threshold_rule: Literal["contrast", "median"] = Field(
        "contrast",
        description="contrast: among thresholds with near-best click F1, the one whose "
        "foreground best separates the image intensity (Otsu's between-class variance) | "
        "median: the median threshold of the best click-F1 plateau",
    )
    f1_tolerance: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05, description="contrast rule: click F1 may be this much below the best"
    )
    smooth_um: Annotated[float, Field(ge=0)] = Field(
        0.5, description="Gaussian smoothing (µm) of each response map before thresholding"
    )


class BfsS2Config(BfsTrainConfig):
    """S2 (paper eq. 3): ``L = CE(pseudo-labels) + λ_BF·L_BF`` (eq. 4 / eq. 5)."""

    lambda_bf: Annotated[float, Field(ge=0)] = Field(1.0, description="λ_BF (0: L_class only)")
    sigma1: PosFloat = Field(3.0, description="σ1 of G(S, σ1), in y/x voxels (z: isotropic in µm)")
    sigma2: PosFloat = Field(3.0, description="σ2 of G(I, σ2), in y/x voxels (z: isotropic in µm)")
    p: PosFloat = Field(2.0, description="norm exponent p of eq. 4")
    guide: Literal["log", "gradient"] = Field(
        "log",
        description="log: eq. 4 (Laplacian of Gaussian; bright-field / label-free) | "
        "gradient: eq. 5 (gradient of Gaussian; fluorescence)",
    )
    mask_threshold: OpenFraction | Literal["auto"] = Field(
        "auto",
        description="foreground = S2 probability > this; auto: the threshold at which S2's "
        "foreground on the training volumes has the pseudo-labels' volume",
    )


class BfsInstancesConfig(ConfigModel):
    """Instance assignment (§3.4): merge close S1 peaks, watershed inside S2's mask."""

    merge_distance_um: PosFloat = Field(
        2.0, description="S1 peaks closer than this (µm) merge (score-weighted mean)"
    )
    min_size: Annotated[int, Field(ge=0)] = Field(0, description="drop smaller objects (voxels)")
    halo: ZYXInt = Field(
        (8, 32, 32), description="context z, y, x around each block; must exceed the objects"
    )


class BfsConfig(ConfigModel):
    """BFS-Net: centre maps → S1 → PRM pseudo-labels → S2 → instances (``method: bfs``)."""

    centres: BfsCentresConfig = Field(default_factory=BfsCentresConfig, description="eq. 1")
    s1: BfsS1Config = Field(default_factory=BfsS1Config, description="centre regression S1")
    prm: BfsPrmConfig = Field(default_factory=BfsPrmConfig, description="peak response maps")
    s2: BfsS2Config = Field(default_factory=BfsS2Config, description="segmentation network S2")
    instances: BfsInstancesConfig = Field(
        default_factory=BfsInstancesConfig, description="instance assignment"
    )
