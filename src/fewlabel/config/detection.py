"""The ``detection`` section: density targets, DM-DetNet3D training, tiled prediction, peaks
and the LoG baseline."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from fewlabel.config.base import (
    ConfigModel,
    Fraction,
    Percentiles,
    PosFloat,
    PosInt,
    ZYXFloat,
    ZYXInt,
    ZYXNonNegFloat,
    ZYXNonNegInt,
)
from fewlabel.config.pu import PUConfig
from fewlabel.config.shared import (
    IntensityAugmentConfig,
    ModelConfig,
    NormalisationConfig,
    PredictConfig,
    TrainConfig,
    _ordered,
)

Unit = Literal["voxel", "um"]


class DensityTargetsConfig(ConfigModel):
    """Gaussian density targets and AWing weight maps (seed §2, eq. 2;
    :func:`fewlabel.detection.density.targets.make_density_targets`)."""

    sigma: ZYXFloat = Field(
        (0.3, 0.15, 0.15),
        description="Gaussian sigma z, y, x per point (default µm: 1, 1.5, 1.5 voxels of "
        "0.3 x 0.1 x 0.1 µm)",
    )
    sigma_unit: Unit = Field("um", description="unit of sigma: um | voxel")
    lam: Annotated[float, Field(ge=0)] = Field(
        10.0, description="weight map: W = lam + 1 where the dilated target >= T, else 1"
    )
    T: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2, description="weight-map threshold on the dilated target"
    )
    annotation: Literal["clicks", "full"] = Field(
        "clicks",
        description="what the points of a train/val volume cover when its sheet column "
        "annotated_region is empty: clicks = only the clicked particles are known (unclicked "
        "ones may exist; the loss counts click neighbourhoods and unlabelled voxels, never "
        "unclicked voxels as certain background) | full = every particle is annotated "
        "(the whole volume is background outside the points)",
    )
    click_radius_um: PosFloat | ZYXFloat | None = Field(
        None,
        description="radius (µm; one value, or z, y, x semi-axes) of the known neighbourhood "
        "around each click (annotation clicks): the clicked particle and its ring count as "
        "known, so an unclicked particle inside is taught as background; null: 4 sigma per axis",
    )
    unlabelled_weight: Annotated[float, Field(ge=0)] = Field(
        1.0,
        description="weight of the non-negative PU risk on unlabelled voxels (outside the "
        "click neighbourhoods and annotated regions, inside the ROI when roi.enabled); "
        "0: unlabelled voxels are ignored",
    )
    unlabelled_prior: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.02,
        description="PU class prior: fraction of unlabelled voxels that lie in a particle "
        "(target >= T); the unlabelled risk subtracts this share of the positives' risk",
    )


class AWingConfig(ConfigModel):
    """Adaptive wing loss parameters (Wang et al. 2019; seed eq. 1)."""

    alpha: Annotated[float, Field(gt=1)] = Field(
        2.1, description="alpha (> 1: targets lie in [0, 1])"
    )
    omega: PosFloat = Field(14.0, description="omega")
    epsilon: PosFloat = Field(1.0, description="epsilon")
    theta: PosFloat = Field(0.5, description="theta: switch between the log and linear parts")


class DetectorModelConfig(ModelConfig):
    """DM-DetNet3D hourglass (:class:`fewlabel.detection.density.detnet.DMDetNet3D`)."""

    blocks_per_level: PosInt = Field(1, description="residual blocks per level")
    pool_z: bool = Field(False, description="pool along z too (else (1, 2, 2))")
    pool_kernels: list[list[PosInt]] | None = Field(
        None, description="explicit pooling factors per level (overrides pool_z)"
    )
    upsample: Literal["trilinear", "transposed"] = Field(
        "trilinear", description="decoder up-sampling"
    )
    head_bias_init: float = Field(-2.0, description="initial bias of the density head")
    log_prior: bool = Field(
        False,
        description="add a fixed Laplacian-of-Gaussian of the input (sigma: the density "
        "target's, in µm on whatever grid the network predicts) times a learned gain to the "
        "density logit, with the "
        "head starting at zero: training starts from the LoG and learns a correction, and "
        "the starting network is validated as epoch 0 and kept when no epoch beats it "
        "(fewlabel.detection.density.log_prior). Use it with normalisation background and "
        "select f1: under percentile normalisation the prior's threshold does not transfer "
        "between volumes (benchmarks/real_spots)",
    )

    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments of DMDetNet3D (single input channel; the LoG prior's sigma
        is added by train_detector, which knows the training grid)."""
        return {"in_channels": 1, **self.model_dump(mode="json", exclude={"log_prior"})}


def _default_threshold_grid() -> tuple[float, ...]:
    return tuple(round(0.05 * i, 2) for i in range(1, 20))


