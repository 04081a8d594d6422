"""In silico labelling (ISL) pretraining: a U-Net maps label-free images to fluorescence.

Training (ISL seed): the label-free input ``x`` and the fluorescence target ``y`` of every pair
are normalised per image to their (1, 99.8) percentiles, ``x' = (x − p1)/(p99.8 − p1)``
(:mod:`fewlabel.normalize`); random crops with random y/x flips (z optional) are mapped by a
U-Net with a linear output to ``ŷ`` under the L1 loss ``L = mean |ŷ − y'|``; Adam. Each epoch
the validation images are predicted whole (large ones: fixed deterministic crops) and the
curve records ``train_loss``, ``val_loss`` (L1) and ``val_pcc``, the mean over validation images
of the Pearson correlation ``PCC = cov(ŷ, y) / (σ_ŷ σ_y)``. Early stopping on ``val_loss``
keeps the best weights; the model folder (:mod:`fewlabel.models.store`) holds them.

Dimensionality: ``dims=3`` trains a 3D U-Net on ZYX volumes (input and target of identical
shape). ``dims=2`` is the "planes as channels" mode: a 2D sample with K focal planes is a ZYX
array with Z = K fed as K input channels ``(B, K, Y, X)``; its target is a single plane
(Z = 1, same Y, X). Every 2D image of a run (and at prediction) must have the same K.

Prediction (:func:`predict_image`, used for ISL and segmenter models) runs the shared tiled
engine :func:`fewlabel.inference.tiling.predict_tiled` (Gaussian blending, chunk-aligned writes) with the
per-image percentile normalisation recorded in the model folder, and writes a float32
OME-Zarr: ZYX for one output channel, CZYX otherwise (2D: Z = 1).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fewlabel.config import IslConfig, PredictConfig, SegmentationPredictConfig
from fewlabel.errors import ConfigError, InputDataError, ModelError
from fewlabel.io import open_ome_zarr
from fewlabel.normalize import apply_range, percentile_range
from fewlabel.training import json_ready

log = logging.getLogger(__name__)

IN_MEMORY_MAX_VOXELS = 64_000_000
"""Training/validation images up to this size are read into memory; larger ones lazily."""
VAL_WHOLE_MAX_VOXELS = 2_000_000
"""Validation images up to this size are predicted whole; larger ones on fixed crops."""
PLANES_AS_CHANNELS = "planes_as_channels"


# --------------------------------------------------------------------------- items
def coerce_items(items: Sequence[Any], keys: Sequence[str], what: str) -> list[dict[str, str]]:
    """Validate a list of item dicts ``{sample, <keys>...}`` (sample defaults to item<i>)."""
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{what} item {index} must be a mapping with keys "
                              f"{['sample', *keys]}; got {item!r}.")
        missing = [k for k in keys if not item.get(k)]
        extra = sorted(set(item) - {"sample", *keys})
        if missing or extra:
            raise ConfigError(f"{what} item {index} ({item.get('sample', '?')}): missing "
                              f"{missing}, unknown {extra}.",
                              fix=f"give {{sample, {', '.join(keys)}}} per item.")
        out.append({"sample": str(item.get("sample") or f"item{index}"),
                    **{k: str(item[k]) for k in keys}})
    names = [i["sample"] for i in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} items have duplicate sample names: {names}.")
    return out


def read_items(value: Any, what: str) -> list[Any]:
    """Items from a CLI value: a JSON file path, a JSON string, a list, or ''/None (empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    text = str(value)
    path = Path(text)
    if not text.lstrip().startswith(("[", "{")) and path.exists():
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what}: cannot parse JSON ({exc}).", path=path) from exc
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what}: neither an existing JSON file nor a JSON list: "
                              f"{text[:80]!r}.") from exc
    if isinstance(value, Mapping) and "items" in value:
        value = value["items"]
    if not isinstance(value, list):
        raise ConfigError(f"{what}: expected a JSON list of items; got {type(value).__name__}.")
    return value


