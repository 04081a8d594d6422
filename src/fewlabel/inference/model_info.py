"""Model introspection for tiled inference: receptive field, instance normalisation, blend margin.

Also the intensity range from a model's normalisation recipe. Used by
:mod:`fewlabel.inference.engine` and the 2D path of :mod:`fewlabel.segmentation.distance.predict`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fewlabel.errors import InputDataError, ModelError

if TYPE_CHECKING:
    from fewlabel.config import PredictConfig

log = logging.getLogger(__name__)


def receptive_field(
    module: Any, arch: Mapping[str, Any] | None = None
) -> tuple[int, int, int] | None:
    """The model's receptive field (z, y, x) from ``module.receptive_field()`` or the arch dict."""
    value: Any = None
    method = getattr(module, "receptive_field", None)
    if callable(method):
        value = method()
    elif arch:
        value = arch.get("receptive_field", (arch.get("kwargs") or {}).get("receptive_field"))
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 3  # type: ignore[return-value]
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ModelError(f"receptive field {value!r} is not one value or (z, y, x).")
    return out  # type: ignore[return-value]


def uses_instance_norm(module: Any) -> bool:
    """True if ``module`` (a torch module) contains instance-normalisation layers."""
    import torch

    modules = getattr(module, "modules", None)
    return callable(modules) and any(
        isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in modules()
    )