class PairAugmentConfig(ConfigModel):
    """Copy-paste of close spot pairs into training crops
    (:class:`fewlabel.detection.density.pair_paste.PairPaste`): a clicked spot of the crop,
    above its local background, is added again at a random offset, with its target and a
    known neighbourhood. Probability 0 switches it off."""

    probability: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="probability that a training crop gets a pasted copy of one of its spots"
    )
    distance_um: Annotated[tuple[PosFloat, PosFloat], AfterValidator(_ordered)] = Field(
        (0.4, 0.8), description="distance range (µm) of the copy from its spot (uniform)"
    )


class DetectorTrainConfig(TrainConfig):
    """``train_detector``: AMSGrad on random crops, early stopping, then the detection
    threshold maximising the pooled validation F1 (peaks from ``detection.peaks``)."""

    lr: PosFloat = Field(1e-3, description="AMSGrad learning rate (betas 0.9 / 0.999)")
    loss: Literal["awing", "mse"] = Field(
        "awing", description="awing: adaptive wing (eq. 1 + 3) | mse: weighted mean squared error"
    )
    awing: AWingConfig = Field(
        default_factory=AWingConfig, description="adaptive wing parameters (loss: awing)"
    )
    model: DetectorModelConfig = Field(
        default_factory=DetectorModelConfig, description="DM-DetNet3D architecture"
    )
    threshold_grid: Annotated[
        tuple[Annotated[float, Field(ge=0, lt=1)], ...], Field(min_length=1)
    ] = Field(
        default_factory=_default_threshold_grid,
        description="detection thresholds tried on the validation volumes",
    )
    gate: PosFloat | None = Field(
        None,
        description="matching gate used to tune the threshold; null: evaluation.detection "
        "gate and gate_unit (one matching rule for tuning and scoring)",
    )
    gate_unit: Unit = Field("um", description="unit of gate when set: um | voxel")
    background_crop_fraction: Fraction = Field(
        0.25,
        description="with partial annotation or an ROI: share of crops placed uniformly at "
        "random; the others are centred on voxels that carry loss (click neighbourhoods, "
        "annotated regions, unlabelled ROI voxels)",
    )
    point_fraction: Fraction = Field(
        0.0, description="probability that a crop is centred on an annotated point"
    )
    select: Literal["loss", "f1"] = Field(
        "loss",
        description="what picks the best epoch and drives early stopping: loss = the "
        "validation loss | f1 = the validation detection F1 at its best threshold of "
        "threshold_grid (the final tuning's rule, ties broken by the loss; one prediction of "
        "the validation volumes per epoch). f1 when the log warns that the best epoch was the "
        "first (benchmarks/real_spots protocol 3); with few validation points its F1 is noisy",
    )
    init_from: str | None = Field(
        None,
        description="a DM-DetNet3D model folder to start from (fine-tuning, e.g. a model "
        "pretrained on synthetic spots); it must have this model and normalisation; null: "
        "random initialisation",
    )
    normalisation: NormalisationConfig = Field(
        default_factory=NormalisationConfig,
        description="input intensity normalisation (mode percentile uses train.percentiles; "
        "default percentile: background was not better on the validation crop of "
        "benchmarks/real_spots and lowered the demo chain's F1)",
    )
    intensity_augment: IntensityAugmentConfig = Field(
        default_factory=IntensityAugmentConfig,
        description="random gain, offset and noise on training crops (robustness to "
        "other acquisitions than the clicked one)",
    )
    pair_augment: PairAugmentConfig = Field(
        default_factory=PairAugmentConfig,
        description="close spot pairs pasted from the crops' own clicked spots (meant to teach "
        "two spots closer than ~2 spot widths as two; it did not on benchmarks/real_spots, "
        "pairs.py: off by default)",
    )
    ensemble: Annotated[int, Field(ge=1, le=10)] = Field(
        1,
        description="networks trained with seeds seed, seed + 1, ...; the model's density map "
        "is their mean (nnU-Net ensembles its folds); training time x N, prediction x N",
    )
    mirror: bool = Field(
        False,
        description="test-time mirroring: the density map is the mean over the y/x flips "
        "(and z with flip_z) of the input, flipped back (nnU-Net); the threshold is tuned "
        "with it, select: f1 scores each epoch with it, and every prediction with the model "
        "folder applies it; prediction x 4 (x 8)",
    )


class DetectionPredictConfig(PredictConfig):
    """Tiled inference of DM-DetNet3D (``detection.predict``)."""

    model_grid: bool = Field(
        True,
        description="predict on the training volumes' voxel size (median per axis, recorded "
        "by train_detector) where a volume's differs by more than 5 % (linear resampling; "
        "points are written in the image's voxels, the map keeps the training grid with its "
        "NGFF scale); false: on the image's own grid. train_detector tunes the threshold "
        "on the grid this chooses",
    )


