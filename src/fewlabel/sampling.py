"""Random training crops: volumes of aligned arrays and a seeded crop sampler with flips.

:class:`CropSampler` draws fixed-shape crops (optionally point-centred, mirror- or
constant-padded where a volume is smaller than the crop) for the detector, ISL and segmenter
trainers, and deterministic crops for validation. With the same seed it draws the same crops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fewlabel.errors import InputDataError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- crops
@dataclass
class CropVolume:
    """One training volume: arrays sharing a ZYX shape (image, target, weight, ...).

    ``arrays`` may be numpy arrays or Zarr arrays (read lazily crop by crop). ``transforms``
    (optional, one per array) are applied to each crop (e.g. intensity normalisation).
    ``centres`` (optional, (N, 3) ZYX) are used for point-centred crops. ``crop_augment``
    (optional) gets every array's crop, ``points`` (N, 3) in crop voxels and a generator,
    and returns the crops (before the flips; e.g.
    :class:`fewlabel.detection.density.pair_paste.PairPaste`).
    """

    arrays: Sequence[Any]
    name: str = ""
    transforms: Sequence[Callable[[np.ndarray], np.ndarray] | None] | None = None
    centres: np.ndarray | None = None
    points: np.ndarray | None = None
    crop_augment: (
        Callable[[list[np.ndarray], np.ndarray, np.random.Generator], list[np.ndarray]] | None
    ) = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.arrays[0].shape[-3:])  # type: ignore[return-value]


class CropSampler:
    """Random crops of a fixed shape from a list of volumes, with random flips.

    Parameters
    ----------
    volumes : the volumes (all with the same number of arrays).
    crop_shape : ZYX crop shape.
    seed : seed of the sampler's own generator (``numpy.random.default_rng``).
    flip_axes : spatial axes (0=z, 1=y, 2=x) flipped with probability ½ each.
    pad_values : per array, how crops are padded where a volume is smaller than the crop:
        None = symmetric (mirror) padding, a number = constant. Padding is logged once per
        volume; give weight maps the value 0 so padded voxels do not count in the loss.
    point_fraction : probability that a crop is centred (with random jitter) on a random
        point of the volume's ``centres``.
    image_augment : optional ``f(crop, rng)`` applied to the first array (the image) of each
        training crop after the flips, with a generator of its own seeded from ``seed`` (e.g.
        :class:`fewlabel.augment.IntensityAugment`); never to validation crops.
    """

    def __init__(
        self,
        volumes: Sequence[CropVolume],
        crop_shape: Sequence[int],
        *,
        seed: int,
        flip_axes: Sequence[int] = (1, 2),
        pad_values: Sequence[float | None] | None = None,
        point_fraction: float = 0.0,
        image_augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        if not volumes:
            raise InputDataError("no volumes to sample training crops from.")
        self.volumes = list(volumes)
        self.crop = tuple(int(c) for c in crop_shape)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        n_arrays = len(self.volumes[0].arrays)
        self.pad_values = list(pad_values) if pad_values is not None else [None] * n_arrays
        self.point_fraction = float(point_fraction)
        self.image_augment = image_augment
        # its own stream: the crop positions and flips are the same with or without it
        self.augment_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.rng = np.random.default_rng(seed)
        sizes = np.array([math.prod(v.shape) for v in self.volumes], dtype=float)
        self.probabilities = sizes / sizes.sum()
        for volume in self.volumes:
            if any(s < c for s, c in zip(volume.shape, self.crop, strict=True)):
                log.info(
                    "volume %s %s is smaller than the crop %s along some axis: crops are "
                    "padded (image mirrored, targets/weights constant)",
                    volume.name,
                    volume.shape,
                    self.crop,
                )

    def _corner(self, volume: CropVolume) -> list[int]:
        shape = volume.shape
        use_point = (
            self.point_fraction > 0
            and volume.centres is not None
            and len(volume.centres) > 0
            and self.rng.random() < self.point_fraction
        )
        if use_point:
            centre = volume.centres[self.rng.integers(len(volume.centres))]  # type: ignore[index]
            corner = []
            for axis in range(3):
                c, s, n = self.crop[axis], shape[axis], float(centre[axis])
                low = int(round(n)) - c + 1
                high = int(round(n))
                start = int(self.rng.integers(low, high + 1))
                corner.append(min(max(start, 0), max(s - c, 0)))
            return corner
        return [
            int(self.rng.integers(0, max(s - c, 0) + 1))
            for s, c in zip(shape, self.crop, strict=True)
        ]

    def crop_at(self, volume: CropVolume, corner: Sequence[int]) -> list[np.ndarray]:
        """The crop of every array of ``volume`` starting at ``corner`` (padded if needed)."""
        region = tuple(slice(int(a), int(a) + c) for a, c in zip(corner, self.crop, strict=True))
        out = []
        for index, array in enumerate(volume.arrays):
            lead = (slice(None),) * (array.ndim - 3)
            data = np.asarray(array[lead + region])
            transform = volume.transforms[index] if volume.transforms else None
            if transform is not None:
                data = transform(data)
            data = np.asarray(data, dtype=np.float32)
            missing = [c - s for c, s in zip(self.crop, data.shape[-3:], strict=True)]
            if any(missing):
                pads = [(0, 0)] * (data.ndim - 3) + [(0, m) for m in missing]
                value = self.pad_values[index]
                if value is None:
                    data = _mirror_pad(data, pads)
                else:
                    data = np.pad(data, pads, mode="constant", constant_values=value)
            out.append(data)
        return out

    def sample(self, batch_size: int) -> list[np.ndarray]:
        """A batch: one ``(B, [C,] Z, Y, X)`` float32 array per volume array."""
        crops: list[list[np.ndarray]] = []
        for _ in range(batch_size):
            volume = self.volumes[int(self.rng.choice(len(self.volumes), p=self.probabilities))]
            corner = self._corner(volume)
            arrays = self.crop_at(volume, corner)
            if volume.crop_augment is not None and volume.points is not None:
                inside = np.asarray(volume.points, float).reshape(-1, 3) - np.asarray(corner)
                arrays = volume.crop_augment(arrays, inside, self.augment_rng)
            flips = [axis for axis in self.flip_axes if self.rng.random() < 0.5]
            if flips:
                arrays = [np.flip(a, axis=tuple(a.ndim - 3 + f for f in flips)) for a in arrays]
            if self.image_augment is not None:
                arrays[0] = self.image_augment(arrays[0], self.augment_rng)
            crops.append(arrays)
        return [np.ascontiguousarray(np.stack([c[i] for c in crops])) for i in range(len(crops[0]))]

    def fixed_crops(self, per_volume: int, *, seed: int) -> list[list[np.ndarray]]:
        """Deterministic crops (no flips) for validation: ``per_volume`` per volume."""
        rng = np.random.default_rng(seed)
        out = []
        for volume in self.volumes:
            for _ in range(per_volume):
                corner = [
                    int(rng.integers(0, max(s - c, 0) + 1))
                    for s, c in zip(volume.shape, self.crop, strict=True)
                ]
                out.append(self.crop_at(volume, corner))
        return out


def _mirror_pad(data: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """Symmetric padding that also works when the pad exceeds the size (repeats the mirror)."""
    while any(after > 0 for _, after in pads):
        step = [(0, min(after, size)) for (_, after), size in zip(pads, data.shape, strict=True)]
        data = np.pad(data, step, mode="symmetric")
        pads = [(0, after - s[1]) for (_, after), s in zip(pads, step, strict=True)]
    return data