# --------------------------------------------------------------------------- data helpers
class PlanesAsChannels:
    """A ``(K, 1, Y, X)`` view of a ZYX array with K planes (planes → channels), read lazily.

    Supports the indexing used by the crop sampler and the tiled engine:
    ``view[c_slice, z_slice, y_slice, x_slice]`` with ``z_slice`` within ``range(1)``.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        k, y, x = (int(s) for s in array.shape[-3:])
        self.shape = (k, 1, y, x)
        self.ndim = 4
        self.dtype = getattr(array, "dtype", np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple) or len(key) != 4:
            key = tuple(key) if isinstance(key, tuple) else (key,)
            key = key + (slice(None),) * (4 - len(key))
        c, z, y, x = key
        data = np.asarray(self.array[c, y, x])[:, None]
        return data[:, z]


def load_array(array: Any) -> Any:
    """The array in memory when it is small enough, else the lazy (Zarr) array."""
    if math.prod(array.shape) <= IN_MEMORY_MAX_VOXELS:
        return np.asarray(array[...])
    return array


@dataclass
class NormalisedImage:
    """A label-free input image with its percentile range and its model-facing view."""

    sample: str
    path: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    array: Any  # ZYX (3D) or PlanesAsChannels view (2D)
    low: float
    high: float

    def normalise(self, block: np.ndarray) -> np.ndarray:
        return apply_range(block, self.low, self.high)


def open_input_image(sample: str, path: str, *, dims: int, percentiles: Sequence[float],
                     planes: int | None = None) -> NormalisedImage:
    """Open a label-free image, check it and compute its percentile range (seed normalisation)."""
    volume = open_ome_zarr(path, sample=sample)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise InputDataError(f"the label-free image must be a single-channel ZYX volume; got "
                             f"shape {shape}.", sample=sample, path=path,
                             fix="ingest one channel (sample sheet column 'channel').")
    if dims == 2 and planes is not None and shape[0] != planes:
        raise InputDataError(
            f"2D (planes as channels) model needs {planes} focal plane(s); the image has "
            f"{shape[0]} (shape {shape}).", sample=sample, path=path,
            fix="give every 2D sample the same number of planes (Z), or use dims: 3.")
    low, high = percentile_range(volume.array, percentiles)
    array = load_array(volume.array)
    view = PlanesAsChannels(array) if dims == 2 else array
    return NormalisedImage(sample=sample, path=str(path), shape=shape,  # type: ignore[arg-type]
                           voxel_size=volume.voxel_size, array=view, low=low, high=high)


def expected_target_shape(image_shape: Sequence[int], dims: int) -> tuple[int, int, int]:
    """The target's ZYX shape: the image's (3D) or one plane of the image's Y, X (2D)."""
    z, y, x = (int(s) for s in image_shape)
    return (z, y, x) if dims == 3 else (1, y, x)


def to_model_input(batch: np.ndarray | torch.Tensor, dims: int,
                   device: str | torch.device) -> torch.Tensor:
    """``(B, Z, Y, X)`` (3D) → ``(B, 1, Z, Y, X)``; ``(B, K, 1, Y, X)`` (2D) → ``(B, K, Y, X)``."""
    tensor = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(batch, dtype=np.float32))
    tensor = tensor.unsqueeze(1) if dims == 3 else tensor[:, :, 0]
    return tensor.to(device, non_blocking=True)


def to_model_target(batch: np.ndarray, dims: int, device: str | torch.device) -> torch.Tensor:
    """Target batch → ``(B, C, [Z,] Y, X)``: ``(B, Z, Y, X)`` or ``(B, C, Z, Y, X)`` (3D);
    ``(B, 1, Y, X)`` or ``(B, C, 1, Y, X)`` (2D)."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    if dims == 3:
        if tensor.dim() == 4:
            tensor = tensor.unsqueeze(1)
    elif tensor.dim() == 5:
        tensor = tensor[:, :, 0]
    return tensor.to(device, non_blocking=True)


def train_crop(params: Any, dims: int) -> tuple[int, int, int]:
    """The crop used by the sampler (2D: one plane of the planes-as-channels view)."""
    crop = tuple(int(c) for c in params.crop)
    return crop if dims == 3 else (1, crop[1], crop[2])  # type: ignore[return-value]


def flip_axes(params: Any, dims: int) -> tuple[int, ...]:
    return (0, 1, 2) if (params.flip_z and dims == 3) else (1, 2)


def pearson(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Pearson correlation ``cov(a, b) / (σ_a σ_b)`` over all elements (0 if one is constant)."""
    x = torch.as_tensor(a).double().flatten()
    y = torch.as_tensor(b).double().flatten()
    x = x - x.mean()
    y = y - y.mean()
    denom = torch.sqrt((x * x).sum() * (y * y).sum())
    if not bool(denom > 0):
        return 0.0
    return float((x * y).sum() / denom)


