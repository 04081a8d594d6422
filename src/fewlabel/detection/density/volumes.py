"""Training volumes of the density detector: items, loading, crop centres.

:class:`DetectorItem` names one annotated volume's files; :func:`load_volume` opens them
(percentile normalisation range, the density target's attributes, which record whether the
volume is fully or partially annotated, :mod:`fewlabel.detection.density.partial`);
:func:`loss_centres` gives the crop centres of a partially annotated volume.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.config import DetectorTrainConfig, PairAugmentConfig
from fewlabel.detection.density.pair_paste import PairPaste
from fewlabel.detection.density.partial import click_radius_voxels
from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import open_ome_zarr, read_points_csv
from fewlabel.normalize import apply_range, prepare
from fewlabel.sampling import CropVolume

log = logging.getLogger(__name__)

IN_MEMORY_MAX_VOXELS = 64_000_000
"""Volumes up to this size are loaded into memory for training; larger ones are read lazily."""


@dataclass(frozen=True)
class DetectorItem:
    """One annotated volume: image OME-Zarr, density target, weight map, points CSV."""

    sample: str
    image: str
    target: str
    weight: str
    points: str

    @classmethod
    def coerce(cls, item: Any, index: int = 0) -> DetectorItem:
        """From a dict ``{sample, image, target, weight, points}`` or a 4/5-tuple."""
        if isinstance(item, DetectorItem):
            return item
        if isinstance(item, Mapping):
            missing = [k for k in ("image", "target", "weight", "points") if k not in item]
            if missing:
                raise ConfigError(
                    f"training item {index} lacks {missing}: {dict(item)}.",
                    fix="give {sample, image, target, weight, points} per item.",
                )
            extra = sorted(set(item) - {"sample", "image", "target", "weight", "points"})
            if extra:
                raise ConfigError(f"training item {index} has unknown keys {extra}.")
            return cls(
                sample=str(item.get("sample", f"item{index}")),
                image=str(item["image"]),
                target=str(item["target"]),
                weight=str(item["weight"]),
                points=str(item["points"]),
            )
        values = list(item)
        if len(values) == 4:
            values = [Path(str(values[0])).name.split(".")[0], *values]
        if len(values) != 5:
            raise ConfigError(
                f"training item {index} must have 4 paths (image, target, weight, "
                f"points); got {item!r}."
            )
        return cls(*[str(v) for v in values])


# --------------------------------------------------------------------------- data
@dataclass
class Volume:
    item: DetectorItem
    image: Any
    target: Any
    weight: Any
    points: np.ndarray
    low: float
    high: float
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sigma_voxels: tuple[float, ...] | None = None  # of the density target (its attributes)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)  # the target's attributes
    centres: np.ndarray | None = None  # crop centres (partial annotation / ROI), else points
    raw: Any = None  # the image as stored (lazy), for normalising it on another grid
    recipe: dict[str, Any] | None = None  # its normalisation recipe (normalization.json)

    @property
    def partial(self) -> bool:
        """True when not fully annotated (the weight map masks the loss)."""
        return self.attrs.get("annotation", "full") != "full" or bool(self.attrs.get("roi"))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape[-3:])  # type: ignore[return-value]

    def normalise(self, block: np.ndarray) -> np.ndarray:
        return apply_range(block, self.low, self.high)

    def crop_volume(self, pair_augment: PairAugmentConfig | None = None) -> CropVolume:
        """Training crops of this volume; ``pair_augment`` (``detection.train.pair_augment``)
        pastes copies of its clicked spots next to them (:mod:`.pair_paste`)."""
        return CropVolume(
            arrays=[self.image, self.target, self.weight],
            name=self.item.sample,
            transforms=[self.normalise, None, None],
            centres=self.points if self.centres is None else self.centres,
            points=self.points,
            crop_augment=self.pair_paste(pair_augment),
        )

    def target_sigma(self, needed_by: str) -> tuple[float, ...]:
        """The density target's σ (voxels), or a ConfigError saying ``needed_by`` needs it."""
        if not self.sigma_voxels:
            raise ConfigError(
                f"{needed_by} needs the density target's sigma_voxels, which this volume's "
                "target does not record.",
                sample=self.item.sample,
                fix="recreate its density targets (make_density_targets).",
            )
        return self.sigma_voxels

    def pair_paste(self, config: PairAugmentConfig | None) -> PairPaste | None:
        """The crop transform of ``config`` for this volume (None when off)."""
        if config is None or config.probability <= 0:
            return None
        sigma = self.target_sigma("detection.train.pair_augment")
        radius = self.attrs.get("click_radius_voxels") or click_radius_voxels(
            sigma, None, self.voxel_size
        )
        return PairPaste(
            probability=config.probability,
            distance_um=config.distance_um,
            voxel_size=self.voxel_size,
            sigma_voxels=tuple(float(s) for s in sigma),  # type: ignore[arg-type]
            click_radius_voxels=tuple(float(r) for r in radius),  # type: ignore[arg-type]
            T=float(self.attrs.get("T", 0.2)),
        )


