"""Validation of the density detector: density prediction, validation loss, threshold tuning.

Used by :func:`fewlabel.detection.density.training.train_detector`: :func:`validation_fn` is
the per-epoch validation loss (whole volumes or fixed crops), :func:`tune_threshold` picks the
detection threshold maximising the pooled validation F1 with the best weights, predicting each
validation volume with :func:`predict_density`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fewlabel.config import DetectorTrainConfig, PeaksConfig
from fewlabel.sampling import CropSampler
from fewlabel.training import autocast

if TYPE_CHECKING:
    from fewlabel.detection.density.awing import DensityLoss
    from fewlabel.detection.density.volumes import Volume as _Volume

VAL_WHOLE_MAX_VOXELS = 4_000_000
"""Validation volumes up to this size are predicted whole; larger ones are tiled."""


# --------------------------------------------------------------------------- prediction
def to_tensor(block: np.ndarray, device: str | torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None, None].to(device)


def predict_density(
    model: nn.Module,
    image: np.ndarray | Any,
    *,
    device: str | torch.device,
    normalise: Any = None,
    tile: Sequence[int] = (32, 128, 128),
    halo: Sequence[int] | None = None,
) -> np.ndarray:
    """Density map of a (small) ZYX volume: whole if it fits, else simple halo tiling.

    For validation inside training only; the ``predict`` stage does the large-scale tiling.
    """
    from fewlabel.blocks import block_grid, expand_block

    shape = tuple(int(s) for s in image.shape[-3:])
    normalise = normalise or (lambda x: np.asarray(x, dtype=np.float32))
    model.eval()
    with torch.no_grad(), autocast(device):
        if math.prod(shape) <= VAL_WHOLE_MAX_VOXELS:
            return (
                model(to_tensor(normalise(np.asarray(image[...])), device))[0, 0]
                .float()
                .cpu()
                .numpy()
            )
        if halo is None:
            rf = getattr(model, "receptive_field", lambda: (16, 32, 32))()
            halo = tuple(int(r) // 2 for r in rf)
        out = np.zeros(shape, dtype=np.float32)
        for block in block_grid(shape, tile):
            outer, inner = expand_block(block, halo, shape)
            pred = model(to_tensor(normalise(np.asarray(image[outer])), device))
            out[block] = pred[0, 0].float().cpu().numpy()[inner]
        return out


def tune_threshold(
    model: nn.Module,
    vols: Sequence[_Volume],
    peaks_by_sample: Mapping[str, PeaksConfig],
    params: DetectorTrainConfig,
    peaks: PeaksConfig,
    device: str,
    *,
    gate: float,
    gate_unit: str = "voxel",
    grid: Sequence[float] | None = None,
    trained: Sequence[float] | None = None,
) -> tuple[float, pd.DataFrame, str]:
    """Detection threshold of ``params.threshold_grid`` maximising the pooled F1 on ``vols``.

    ``gate`` in ``gate_unit`` (µm: each volume's voxel size scales its coordinates). Fully
    annotated volumes: F1 of :func:`fewlabel.metrics.detection.sweep_thresholds`; any partially
    annotated one: click recall with known-region precision
    (:func:`fewlabel.detection.density.partial.known_sweep`). Returns the threshold, the F1
    table and what it was tuned with (``full`` or ``clicks-recall+<precision source>``).
    ``grid``: the voxel size prediction uses (the training grid with
    ``detection.predict.model_grid``, None: each volume's own); a volume whose own differs is
    predicted on it (:func:`grid_peaks`). ``trained``: the training grid, whose voxels the
    LoG prior's σ is in (kept in µm on the grid predicted on).
    """
    from fewlabel.detection.density import partial
    from fewlabel.metrics.detection import sweep_thresholds

    candidates = sorted(float(t) for t in params.threshold_grid)
    tables, gts = [], []
    tile = tuple(max(c, 16) * 2 for c in params.crop)
    for vol in vols:
        min_distance = peaks_by_sample[vol.item.sample].min_distance
        tables.append(
            grid_peaks(model, vol, grid, candidates[0], min_distance, peaks, device, tile, trained)
        )
        gts.append(vol.points)
    scales = [tuple(v.voxel_size) if gate_unit == "um" else (1.0, 1.0, 1.0) for v in vols]
    if not any(v.attrs.get("annotation", "full") != "full" for v in vols):
        best, table = sweep_thresholds(tables, gts, gate=gate, scales=scales, candidates=candidates)
        return best, table, "full"
    known = [
        partial.known_volume(v.item.sample, v.points, v.shape, v.attrs, scale=sc)
        for v, sc in zip(vols, scales, strict=True)
    ]
    best, table = partial.known_sweep(tables, known, gate=gate, candidates=candidates)
    return best, table, partial.tuned_with(known)


def grid_peaks(
    model: nn.Module,
    vol: _Volume,
    grid: Sequence[float] | None,
    threshold: float,
    min_distance: Sequence[int],
    peaks: PeaksConfig,
    device: str,
    tile: Sequence[int],
    trained: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Peaks of ``vol``'s density in its own voxels, predicted on ``grid`` where its voxel size
    differs (:mod:`fewlabel.inference.resample`; min_distance kept in µm), the volume
    normalised on that grid as prediction normalises it (:func:`grid_input`), a LoG prior
    with its σ in µm on that grid (``trained``: the training grid; as the engine does)."""
    from fewlabel.detection.density.log_prior import priors_on_grid
    from fewlabel.detection.peaks import find_peaks
    from fewlabel.inference.resample import points_to_image, target_grid

    on = target_grid(vol.voxel_size, grid)
    image, normalise = grid_input(vol, on)
    if on is not None:
        min_distance = tuple(
            int(math.floor(d * v / g + 0.5))
            for d, v, g in zip(min_distance, vol.voxel_size, on, strict=True)
        )
    with priors_on_grid(model, trained, on if on is not None else vol.voxel_size):
        density = predict_density(model, image, device=device, normalise=normalise, tile=tile)
    table = find_peaks(
        density, threshold=threshold, min_distance=min_distance, refine_radius=peaks.refine_radius
    )
    if on is not None and len(table):
        zyx = table[["z", "y", "x"]].to_numpy(float)
        table[["z", "y", "x"]] = points_to_image(zyx, on, vol.voxel_size)
    return table


def grid_input(vol: _Volume, on: Sequence[float] | None) -> tuple[Any, Any]:
    """(view, normalise) of ``vol`` on the grid ``on`` (None: its own), as the prediction
    engine reads it: the stored image resampled first, then normalised on the grid by the
    recipe (a ``background`` top-hat sized for the grid's voxels, the range of the resampled
    view)."""
    from fewlabel.inference.resample import Resampled
    from fewlabel.normalize import apply_range, prepare

    if on is None:
        return vol.image, vol.normalise
    view, low, high = prepare(Resampled(vol.raw, vol.voxel_size, on), vol.recipe, on)
    return view, lambda block: apply_range(block, low, high)


def validation_fn(
    vols: Sequence[_Volume],
    params: DetectorTrainConfig,
    loss_fn: DensityLoss,
    device: str,
    seed: int,
) -> Any:
    """Validation loss on whole volumes (small) or on fixed deterministic crops (large)."""
    whole: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    large = [v for v in vols if math.prod(v.shape) > VAL_WHOLE_MAX_VOXELS]
    for vol in vols:
        if math.prod(vol.shape) > VAL_WHOLE_MAX_VOXELS:
            continue
        x = to_tensor(vol.normalise(np.asarray(vol.image[...])), device)
        y = to_tensor(np.asarray(vol.target[...]), device)
        w = to_tensor(np.asarray(vol.weight[...]), device)
        whole.append((x, y, w))
    crops: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    if large:
        sampler = CropSampler(
            [v.crop_volume() for v in large],
            params.crop,
            seed=seed + 1,
            flip_axes=(),
            pad_values=[None, 0.0, 0.0],
        )
        for arrays in sampler.fixed_crops(params.val_crops, seed=seed + 1):
            x, y, w = (to_tensor(a, device) for a in arrays)
            crops.append((x, y, w))

    def validate(model: nn.Module) -> dict[str, float]:
        losses = [float(loss_fn(model(x), y, w)) for x, y, w in [*whole, *crops]]
        return {"val_loss": float(np.mean(losses))}

    return validate