# --------------------------------------------------------------------------- training
@dataclass
class _Pair:
    image: NormalisedImage
    target: Any
    target_path: str
    t_low: float
    t_high: float

    @property
    def sample(self) -> str:
        return self.image.sample

    def normalise_target(self, block: np.ndarray) -> np.ndarray:
        return apply_range(block, self.t_low, self.t_high)

    def crop_volume(self) -> Any:
        from fewlabel.training import CropVolume

        return CropVolume(arrays=[self.image.array, self.target], name=self.sample,
                          transforms=[self.image.normalise, self.normalise_target])


def _load_pair(item: Mapping[str, str], params: IslConfig, planes: int | None) -> _Pair:
    sample = item["sample"]
    image = open_input_image(sample, item["image"], dims=params.dims,
                             percentiles=params.percentiles, planes=planes)
    target = open_ome_zarr(item["target"], sample=sample)
    expected = expected_target_shape(image.shape, params.dims)
    if tuple(target.shape) != expected:
        mode = ("3D: input and target must have the same ZYX shape" if params.dims == 3 else
                "2D planes as channels: the target is one plane (Z = 1) of the input's Y, X")
        raise InputDataError(
            f"fluorescence target shape {tuple(target.shape)} differs from its label-free input "
            f"shape {image.shape} ({mode}; expected {expected}).", sample=sample,
            path=item["target"], fix="pair each label-free image with the fluorescence "
                                     "acquisition of the same field of view (sheet column "
                                     "'target'), or set pretrain dims accordingly.")
    t_low, t_high = percentile_range(target.array, params.percentiles)
    return _Pair(image=image, target=load_array(target.array), target_path=item["target"],
                 t_low=t_low, t_high=t_high)


def _isl_validation(pairs: Sequence[_Pair], params: IslConfig, device: str,
                    seed: int) -> Callable[[nn.Module], dict[str, float]]:
    """Validation L1 and mean per-image PCC: whole images (small) or fixed crops (large)."""
    from fewlabel.training import CropSampler

    items: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for pair in pairs:
        if math.prod(pair.image.shape) <= VAL_WHOLE_MAX_VOXELS:
            x = pair.image.normalise(np.asarray(pair.image.array[...]))[None]
            y = pair.normalise_target(np.asarray(pair.target[...]))[None]
            items.append((pair.sample, to_model_input(x, params.dims, device),
                          to_model_target(y, params.dims, device)))
        else:
            sampler = CropSampler([pair.crop_volume()], train_crop(params, params.dims),
                                  seed=seed + 1, flip_axes=())
            for k, (x, y) in enumerate(sampler.fixed_crops(params.val_crops, seed=seed + 1)):
                items.append((f"{pair.sample}#{k}", to_model_input(x[None], params.dims, device),
                              to_model_target(y[None], params.dims, device)))

    def validate(model: nn.Module) -> dict[str, float]:
        losses: list[float] = []
        per_image: dict[str, list[float]] = {}
        for name, x, y in items:
            pred = model(x).float()
            losses.append(float(torch.mean(torch.abs(pred - y))))
            per_image.setdefault(name.split("#")[0], []).append(pearson(pred, y))
        pccs = [float(np.mean(v)) for v in per_image.values()]
        return {"val_loss": float(np.mean(losses)), "val_pcc": float(np.mean(pccs))}

    return validate


