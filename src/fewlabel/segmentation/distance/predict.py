"""Prediction of ISL ('unet') and segmenter models through the shared tiled engine.

:func:`predict_image` runs :func:`fewlabel.inference.tiling.predict_tiled` (Gaussian blending,
chunk-aligned writes) with the per-image percentile normalisation recorded in the model
folder, and writes a float32 OME-Zarr: ZYX for one output channel, CZYX otherwise (2D planes
as channels: Z = 1). :func:`predict_isl` and :func:`predict_segmentation` fix the model kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fewlabel.config import PredictConfig, SegmentationPredictConfig
from fewlabel.errors import ConfigError, ModelError
from fewlabel.io import open_ome_zarr
from fewlabel.segmentation.distance.data import (
    PLANES_AS_CHANNELS,
    expected_target_shape,
    open_input_image,
)

log = logging.getLogger(__name__)


class PredictionAdapter(nn.Module):
    """Wraps a loaded 'unet' / 'segmenter' for the tiled engine.

    Segmenter outputs become ``(σ(z), d̂)`` (channel 0 mask probability, channel 1 distance);
    2D (planes as channels) models take the engine's ``(B, K, 1, Y, X)`` tiles of a
    :class:`PlanesAsChannels` view and return ``(B, C, 1, Y, X)``.
    """

    def __init__(self, module: nn.Module, *, name: str, dims: int, out_channels: int) -> None:
        super().__init__()
        self.module = module
        self.name = name
        self.dims = int(dims)
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x[:, :, 0] if self.dims == 2 else x).float()
        if self.name == "segmenter":
            out = torch.cat([torch.sigmoid(out[:, :1]), out[:, 1:]], dim=1)
        return out.unsqueeze(2) if self.dims == 2 else out

    def receptive_field(self) -> tuple[int, int, int]:
        return self.module.receptive_field()  # type: ignore[operator]


def predict_image(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig | None = None,
    sample: str | None = None,
    threads: int = 1,
    expect: str | None = None,
    roi: str | Path | None = None,
) -> dict[str, Any]:
    """Predict one image with an ISL ('unet') or segmenter model through the tiled engine.

    ``params`` are the shared ``predict`` settings (:class:`fewlabel.config.PredictConfig`:
    tile, overlap, batch_size, cache_tiles, out_chunks; default
    :class:`~fewlabel.config.SegmentationPredictConfig`). The image is normalised with its own
    percentiles (the model folder's normalization.json), tiled with Gaussian blending
    (:func:`fewlabel.inference.tiling.predict_tiled`; margin = receptive field // 2 where the
    overlap allows) and written as float32 OME-Zarr: ZYX for one output channel (ISL fluorescence),
    CZYX for the segmenter (channel 0 = mask probability ``σ(z)``, channel 1 = distance).
    3D models run :func:`fewlabel.inference.engine.predict_with_module`; 2D (planes as channels)
    models tile a ``(K, 1, Y, X)`` view with tile z = 1 and give Z = 1.
    """
    from fewlabel.device import configure_torch
    from fewlabel.inference.engine import predict_with_module
    from fewlabel.models.store import load_model

    params = params if params is not None else SegmentationPredictConfig()
    device = configure_torch(threads, 0)
    loaded = load_model(model_dir, device, expect=expect)
    if loaded.name not in ("unet", "segmenter"):
        raise ModelError(
            f"this stage handles 'unet' (ISL) and 'segmenter' models; the folder "
            f"holds {loaded.name!r}.",
            path=model_dir,
            fix="use the prediction stage that matches this model.",
        )
    kwargs = loaded.arch["kwargs"]
    dims = int(kwargs.get("dims", 3))
    out_channels = 2 if loaded.name == "segmenter" else int(kwargs.get("out_channels", 1))
    adapter = PredictionAdapter(
        loaded.module, name=loaded.name, dims=dims, out_channels=out_channels
    ).eval()
    sample = sample or Path(str(image_path)).name.split(".")[0]
    info = {
        "model_dir": str(model_dir),
        "arch": loaded.arch,
        "channels": (
            ["mask_probability", "distance"]
            if loaded.name == "segmenter"
            else ["fluorescence"] * out_channels
        ),
    }
    if dims == 3:
        return predict_with_module(
            adapter,
            image_path,
            output_path,
            params=params,
            sample=sample,
            normalization=loaded.normalization,
            arch=loaded.arch,
            device=device,
            model_info=info,
            roi=roi,
        )
    if roi:
        raise ConfigError(
            "ROI gating (--roi) is implemented for 3D models only; this model predicts 2D "
            "planes (planes as channels).",
            sample=sample,
            path=model_dir,
            fix="predict without --roi.",
        )
    return _predict_planes(
        adapter,
        image_path,
        output_path,
        params=params,
        sample=sample,
        normalization=loaded.normalization,
        planes=int(kwargs.get("in_channels", 1)),
        device=device,
        info=info,
    )


def _predict_planes(
    adapter: PredictionAdapter,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    normalization: Mapping[str, Any],
    planes: int,
    device: str,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """2D planes-as-channels prediction: the engine over a (K, 1, Y, X) view, output Z = 1."""
    from fewlabel.inference.geometry import check_fits_tile
    from fewlabel.inference.model_info import blend_margin, uses_instance_norm
    from fewlabel.inference.tiling import predict_tiled
    from fewlabel.io import atomic_path, create_ome_zarr

    t0 = time.monotonic()
    percentiles = tuple(normalization.get("percentiles", (1.0, 99.8)))
    image = open_input_image(
        sample, str(image_path), dims=2, percentiles=percentiles, planes=planes
    )
    low, high = image.low, image.high
    tile = (1, *params.tile[1:])
    overlap = (0, *params.overlap[1:])
    spatial = expected_target_shape(image.shape, 2)
    margin = blend_margin(
        adapter.receptive_field(),
        overlap,
        sample=sample,
        shape=(1, *spatial[1:]),
        tile=tile,
        instance_norm=uses_instance_norm(adapter),
    )
    check_fits_tile(
        (1, *spatial[1:]), tile, pad_to_tile=params.pad_to_tile, sample=sample, path=image_path
    )
    volume = open_ome_zarr(image_path, sample=sample)
    chunks = tuple(params.out_chunks or tuple(int(c) for c in volume.array.chunks[-3:]))
    chunks = (1, *chunks[1:])
    c = adapter.out_channels
    shape = spatial if c == 1 else (c, *spatial)
    with atomic_path(output_path) as tmp:
        target = create_ome_zarr(
            tmp,
            shape,
            np.float32,
            chunks if c == 1 else (1, *chunks),
            image.voxel_size,
            name=f"{sample}:prediction",
            extra_attrs={
                "sample": sample,
                "kind": "prediction",
                "image": str(image_path),
                "mode": PLANES_AS_CHANNELS,
                "intensity_range": [low, high],
                "margin": list(margin),
                "out_channels": c,
                "model": dict(info),
                "complete": True,
            },
        )
        with torch.inference_mode():
            stats = predict_tiled(
                adapter_fn(adapter, device),
                image.array,
                target,
                tile=tile,
                overlap=overlap,
                batch_size=params.batch_size,
                out_channels=c,
                cache_tiles=params.cache_tiles,
                margin=margin,
                preprocess=image.normalise,
                progress_desc=f"predict {sample}",
            )
    seconds = time.monotonic() - t0
    log.info(
        "sample %s: 2D prediction %s written (%s, %.1fs)",
        sample,
        output_path,
        "x".join(map(str, shape)),
        seconds,
    )
    return {
        "sample": sample,
        "output": str(output_path),
        "shape": list(shape),
        "intensity_range": [low, high],
        "margin": list(margin),
        "device": device,
        "stats": stats.as_dict(),
        "seconds": seconds,
        "complete": True,
    }


def adapter_fn(adapter: nn.Module, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """``numpy (B, C, Z, Y, X) -> numpy`` model function for :func:`predict_tiled`."""
    from fewlabel.training import autocast

    def run(batch: np.ndarray) -> np.ndarray:
        with autocast(device):
            out = adapter(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return out.float().cpu().numpy()

    return run


def predict_isl(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig | None = None,
    sample: str | None = None,
    threads: int = 1,
    roi: str | Path | None = None,
) -> dict[str, Any]:
    """Predicted fluorescence (float32 ZYX OME-Zarr) of one label-free image with an ISL model."""
    return predict_image(
        model_dir,
        image_path,
        output_path,
        params=params,
        sample=sample,
        threads=threads,
        expect="unet",
        roi=roi,
    )


def predict_segmentation(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig | None = None,
    sample: str | None = None,
    threads: int = 1,
    roi: str | Path | None = None,
) -> dict[str, Any]:
    """Two-channel float32 CZYX OME-Zarr (0: mask probability σ(z), 1: distance) of one image."""
    return predict_image(
        model_dir,
        image_path,
        output_path,
        params=params,
        sample=sample,
        threads=threads,
        expect="segmenter",
        roi=roi,
    )


__all__ = [
    "PredictionAdapter",
    "adapter_fn",
    "predict_image",
    "predict_isl",
    "predict_segmentation",
]
