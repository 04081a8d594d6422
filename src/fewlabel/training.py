"""Shared training utilities: seeding, early stopping, curves, AMP, the epoch loop.

Random crops: :mod:`fewlabel.sampling`.

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
    validate_first: bool = False,
) -> TrainResult:
    """A plain epoch loop with AMP, early stopping and best/last weights.

    ``train_step_loss(model)`` draws a mini-batch and returns its loss (called under autocast);
    ``validate(model)`` (called under ``torch.no_grad`` in eval mode) returns a dict that
    contains ``monitor``. The best weights are those with the lowest ``monitor`` value.
    ``validate_first``: the starting weights are validated too, as epoch 0, and kept when no
    epoch beats them (a model that starts from a useful detector, e.g. the LoG prior).
    """
    curve = curve or CurveLogger()
    scaler = grad_scaler(device)
    stopper = EarlyStopping(patience=patience)
    best_state = state_copy(model)
    start = time.monotonic()
    epoch = 0

    def validated() -> dict[str, float]:
        model.eval()
        with torch.no_grad(), autocast(device):
            return dict(validate(model))

    if validate_first:
        metrics = validated()
        stopper.step(float(metrics[monitor]), 0)
        curve.log(epoch=0, train_loss=math.nan, **metrics, best=1, seconds=0.0)
        log.info("%s epoch 0 (the starting weights) %s %.5f", desc, monitor, metrics[monitor])
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
        metrics = validated()
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