def pretrain_isl(
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    params: IslConfig | None = None,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, Any]:
    """Pretrain a U-Net label-free → fluorescence (ISL, L1 loss) and write the model folder.

    Parameters
    ----------
    train_items, val_items : dicts ``{sample, image, target}`` (label-free and fluorescence
        OME-Zarr paths). Without validation items the training pairs are used for early
        stopping (logged).
    out_dir : model folder (weights.pt = best, weights_last.pt, model.json (arch 'unet'),
        training.json, normalization.json, curve.tsv/png).
    params : :class:`~fewlabel.config.IslConfig` (``segmentation.isl``; default: its defaults).
    seed, threads : determinism and CPU threads (same seed + threads → same weights on CPU).

    Returns
    -------
    Summary dict: best epoch, best validation L1, validation PCC per image, timing.
    """
    from fewlabel.device import configure_torch
    from fewlabel.models.store import save_model
    from fewlabel.models.unet import ARCH_NAME, UNet
    from fewlabel.runtime import provenance
    from fewlabel.training import CropSampler, CurveLogger, fit

    params = params if params is not None else IslConfig()
    train = coerce_items(train_items, ("image", "target"), "ISL training")
    val = coerce_items(val_items, ("image", "target"), "ISL validation")
    if not train:
        raise ConfigError("no paired label-free/fluorescence samples in the train split; ISL "
                          "pretraining needs at least one.",
                          fix="fill the 'target' column for a train sample, or disable "
                              "pretraining (pretrain.isl: false).")
    device = configure_torch(threads, seed)
    t0 = time.monotonic()
    first = _load_pair(train[0], params, None)
    planes = first.image.shape[0] if params.dims == 2 else None
    train_pairs = [first] + [_load_pair(item, params, planes) for item in train[1:]]
    val_pairs = [_load_pair(item, params, planes) for item in val]
    tuned_on = "val"
    if not val_pairs:
        log.warning("no validation pairs: early stopping uses the training pairs")
        val_pairs, tuned_on = train_pairs, "train"
    in_channels = planes if params.dims == 2 else 1
    crop = train_crop(params, params.dims)
    kwargs = {"dims": params.dims, "in_channels": in_channels, "out_channels": 1,
              "base_channels": params.model.base_channels, "depth": params.model.depth,
              "norm": params.model.norm, "final_activation": None,
              "pool_z": params.model.resolve_pool_z(params.dims, crop[0]),
              "pool_kernels": params.model.pool_kernels}
    model = UNet(**kwargs).to(device)
    log.info("ISL pretraining: %d train / %d val pair(s), dims %d (%s), %d parameters, receptive "
             "field %s, device %s, seed %d, %d thread(s)", len(train_pairs), len(val), params.dims,
             PLANES_AS_CHANNELS if params.dims == 2 else "volume",
             sum(p.numel() for p in model.parameters()), model.receptive_field(), device, seed,
             threads)
    sampler = CropSampler([p.crop_volume() for p in train_pairs], crop, seed=seed,
                          flip_axes=flip_axes(params, params.dims))
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)

    def train_step_loss(net: nn.Module) -> torch.Tensor:
        x, y = sampler.sample(params.batch_size)
        pred = net(to_model_input(x, params.dims, device))
        return torch.mean(torch.abs(pred.float() - to_model_target(y, params.dims, device)))

    validate = _isl_validation(val_pairs, params, device, seed)
    result = fit(model, optimizer=optimizer, train_step_loss=train_step_loss, validate=validate,
                 epochs=params.epochs, steps_per_epoch=params.steps_per_epoch, device=device,
                 patience=params.patience, curve=CurveLogger(title="ISL U-Net"),
                 desc="pretrain_isl")
    model.load_state_dict(result.best_state)
    model.eval()
    per_image = {}
    with torch.no_grad():
        for pair in val_pairs:
            one = _isl_validation([pair], params, device, seed)(model)
            per_image[pair.sample] = one["val_pcc"]
    best_row = result.curve.loc[result.curve["epoch"] == result.best_epoch].iloc[0]
    summary = {
        "best_epoch": int(result.best_epoch),
        "best_val_loss": float(result.best_value),
        "best_val_pcc": float(best_row["val_pcc"]),
        "val_pcc_per_image": per_image,
        "evaluated_on": tuned_on,
        "epochs_run": int(result.epochs_run),
        "stopped_early": bool(result.stopped_early),
        "seconds": round(time.monotonic() - t0, 2),
        "train_seconds": round(result.seconds, 2),
    }
    normalization = {
        "method": "percentile", "percentiles": list(params.percentiles), "per_volume": True,
        "target_percentiles": list(params.percentiles),
        "mode": PLANES_AS_CHANNELS if params.dims == 2 else "volume",
        "dims": params.dims, "planes": planes,
        "output": "fluorescence (normalised units: target (p_low, p_high) -> (0, 1))",
    }
    training = {
        "stage": "pretrain_isl", "params": params.model_dump(mode="json"), "seed": seed, "threads": threads,
        "device": device, "train": train, "val": val,
        "normalisation_ranges": {p.sample: {"input": [p.image.low, p.image.high],
                                            "target": [p.t_low, p.t_high]}
                                 for p in [*train_pairs, *([] if tuned_on == "train" else
                                                           val_pairs)]},
        **summary, "provenance": provenance(params.model_dump(mode="json")),
    }
    save_model(out_dir, result.best_state, arch={"name": ARCH_NAME, "kwargs": json_ready(kwargs)},
               training=training, thresholds={}, curve=result.curve, normalization=normalization,
               extra_states={"weights_last": result.last_state})
    log.info("ISL pretraining done: best epoch %d, val L1 %.4f, val PCC %.3f (%.1fs)",
             summary["best_epoch"], summary["best_val_loss"], summary["best_val_pcc"],
             summary["seconds"])
    return summary


