"""Blocks shared by several sections: tiled inference, training loop, network size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from fewlabel.config.base import (
    ConfigModel,
    Percentiles,
    PosFloat,
    PosInt,
    ZYXFloat,
    ZYXInt,
    ZYXNonNegInt,
)

if TYPE_CHECKING:
    from fewlabel.augment import IntensityAugment


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"range {list(pair)} must be [low, high] with low <= high")
    return pair


class PredictConfig(ConfigModel):
    """Tiled inference (:mod:`fewlabel.inference.engine`): Gaussian-blended tiles written
    chunk by chunk. Used by ``detection.predict`` and, with other defaults,
    ``segmentation.predict``."""

    tile: ZYXInt = Field((16, 128, 128), description="tile shape z, y, x (voxels) fed to the model")
    overlap: ZYXNonNegInt = Field(
        (8, 48, 48),
        description="minimal overlap z, y, x (voxels) of "
        "neighbouring tiles; seam-free when >= receptive field - 1",
    )
    batch_size: PosInt = Field(4, description="tiles per model call")
    cache_tiles: PosInt = Field(
        64,
        description="tile predictions kept for reuse between "
        "blocks (memory: cache_tiles * channels * prod(tile) * 4 bytes)",
    )
    out_chunks: ZYXInt | None = Field(
        None,
        description="output chunk shape z, y, x (null: the "
        "image's chunks); also the block and slab granularity",
    )
    pad_to_tile: bool = Field(
        False,
        description="mirror-pad volumes smaller than a tile (the "
        "prediction is cropped back); false: such a volume is an error",
    )
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="model arithmetic: auto = bfloat16 on CPUs with native bf16 "
        "(AVX512-BF16/AMX), float16 autocast on CUDA, else float32; float32 = exact",
    )

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> PredictConfig:
        if any(o >= t for o, t in zip(self.overlap, self.tile, strict=True)):
            raise ValueError(
                f"overlap {list(self.overlap)} must be smaller than tile "
                f"{list(self.tile)} on every axis (lower the overlap or enlarge "
                "the tile)"
            )
        return self


class IntensityAugmentConfig(ConfigModel):
    """Random gain, offset and noise on the image of each training crop
    (:class:`fewlabel.augment.IntensityAugment`, Spotiflow's 3D defaults when enabled); in
    the units of the normalised input. Probabilities 0 switch it off."""

    probability: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="probability that a crop gets a random gain and offset"
    )
    scale: Annotated[tuple[PosFloat, PosFloat], AfterValidator(_ordered)] = Field(
        (0.5, 2.0), description="gain range (drawn log-uniformly)"
    )
    shift: Annotated[tuple[float, float], AfterValidator(_ordered)] = Field(
        (-0.2, 0.2), description="offset range added after the gain"
    )
    noise_probability: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="probability that a crop gets additive Gaussian noise"
    )
    noise_std: Annotated[
        tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]],
        AfterValidator(_ordered),
    ] = Field((0.0, 0.05), description="range of the noise standard deviation")

    def build(self) -> IntensityAugment | None:
        """The crop transform, or None when both probabilities are 0."""
        from fewlabel.augment import IntensityAugment

        aug = IntensityAugment(
            self.probability, self.scale, self.shift, self.noise_probability, self.noise_std
        )
        return aug if aug.active else None


class NormalisationConfig(ConfigModel):
    """Intensity normalisation of a detector's input, the same in training crops and tiled
    prediction (:mod:`fewlabel.normalize`; recorded in the model's normalization.json)."""

    mode: Literal["percentile", "robust", "background"] = Field(
        "percentile",
        description="percentile: (x - p_low)/(p_high - p_low) with the percentiles of the "
        "volume | robust: (x - median)/(1.4826 MAD), intensities in noise units | background: "
        "x minus its white top-hat background (grey opening by a box of half-size "
        "background_um), then the robust z-score",
    )
    background_um: ZYXFloat = Field(
        (1.0, 1.0, 1.0),
        description="half-size z, y, x (µm) of the top-hat box of mode background; larger "
        "than a particle's radius, so particles keep their contrast",
    )

    def recipe(self, percentiles: Sequence[float]) -> dict[str, Any]:
        """The model folder's normalization.json recipe (:func:`fewlabel.normalize.recipe`);
        ``percentiles`` serve mode percentile."""
        from fewlabel.normalize import recipe

        return recipe(self.mode, percentiles, self.background_um)


class TrainConfig(ConfigModel):
    """The training loop shared by every trainer: random crops, Adam-type optimiser, early
    stopping on the validation loss (:func:`fewlabel.training.fit`)."""

    epochs: PosInt = Field(20, description="maximum epochs")
    steps_per_epoch: PosInt = Field(10, description="mini-batches per epoch")
    batch_size: PosInt = Field(4, description="random crops per mini-batch")
    crop: ZYXInt = Field((8, 48, 48), description="random crop shape z, y, x (voxels)")
    lr: PosFloat = Field(1e-3, description="learning rate")
    patience: PosInt = Field(
        5, description="early stopping: epochs without a better validation loss"
    )
    percentiles: Percentiles = Field(
        (1.0, 99.8), description="per-image intensity normalisation percentiles (low, high)"
    )
    flip_z: bool = Field(False, description="also flip crops along z (y and x always)")
    val_crops: PosInt = Field(
        8, description="fixed validation crops per volume too large to validate whole"
    )


class ModelConfig(ConfigModel):
    """Network size shared by every architecture."""

    base_channels: PosInt = Field(
        8,
        description="feature channels of the first level "
        "(doubled per level); 16 or more on a GPU / real data",
    )
    depth: PosInt = Field(2, description="number of down-sampling levels")


class UNetConfig(ModelConfig):
    """U-Net body (:class:`fewlabel.models.unet.UNet`) of the ISL and segmenter networks."""

    norm: Literal["batch", "instance", "none"] = Field("batch", description="normalisation layer")
    pool_z: bool | Literal["auto"] = Field(
        "auto",
        description="pool along z too; auto: only "
        "when crop z >= 2 * 2^depth, else (1, 2, 2); "
        "ignored in 2D",
    )
    pool_kernels: list[list[PosInt]] | None = Field(
        None,
        description="explicit pooling "
        "factors per level (overrides pool_z), "
        "e.g. [[1, 2, 2], [2, 2, 2]]",
    )

    def resolve_pool_z(self, dims: int, crop_z: int) -> bool:
        """``pool_z`` as a boolean for a ``dims``-D network trained on crops of depth
        ``crop_z``."""
        if dims == 2:
            return False
        if self.pool_z == "auto":
            return int(crop_z) >= 2 * 2 ** int(self.depth)
        return bool(self.pool_z)