def normalisation_recipe(params: DetectorTrainConfig) -> dict[str, Any]:
    """The normalization.json recipe of ``params.normalisation`` (:mod:`fewlabel.normalize`)."""
    return params.normalisation.recipe(params.percentiles)


def load_volume(item: DetectorItem, params: DetectorTrainConfig, *, training: bool) -> Volume:
    image = open_ome_zarr(item.image, sample=item.sample)
    target = open_ome_zarr(item.target, sample=item.sample)
    weight = open_ome_zarr(item.weight, sample=item.sample)
    if len(image.shape) != 3:
        raise InputDataError(
            f"image must be a single-channel ZYX volume; shape {image.shape}.",
            sample=item.sample,
            path=item.image,
            fix="ingest one channel (sample sheet column 'channel').",
        )
    for name, other in (("density target", target), ("weight map", weight)):
        if tuple(other.shape) != tuple(image.shape):
            raise InputDataError(
                f"{name} shape {other.shape} differs from the image shape {image.shape}.",
                sample=item.sample,
                path=item.target if name == "density target" else item.weight,
                fix="recreate the density targets from this image (make-density-targets).",
            )
    table = read_points_csv(item.points, shape=image.shape, sample=item.sample, allow_empty=True)
    if training and len(table) == 0:
        raise InputDataError(
            "points file holds no points, but every training volume needs annotated points "
            "(unannotated particles would be learned as background).",
            sample=item.sample,
            path=item.points,
            fix="annotate the particles of this volume, or give it the split "
            "'test'/'predict' instead of 'train'.",
        )
    norm = normalisation_recipe(params)
    source, low, high = prepare(image.array, norm, image.voxel_size)
    arrays = [source, target.array, weight.array]
    if math.prod(image.shape) <= IN_MEMORY_MAX_VOXELS:
        arrays = [np.asarray(a[...]) for a in arrays]
    log.info(
        "%s volume %s: shape %s, %d points, intensity range [%g, %g] (normalisation %s)",
        "training" if training else "validation",
        item.sample,
        image.shape,
        len(table),
        low,
        high,
        norm,
    )
    target_attrs = dict(target.attrs.get("fewlabel") or {})
    sigma = target_attrs.get("sigma_voxels")
    return Volume(
        item=item,
        image=arrays[0],
        target=arrays[1],
        weight=arrays[2],
        points=table[["z", "y", "x"]].to_numpy(np.float64),
        low=low,
        high=high,
        voxel_size=tuple(float(v) for v in image.voxel_size),  # type: ignore[arg-type]
        sigma_voxels=tuple(float(v) for v in sigma) if sigma else None,
        attrs=target_attrs,
        raw=image.array,
        recipe=norm,
    )


LOSS_CENTRES_MAX = 20_000
"""Crop centres drawn from the loss-bearing voxels of a partially annotated volume."""


def loss_centres(vol: Volume, seed: int) -> np.ndarray:
    """Up to :data:`LOSS_CENTRES_MAX` voxels whose weight is not 0 (known, unlabelled, or
    background outside the ROI), with the clicks: crops of partially annotated volumes are
    centred there (read one z slice at a time). Restricting the centres to the ROI lowered
    the tiny demo chain's F1 from >= 0.6 to 0.48 (too few background crops), so the ROI
    acts through the weight map only."""
    rng = np.random.default_rng(seed)
    found = []
    for z in range(vol.shape[0]):
        idx = np.argwhere(np.asarray(vol.weight[z]) != 0)
        if len(idx):
            found.append(np.column_stack([np.full(len(idx), z), idx]))
    coords = np.concatenate(found).astype(np.float64) if found else np.zeros((0, 3))
    if len(coords) > LOSS_CENTRES_MAX:
        coords = coords[rng.choice(len(coords), LOSS_CENTRES_MAX, replace=False)]
    return np.concatenate([vol.points, coords])