# --------------------------------------------------------------------------- prediction
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
) -> dict[str, Any]:
    """Predict one image with an ISL ('unet') or segmenter model through the tiled engine.

    ``params`` are the shared ``predict`` settings (:class:`fewlabel.config.PredictConfig`:
    tile, overlap, batch_size, cache_tiles, out_chunks; default
    :class:`~fewlabel.config.SegmentationPredictConfig`). The image is normalised with its own
    percentiles (the model folder's normalization.json), tiled with Gaussian blending
    (:func:`fewlabel.inference.tiling.predict_tiled`; margin = receptive field // 2 where the overlap
    allows) and written as float32 OME-Zarr: ZYX for one output channel (ISL fluorescence),
    CZYX for the segmenter (channel 0 = mask probability ``σ(z)``, channel 1 = distance).
    3D models run :func:`fewlabel.inference.engine.predict_with_module`; 2D (planes as channels) models
    tile a ``(K, 1, Y, X)`` view with tile z = 1 and give Z = 1.
    """
    from fewlabel.device import configure_torch
    from fewlabel.models.store import load_model
    from fewlabel.inference.engine import predict_with_module

    params = params if params is not None else SegmentationPredictConfig()
    device = configure_torch(threads, 0)
    loaded = load_model(model_dir, device, expect=expect)
    if loaded.name not in ("unet", "segmenter"):
        raise ModelError(f"this stage handles 'unet' (ISL) and 'segmenter' models; the folder "
                         f"holds {loaded.name!r}.", path=model_dir,
                         fix="use the prediction stage that matches this model.")
    kwargs = loaded.arch["kwargs"]
    dims = int(kwargs.get("dims", 3))
    out_channels = 2 if loaded.name == "segmenter" else int(kwargs.get("out_channels", 1))
    adapter = PredictionAdapter(loaded.module, name=loaded.name, dims=dims,
                                out_channels=out_channels).eval()
    sample = sample or Path(str(image_path)).name.split(".")[0]
    info = {"model_dir": str(model_dir), "arch": loaded.arch,
            "channels": (["mask_probability", "distance"] if loaded.name == "segmenter"
                         else ["fluorescence"] * out_channels)}
    if dims == 3:
        return predict_with_module(adapter, image_path, output_path, params=params,
                                   sample=sample, normalization=loaded.normalization,
                                   arch=loaded.arch, device=device, model_info=info)
    return _predict_planes(adapter, image_path, output_path, params=params, sample=sample,
                           normalization=loaded.normalization,
                           planes=int(kwargs.get("in_channels", 1)), device=device, info=info)


