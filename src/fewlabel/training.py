"""Shared training utilities: seeding, random crops, early stopping, curves, AMP, the epoch loop.

Used by the detector trainer (DM-DetNet3D) and meant for the other trainers (ISL, segmenter).
Everything random takes an explicit seed: with the same seed, data and thread count, a CPU run
reproduces identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fewlabel.errors import InputDataError
from fewlabel.io import atomic_path

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- JSON
def json_ready(value: Any) -> Any:
    """Tuples → lists, recursively (for JSON files)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


# --------------------------------------------------------------------------- seeding / devices
def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code may use the legacy global RNG
    torch.manual_seed(seed)


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bfloat16 when supported, else float16); a no-op on CPU."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for float16 autocast on CUDA."""
    enabled = torch.device(device).type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda" if enabled else "cpu", enabled=enabled)


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- crops
@dataclass
class CropVolume:
    """One training volume: arrays sharing a ZYX shape (image, target, weight, ...).

    ``arrays`` may be numpy arrays or Zarr arrays (read lazily crop by crop). ``transforms``
    (optional, one per array) are applied to each crop (e.g. intensity normalisation).
    ``centres`` (optional, (N, 3) ZYX) are used for point-centred crops.
    """

    arrays: Sequence[Any]
    name: str = ""
    transforms: Sequence[Callable[[np.ndarray], np.ndarray] | None] | None = None
    centres: np.ndarray | None = None

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
    ) -> None:
        if not volumes:
            raise InputDataError("no volumes to sample training crops from.")
        self.volumes = list(volumes)
        self.crop = tuple(int(c) for c in crop_shape)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        n_arrays = len(self.volumes[0].arrays)
        self.pad_values = list(pad_values) if pad_values is not None else [None] * n_arrays
        self.point_fraction = float(point_fraction)
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
            arrays = self.crop_at(volume, self._corner(volume))
            flips = [axis for axis in self.flip_axes if self.rng.random() < 0.5]
            if flips:
                arrays = [np.flip(a, axis=tuple(a.ndim - 3 + f for f in flips)) for a in arrays]
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


# --------------------------------------------------------------------------- early stopping
@dataclass
class EarlyStopping:
    """Stop when the monitored value has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = 10
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record ``value``; return True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best = value
            self.best_epoch = epoch
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


# --------------------------------------------------------------------------- curves
class CurveLogger:
    """Per-epoch rows written to ``<stem>.tsv`` and plotted to ``<stem>.png`` after each epoch."""

    def __init__(
        self,
        tsv_path: str | Path | None = None,
        png_path: str | Path | None = None,
        *,
        title: str = "training curve",
    ) -> None:
        self.rows: list[dict[str, Any]] = []
        self.tsv_path = None if tsv_path is None else Path(tsv_path)
        self.png_path = None if png_path is None else Path(png_path)
        self.title = title

    def log(self, **row: Any) -> None:
        self.rows.append(dict(row))
        if self.tsv_path is not None:
            with atomic_path(self.tsv_path) as tmp:
                self.frame().to_csv(tmp, sep="\t", index=False)
        if self.png_path is not None:
            from fewlabel.models.store import plot_curve

            plot_curve(self.frame(), self.png_path, title=self.title)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


# --------------------------------------------------------------------------- epoch loop
@dataclass
class TrainResult:
    """Outcome of :func:`fit`: best/last weights, the curve and where it stopped."""

    best_state: dict[str, torch.Tensor]
    last_state: dict[str, torch.Tensor]
    curve: pd.DataFrame
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, started: float | None = None) -> dict[str, Any]:
        """The fields every training summary reports (``started``: ``time.monotonic()`` at
        the start of the whole stage, data loading included)."""
        out = {
            "best_epoch": int(self.best_epoch),
            "best_val_loss": float(self.best_value),
            "epochs_run": int(self.epochs_run),
            "stopped_early": bool(self.stopped_early),
        }
        if started is not None:
            out["seconds"] = round(time.monotonic() - started, 2)
            out["train_seconds"] = round(self.seconds, 2)
        else:
            out["seconds"] = round(self.seconds, 2)
        return out


def fit(
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    train_step_loss: Callable[[nn.Module], torch.Tensor],
    validate: Callable[[nn.Module], Mapping[str, float]],
    epochs: int,
    steps_per_epoch: int,
    device: str | torch.device,
    patience: int,
    monitor: str = "val_loss",
    curve: CurveLogger | None = None,
    desc: str = "train",
    clip_grad_norm: float | None = None,
) -> TrainResult:
    """A plain epoch loop with AMP, early stopping and best/last weights.

    ``train_step_loss(model)`` draws a mini-batch and returns its loss (called under autocast);
    ``validate(model)`` (called under ``torch.no_grad`` in eval mode) returns a dict that
    contains ``monitor``. The best weights are those with the lowest ``monitor`` value.
    """
    curve = curve or CurveLogger()
    scaler = grad_scaler(device)
    stopper = EarlyStopping(patience=patience)
    best_state = state_copy(model)
    start = time.monotonic()
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = train_step_loss(model)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite training loss at epoch {epoch}")
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad(), autocast(device):
            metrics = dict(validate(model))
        value = float(metrics[monitor])
        improved = stopper.step(value, epoch)
        if improved:
            best_state = state_copy(model)
        elapsed = time.monotonic() - start
        curve.log(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            **metrics,
            best=int(improved),
            seconds=round(elapsed, 2),
        )
        log.info(
            "%s epoch %d/%d train_loss %.5f %s %.5f%s (%.1fs elapsed)",
            desc,
            epoch,
            epochs,
            np.mean(losses),
            monitor,
            value,
            " *best*" if improved else "",
            elapsed,
        )
        if stopper.should_stop:
            log.info(
                "%s: early stop after epoch %d (best epoch %d, %s %.5f)",
                desc,
                epoch,
                stopper.best_epoch,
                monitor,
                stopper.best,
            )
            break
    return TrainResult(
        best_state=best_state,
        last_state=state_copy(model),
        curve=curve.frame(),
        best_epoch=stopper.best_epoch,
        best_value=stopper.best,
        epochs_run=epoch,
        stopped_early=stopper.should_stop,
        seconds=time.monotonic() - start,
    )


def batches_to_device(
    arrays: Sequence[np.ndarray],
    device: str | torch.device,
    *,
    add_channel: Sequence[bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each ``(B, Z, Y, X)`` batch array as a ``(B, 1, Z, Y, X)`` tensor on ``device``."""
    for index, array in enumerate(arrays):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if add_channel is None or add_channel[index]:
            tensor = tensor.unsqueeze(1)
        yield tensor.to(device, non_blocking=True)