def blend_margin(
    rf: Sequence[int] | None,
    overlap: Sequence[int],
    *,
    sample: str | None = None,
    shape: Sequence[int] | None = None,
    tile: Sequence[int] | None = None,
    instance_norm: bool = False,
) -> tuple[int, int, int]:
    """Margin ``rf // 2`` per axis where ``overlap >= 2·(rf // 2)``; else 0 with a warning.

    Axes where ``shape <= tile`` (one tile spans the volume: no interior tile faces) never warn.
    With ``instance_norm`` (tiles are normalised by their own statistics, so no overlap gives
    whole-volume equality; benchmarks/tiled_engine/overlap_detnet.md) the message is logged at
    INFO level.
    """
    if rf is None:
        return (0, 0, 0)
    margin = []
    short = []
    for axis, (r, o) in enumerate(zip(rf, overlap, strict=True)):
        half = max(int(r) // 2, 0)
        if 2 * half <= o:
            margin.append(half)
        else:
            margin.append(0)
            if shape is None or tile is None or int(shape[axis]) > int(tile[axis]):
                short.append(f"{'zyx'[axis]}: overlap {o} < {2 * half}")
    if short and instance_norm:
        log.info(
            "sample %s: tile overlap is below the model's receptive-field bound %s - 1 "
            "(%s): Gaussian blending only on those axes. The model uses instance "
            "normalisation, so tiles differ from one whole-volume pass at any overlap; "
            "detections were insensitive to the overlap in our measurements.",
            sample,
            tuple(rf),
            "; ".join(short),
        )
    elif short:
        log.warning(
            "sample %s: tile overlap is smaller than the model's receptive field %s - 1 "
            "(%s); tile borders influence the blended output there (Gaussian blending "
            "only). For seam-free output set predict.overlap >= %s (and a tile larger "
            "than the overlap).",
            sample,
            tuple(rf),
            "; ".join(short),
            [2 * (int(r) // 2) for r in rf],
        )
    return margin[0], margin[1], margin[2]


def intensity_range(
    array: Any, normalization: Mapping[str, Any] | None, *, sample: str | None = None
) -> tuple[float, float] | None:
    """``(low, high)`` for ``apply_range`` from the model's normalisation recipe.

    Supported: ``{"percentiles": [p_low, p_high]}`` (of this volume, subsampled, seeded),
    ``{"method": "robust"}`` and ``{"method": "background", ...}`` (median and MAD of
    ``array``, which for ``background`` is the :func:`input_view`), and ``{"range": [low,
    high]}`` (fixed); ``{}`` means no normalisation.
    """
    from fewlabel.normalize import percentile_range, robust_range

    recipe = dict(normalization or {})
    if recipe.get("method") in ("robust", "background"):
        return robust_range(array)
    if "range" in recipe:
        low, high = (float(v) for v in recipe["range"])
        return low, high
    if "percentiles" in recipe:
        pct = [float(v) for v in recipe["percentiles"]]
        if len(pct) != 2 or not 0 <= pct[0] < pct[1] <= 100:
            raise ModelError(
                f"normalisation percentiles {recipe['percentiles']!r} are not two "
                "increasing values in [0, 100]."
            )
        return percentile_range(array, pct)
    if recipe:
        raise ModelError(
            f"unsupported normalisation recipe {recipe!r}; expected 'percentiles' or 'range'."
        )
    log.warning(
        "sample %s: the model has no normalisation recipe; raw intensities are used.", sample
    )
    return None


def input_view(
    array: Any, normalization: Mapping[str, Any] | None, voxel_size: Any, *, sample: str | None
) -> Any:
    """The array the model reads: ``array`` itself, or for a ``background`` recipe its lazy
    background-subtracted view (:class:`fewlabel.normalize.BackgroundSubtracted`, top-hat
    half-size from the recipe's µm and this volume's voxel size)."""
    from fewlabel.normalize import BackgroundSubtracted, background_radius

    try:
        radius = background_radius(normalization, voxel_size)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"sample {sample}: malformed background normalisation recipe {normalization!r} "
            f"({exc}); expected background_um: [z, y, x] (µm)."
        ) from exc
    return array if radius is None else BackgroundSubtracted(array, radius)


# --------------------------------------------------------------------------- opening
def in_channels_of(array: Any) -> int:
    return int(array.shape[0]) if array.ndim == 4 else 1


def _check_in_channels(
    arch: Mapping[str, Any] | None, in_channels: int, *, sample: str | None, path: Path
) -> None:
    expected = ((arch or {}).get("kwargs") or {}).get("in_channels")
    if expected is not None and int(expected) != in_channels:
        raise InputDataError(
            f"the image has {in_channels} channel(s) but the model expects {expected}.",
            sample=sample,
            path=path,
            fix="ingest the channel(s) the model was trained on.",
        )


def model_grid_of(training: Mapping[str, Any], params: Any) -> tuple[float, float, float] | None:
    """The grid to predict on: the training grid a model folder's training.json records
    (``voxel_size_um``) when ``params`` asks for it (``detection.predict.model_grid``; other
    predict sections have no such key); None: the image's own grid (also for folders from
    before the grid was recorded)."""
    if not getattr(params, "model_grid", False):
        return None
    grid = training.get("voxel_size_um")
    if grid is None:
        log.info("the model folder records no training voxel size: no resampling")
        return None
    return tuple(float(v) for v in grid)  # type: ignore[return-value]


def open_input(
    image_path: str | Path,
    params: PredictConfig,
    sample: str,
    arch: Mapping[str, Any] | None,
    grid: Sequence[float] | None = None,
) -> tuple[Any, int, dict[str, Any] | None]:
    """Open the input image (on the model's ``grid`` where it differs:
    :mod:`fewlabel.inference.resample`); check its channels against the model and its size
    against a tile. Returns the image, its channels and the resampling record (or None)."""
    from fewlabel.inference.geometry import check_fits_tile
    from fewlabel.inference.resample import grid_tile_error, on_grid
    from fewlabel.io import open_ome_zarr

    image, resampled = on_grid(open_ome_zarr(image_path, sample=sample), grid)
    in_channels = in_channels_of(image.array)
    _check_in_channels(arch, in_channels, sample=sample, path=Path(image_path))
    try:
        check_fits_tile(
            tuple(image.array.shape[-3:]),
            params.tile,
            pad_to_tile=params.pad_to_tile,
            sample=sample,
            path=image_path,
        )
    except InputDataError as error:
        if resampled is None:
            raise
        own = resampled["image_voxel_size"]
        raise grid_tile_error(error, resampled["image_shape"], own, image.voxel_size) from None
    if resampled is not None:
        log.info(
            "sample %s: voxel size %s µm resampled to the model's training grid %s µm "
            "(ZYX shape %s -> %s)",
            sample,
            resampled["image_voxel_size"],
            resampled["voxel_size"],
            resampled["image_shape"],
            list(image.array.shape[-3:]),
        )
    return image, in_channels, resampled
