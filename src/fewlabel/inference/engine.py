"""Whole-volume prediction with a trained model folder: OME-Zarr in → float32 OME-Zarr out.

Runs :func:`fewlabel.inference.tiling.predict_tiled` (Gaussian-blended tiles, bounded memory,
prefetch, optional ROI gating) with the model loaded once by
:func:`fewlabel.models.store.load_model`, intensities mapped by the model's normalisation recipe
(``x' = (x − low)/(high − low)``, ``low, high`` = volume percentiles, :mod:`fewlabel.normalize`),
under ``torch.inference_mode()``, through :func:`fewlabel.inference.fast.model_runner`
(``predict.precision``: bf16 on CPUs with native bf16, float16 autocast on CUDA, else float32).

Two ways to run:

* one job: :func:`predict_volume` writes ``output`` atomically (temporary sibling renamed when
  complete);
* slab fan-out (volumes too large for one job): ``predict_volume(..., slab=i, n_slabs=n)``
  writes slab ``i`` into the array made once by
  :func:`fewlabel.inference.slabs.create_prediction_array`, published by
  :func:`fewlabel.inference.slabs.finalize_prediction` (the slab protocol:
  :mod:`fewlabel.inference.slabs`). Slab results equal a one-job run bit for bit.

Blending margin: when the model reports a receptive field ``rf`` (``module.receptive_field()``
or ``receptive_field`` in the architecture dict), tile weights are zeroed ``rf // 2`` voxels
from interior tile faces, which makes the result equal whole-volume inference provided
``overlap >= 2·(rf // 2)`` on that axis. Smaller overlaps log a warning and fall back to pure
Gaussian blending on that axis (the usual nnU-Net behaviour); an axis that one tile spans
completely has no interior faces and needs no overlap.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel.blocks import Block
from fewlabel.config import PredictConfig
from fewlabel.errors import ModelError
from fewlabel.inference.model_info import (
    blend_margin,
    input_view,
    intensity_range,
    model_grid_of,
    open_input,
    receptive_field,
    uses_instance_norm,
)
from fewlabel.io import atomic_path, create_ome_zarr

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _inference(device: str) -> Any:
    """``torch.inference_mode()`` plus float16 autocast on CUDA (the output-channel probe)."""
    import torch

    cuda = torch.device(device).type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        yield


def _out_channels(module: Any, in_channels: int, tile: Sequence[int], device: str) -> int:
    """Output channels: ``module.out_channels`` when declared, else probed with one zero tile."""
    from fewlabel.inference.fast import model_runner

    declared = getattr(module, "out_channels", None)
    if isinstance(declared, int):
        return declared
    with _inference(device):
        probe = np.zeros((1, in_channels, *tile), dtype=np.float32)
        out = np.asarray(model_runner(module, device, "float32", optimize=False)(probe))
    if out.ndim != 5:
        raise ModelError(f"the model returned a {out.ndim}D array for a (B, C, Z, Y, X) batch.")
    return int(out.shape[1])


def _output_chunks(params: PredictConfig, source: Any) -> tuple[int, int, int]:
    if params.out_chunks is not None:
        return params.out_chunks
    chunks = getattr(source, "chunks", None)
    if chunks is None:
        return (16, 128, 128)
    return tuple(int(c) for c in chunks[-3:])  # type: ignore[return-value]


def _create_output(
    path: Path,
    *,
    spatial: Sequence[int],
    out_channels: int,
    chunks: Sequence[int],
    voxel_size: Sequence[float],
    sample: str,
    attrs: dict[str, Any],
    defer_pyramid: bool = False,
) -> Any:
    """The float32 prediction OME-Zarr; ``defer_pyramid`` for the array of slab jobs (its
    pyramid is built by :func:`fewlabel.inference.slabs.finalize_prediction`)."""
    shape = tuple(spatial) if out_channels == 1 else (out_channels, *spatial)
    full_chunks = tuple(chunks) if out_channels == 1 else (1, *chunks)
    return create_ome_zarr(
        path,
        shape,
        np.float32,
        full_chunks,
        voxel_size,
        name=f"{sample}:prediction",
        extra_attrs=attrs,
        defer_pyramid=defer_pyramid,
    )


def _set_attrs(path: Path, **updates: Any) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs.get("fewlabel", {}))
    attrs.update(updates)
    group.attrs["fewlabel"] = attrs


def _run_engine(
    module: Any,
    source: Any,
    target: Any,
    *,
    params: PredictConfig,
    value_range: tuple[float, float] | None,
    margin: Sequence[int],
    blocks: list[Block] | None,
    device: str,
    out_channels: int,
    desc: str,
    roi: Any = None,
) -> Any:
    import torch

    from fewlabel.inference.fast import model_runner
    from fewlabel.inference.tiling import predict_tiled
    from fewlabel.normalize import apply_range

    preprocess = None
    if value_range is not None:
        low, high = value_range

        def preprocess(data: np.ndarray) -> np.ndarray:
            return apply_range(data, low, high)

    with torch.inference_mode():
        return predict_tiled(
            model_runner(module, device, params.precision),
            source,
            target,
            tile=params.tile,
            overlap=params.overlap,
            batch_size=params.batch_size,
            out_channels=out_channels,
            blocks=blocks,
            cache_tiles=params.cache_tiles,
            prefetch=True,
            progress_desc=desc,
            margin=margin,
            preprocess=preprocess,
            roi=roi,
        )


# --------------------------------------------------------------------------- entry points
def predict_volume(
    model_dir: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    device: str | None = None,
    slab: int | None = None,
    n_slabs: int = 1,
    roi: str | Path | None = None,
) -> dict[str, Any]:
    """Predict ``image_path`` (OME-Zarr, ZYX or CZYX) with the model folder ``model_dir``.

    Without ``slab``: writes the float32 OME-Zarr ``output_path`` atomically (same voxel size;
    ZYX for one output channel, else CZYX). With ``slab=i, n_slabs=n``: writes slab ``i``'s
    chunks into ``<output>.partial`` (made by
    :func:`fewlabel.inference.slabs.create_prediction_array`) and its marker.
    ``roi``: optional ROI mask OME-Zarr (``segment_roi``; None or '' = none): tiles without an
    ROI voxel are not computed and their voxels are 0, ROI voxels equal the ungated result
    (:mod:`fewlabel.inference.gating`). ``params.model_grid`` (``detection.predict``): predict
    on the training grid the folder records (:func:`model_grid_of`; the output then has that
    voxel size).
    Returns a summary dict (engine statistics, margin, intensity range, timings).
    """
    from fewlabel.models.store import load_model

    device = device or _default_device()
    loaded = load_model(model_dir, device)
    info = {"model_dir": str(model_dir), "arch": loaded.arch}
    return predict_with_module(
        loaded.module,
        image_path,
        output_path,
        params=params,
        sample=sample,
        normalization=loaded.normalization,
        arch=loaded.arch,
        device=device,
        slab=slab,
        n_slabs=n_slabs,
        model_info=info,
        roi=roi,
        grid=model_grid_of(loaded.training, params),
        trained_grid=loaded.training.get("voxel_size_um"),
    )


def _output_geometry(
    module: Any,
    source: Any,
    in_channels: int,
    params: PredictConfig,
    sample: str,
    normalization: Mapping[str, Any] | None,
    arch: Mapping[str, Any] | None,
    device: str,
) -> tuple[Any, ...]:
    """``(rf, margin, value_range, out_channels, chunks)`` shared by one job and slab jobs."""
    rf = receptive_field(module, arch)
    margin = blend_margin(
        rf,
        params.overlap,
        sample=sample,
        shape=source.shape[-3:],
        tile=params.tile,
        instance_norm=uses_instance_norm(module),
    )
    value_range = intensity_range(source, normalization, sample=sample)
    out_channels = _out_channels(module, in_channels, params.tile, device)
    return rf, margin, value_range, out_channels, _output_chunks(params, source)


def predict_with_module(
    module: Any,
    image_path: str | Path,
    output_path: str | Path,
    *,
    params: PredictConfig,
    sample: str,
    normalization: Mapping[str, Any] | None,
    arch: Mapping[str, Any] | None = None,
    device: str | None = None,
    slab: int | None = None,
    n_slabs: int = 1,
    model_info: Mapping[str, Any] | None = None,
    roi: str | Path | None = None,
    grid: Sequence[float] | None = None,
    trained_grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """:func:`predict_volume` for an already built ``torch.nn.Module`` (eval mode, on device);
    ``grid``: the voxel size to predict on (:mod:`fewlabel.inference.resample`);
    ``trained_grid``: the one the module was trained on (its LoG priors keep their σ in µm on
    the grid predicted on: :func:`fewlabel.detection.density.log_prior.priors_on_grid`)."""
    from fewlabel.detection.density.log_prior import priors_on_grid
    from fewlabel.inference.gating import open_roi
    from fewlabel.inference.resample import roi_on_grid

    device = device or _default_device()
    t0 = time.perf_counter()
    image, in_channels, resampled = open_input(image_path, params, sample, arch, grid)
    with priors_on_grid(module, trained_grid, image.voxel_size):
        source = input_view(image.array, normalization, image.voxel_size, sample=sample)
        spatial = tuple(int(s) for s in source.shape[-3:])
        own = spatial if resampled is None else resampled["image_shape"]
        mask = roi_on_grid(open_roi(roi, own, sample=sample), resampled)
        if slab is not None:
            from fewlabel.inference.slabs import _predict_slab  # slabs imports this module

            return _predict_slab(
                module,
                source,
                output_path,
                params=params,
                sample=sample,
                device=device,
                slab=slab,
                n_slabs=n_slabs,
                t0=t0,
                roi=mask,
            )
        rf, margin, value_range, out_channels, chunks = _output_geometry(
            module, source, in_channels, params, sample, normalization, arch, device
        )
        attrs = _attrs(
            sample, image_path, params, value_range, margin, rf, out_channels, model_info, n_slabs=1
        )
        attrs["roi"] = None if mask is None else str(roi)
        attrs["resampled"] = resampled
        with atomic_path(output_path) as tmp:
            target = _create_output(
                tmp,
                spatial=spatial,
                out_channels=out_channels,
                chunks=chunks,
                voxel_size=image.voxel_size,
                sample=sample,
                attrs=attrs,
            )
            stats = _run_engine(
                module,
                source,
                target,
                params=params,
                value_range=value_range,
                margin=margin,
                blocks=None,
                device=device,
                out_channels=out_channels,
                desc=f"predict {sample}",
                roi=mask,
            )
            _set_attrs(tmp, complete=True, stats=stats.as_dict())
        summary = {
            **attrs,
            "complete": True,
            "output": str(output_path),
            "device": device,
            "stats": stats.as_dict(),
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "sample %s: prediction %s written (%s, %.1fs)",
            sample,
            output_path,
            "x".join(map(str, target.shape)),
            summary["seconds"],
        )
        return summary


def _attrs(
    sample: str,
    image_path: str | Path,
    params: PredictConfig,
    value_range: tuple[float, float] | None,
    margin: Sequence[int],
    rf: Sequence[int] | None,
    out_channels: int,
    model_info: Mapping[str, Any] | None,
    *,
    n_slabs: int,
) -> dict[str, Any]:
    return {
        "sample": sample,
        "kind": "prediction",
        "image": str(image_path),
        "params": params.model_dump(mode="json"),
        "intensity_range": None if value_range is None else list(value_range),
        "margin": list(margin),
        "receptive_field": None if rf is None else list(rf),
        "out_channels": out_channels,
        "model": dict(model_info or {}),
        "n_slabs": n_slabs,
        "complete": False,
    }