class PeaksConfig(ConfigModel):
    """Local maxima of a density / LoG response map (:mod:`fewlabel.detection.peaks`): used to
    tune the detection threshold at training time (density and LoG) and to apply it
    (``extract_points``)."""

    min_distance: ZYXNonNegFloat = Field(
        (0.3, 0.2, 0.2),
        description="minimum peak distance z, y, x (ellipsoid radii of the non-maximum "
        "suppression; default µm: 1, 2, 2 voxels of 0.3 x 0.1 x 0.1 µm; rounded to voxels "
        "per volume)",
    )
    min_distance_unit: Unit = Field("um", description="unit of min_distance: um | voxel")
    refine_radius: ZYXNonNegInt = Field(
        (1, 1, 1),
        description="half-size z, y, x of the "
        "weighted-centroid box for sub-voxel centres (0: "
        "integer peaks)",
    )
    block_shape: ZYXInt | None = Field(
        None, description="processing block z, y, x of extract_points (null: the map's chunks)"
    )


def _some_axis(value: tuple[float, float, float]) -> tuple[float, float, float]:
    if max(value) <= 0:
        raise ValueError("at least one axis must be > 0")
    return value


class LogConfig(ConfigModel):
    """LoG baseline (``method: log``; :mod:`fewlabel.detection.log.baseline`): threshold tuned
    on the train + val samples."""

    sigma: Annotated[ZYXNonNegFloat, AfterValidator(_some_axis)] = Field(
        (0.3, 0.15, 0.15),
        description="LoG scale z, y, x, about the PSF sigma (default µm: 1, 1.5, 1.5 voxels "
        "of 0.3 x 0.1 x 0.1 µm; converted per volume with its voxel size)",
    )
    sigma_unit: Unit = Field("um", description="unit of sigma: um | voxel")
    gate: PosFloat | None = Field(
        None,
        description="matching gate used to tune the threshold; null: evaluation.detection "
        "gate and gate_unit",
    )
    gate_unit: Unit = Field("um", description="unit of gate when set: um | voxel")
    n_candidates: Annotated[int, Field(ge=2)] = Field(
        100, description="thresholds tried (quantiles of the training peak scores)"
    )
    percentiles: Percentiles | None = Field(
        (1.0, 99.8),
        description="intensity normalisation percentiles of normalisation mode percentile "
        "(null: none)",
    )
    normalisation: NormalisationConfig = Field(
        default_factory=lambda: NormalisationConfig(mode="background"),
        description="input intensity normalisation (as detection.train.normalisation; "
        "default background: one threshold transfers between volumes whose brightest "
        "structures differ, benchmarks/real_spots)",
    )
    compare: bool = Field(
        True,
        description="method density: also tune the LoG on the annotations the learned "
        "threshold is tuned on, scored the same way (results/models/log_baseline), and show "
        "both in the report, with a warning when the LoG scores higher",
    )


class DetectionConfig(ConfigModel):
    """Particle detection: ``density`` = DM-DetNet3D density regression (Spilger et al.),
    ``log`` = Laplacian-of-Gaussian baseline (SEF3D-style)."""

    enabled: bool = Field(True, description="run detection (samples with task detect/both)")
    method: Literal["density", "log", "pu"] = Field(
        "density", description="density | log | pu (positive-unlabelled picking, detection.pu)"
    )
    model: str | None = Field(
        None,
        description="a trained detector folder to reuse (e.g. "
        "results/models/detector of an earlier run): no training; "
        "null trains on the sheet's train/val rows",
    )
    object_diameter_um: PosFloat | None = Field(
        None,
        description="typical object diameter (µm); when set, every one of "
        "targets.sigma (d/4 µm), peaks.min_distance (radius in voxels), train.crop "
        "(>= 4 diameters per axis, <= 128 voxels) and the normalisation.background_um of "
        "train, log and pu (d µm) left at its default is derived per "
        "volume from its voxel size (a changed value wins; fewlabel.detection.sizes); "
        "null: the values as configured",
    )
    targets: DensityTargetsConfig = Field(
        default_factory=DensityTargetsConfig, description="density targets"
    )
    train: DetectorTrainConfig = Field(
        default_factory=DetectorTrainConfig, description="detector training (method: density)"
    )
    predict: DetectionPredictConfig = Field(
        default_factory=DetectionPredictConfig, description="tiled inference (method: density)"
    )
    slabs: PosInt | Literal["auto"] = Field(
        1,
        description="> 1 splits each volume's "
        "prediction into slab jobs (contiguous runs of "
        "output chunks, one job each); auto: one job per "
        "slab_voxels of each volume",
    )
    slab_voxels: PosInt = Field(2_000_000_000, description="voxels per slab job when slabs: auto")
    peaks: PeaksConfig = Field(
        default_factory=PeaksConfig,
        description="peak extraction, for threshold tuning and prediction alike",
    )
    log: LogConfig = Field(default_factory=LogConfig, description="LoG baseline (method: log)")
    pu: PUConfig = Field(
        default_factory=PUConfig, description="positive-unlabelled picking (method: pu)"
    )