def _predict_planes(adapter: PredictionAdapter, image_path: str | Path,
                    output_path: str | Path, *, params: PredictConfig, sample: str,
                    normalization: Mapping[str, Any], planes: int, device: str,
                    info: Mapping[str, Any]) -> dict[str, Any]:
    """2D planes-as-channels prediction: the engine over a (K, 1, Y, X) view, output Z = 1."""
    from fewlabel.io import atomic_path, create_ome_zarr
    from fewlabel.inference.engine import blend_margin, check_fits_tile, uses_instance_norm
    from fewlabel.inference.tiling import predict_tiled

    t0 = time.monotonic()
    percentiles = tuple(normalization.get("percentiles", (1.0, 99.8)))
    image = open_input_image(sample, str(image_path), dims=2, percentiles=percentiles,
                             planes=planes)
    low, high = image.low, image.high
    tile = (1, *params.tile[1:])
    overlap = (0, *params.overlap[1:])
    spatial = expected_target_shape(image.shape, 2)
    margin = blend_margin(adapter.receptive_field(), overlap, sample=sample,
                          shape=(1, *spatial[1:]), tile=tile,
                          instance_norm=uses_instance_norm(adapter))
    check_fits_tile((1, *spatial[1:]), tile, pad_to_tile=params.pad_to_tile, sample=sample,
                    path=image_path)
    volume = open_ome_zarr(image_path, sample=sample)
    chunks = tuple(params.out_chunks or tuple(int(c) for c in volume.array.chunks[-3:]))
    chunks = (1, *chunks[1:])
    c = adapter.out_channels
    shape = spatial if c == 1 else (c, *spatial)
    with atomic_path(output_path) as tmp:
        target = create_ome_zarr(tmp, shape, np.float32, chunks if c == 1 else (1, *chunks),
                                 image.voxel_size, name=f"{sample}:prediction",
                                 extra_attrs={"sample": sample, "kind": "prediction",
                                              "image": str(image_path), "mode": PLANES_AS_CHANNELS,
                                              "intensity_range": [low, high],
                                              "margin": list(margin), "out_channels": c,
                                              "model": dict(info), "complete": True})
        with torch.inference_mode():
            stats = predict_tiled(adapter_fn(adapter, device), image.array, target, tile=tile,
                                  overlap=overlap, batch_size=params.batch_size,
                                  out_channels=c, cache_tiles=params.cache_tiles, margin=margin,
                                  preprocess=image.normalise,
                                  progress_desc=f"predict {sample}")
    seconds = time.monotonic() - t0
    log.info("sample %s: 2D prediction %s written (%s, %.1fs)", sample, output_path,
             "x".join(map(str, shape)), seconds)
    return {"sample": sample, "output": str(output_path), "shape": list(shape),
            "intensity_range": [low, high], "margin": list(margin), "device": device,
            "stats": stats.as_dict(), "seconds": seconds, "complete": True}


def adapter_fn(adapter: nn.Module, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """``numpy (B, C, Z, Y, X) -> numpy`` model function for :func:`predict_tiled`."""
    from fewlabel.training import autocast

    def run(batch: np.ndarray) -> np.ndarray:
        with autocast(device):
            out = adapter(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return out.float().cpu().numpy()

    return run


def predict_isl(model_dir: str | Path, image_path: str | Path, output_path: str | Path, *,
                params: PredictConfig | None = None, sample: str | None = None,
                threads: int = 1) -> dict[str, Any]:
    """Predicted fluorescence (float32 ZYX OME-Zarr) of one label-free image with an ISL model."""
    return predict_image(model_dir, image_path, output_path, params=params, sample=sample,
                         threads=threads, expect="unet")
