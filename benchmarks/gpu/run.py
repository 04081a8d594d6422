"""GPU path, proven in one run: autocast training steps, tiled bf16 inference OME-Zarr → OME-Zarr.

On a CUDA machine (``bash benchmarks/gpu/run.sh``, < 5 minutes on one modern GPU):

1. **training step** of every model in :data:`MODELS` under the project's autocast
   (:func:`fewlabel.training.autocast`: bfloat16 where supported, float16 + GradScaler
   otherwise): warm-up, then timed steps; loss and gradients must be finite;
2. **tiled inference** of the models with ``infer=True`` (DM-DetNet3D, the ISL U-Net) through
   fewlabel's engine (:func:`fewlabel.inference.engine.predict_with_module`) from a synthetic
   uint16 OME-Zarr of ``--size-gb`` (default 1 GiB, written slab by slab) to a float32
   OME-Zarr. The engine itself autocasts CUDA to float16 (``engine._inference``); the model is
   wrapped in :class:`Autocast` so that its forward runs in ``--dtype`` (bfloat16 by default;
   an inner autocast region overrides the outer one). Reported: end-to-end Mvox/s (read,
   normalise, blend, write included), model-only Mvox/s (forward on a batch of tiles), peak GPU
   memory (``torch.cuda.max_memory_allocated``);
3. **correctness**: the same engine on a crop volume, on the GPU in ``--dtype`` and on the
   CPU in float32; max / mean absolute difference relative to the CPU output's scale
   (max(p99.9 - p0.1, p99.9 of |y|)) must be ≤ :data:`TOLERANCE` (bf16 keeps 8 significant
   bits: ~0.4 % per rounding, a few per cent after a network).

Results: ``gpu_results.json`` and ``gpu_results.md`` in ``--out`` (default ``$OUT`` if set,
else this folder). Smoke test without a GPU: ``--device cpu --small`` (tiny volume and models;
``--dtype bf16`` runs the wrapped forward under CPU bfloat16 autocast), run by
``tests/test_gpu_driver.py``.

Adding a model: one line in :data:`MODELS` (an architecture registered in
:mod:`fewlabel.models.store`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "performance"))


@dataclass(frozen=True)
class Spec:
    """One model: a registered architecture and its constructor arguments."""

    label: str
    arch: dict[str, Any]
    infer: bool = False
    small: dict[str, Any] = field(default_factory=dict)  # kwargs overrides for --small


MODELS: list[Spec] = [
    Spec(
        "DM-DetNet3D", {"name": "dmdetnet3d", "kwargs": {}}, infer=True, small={"base_channels": 4}
    ),
    Spec(
        "ISL U-Net",
        {"name": "unet", "kwargs": {"dims": 3, "base_channels": 16, "depth": 3}},
        infer=True,
        small={"base_channels": 4, "depth": 2},
    ),
    Spec(
        "segmenter",
        {"name": "segmenter", "kwargs": {"dims": 3, "base_channels": 16, "depth": 3}},
        small={"base_channels": 4, "depth": 2},
    ),
    # e.g. Spec("PU classifier", {"name": "<registered name>", "kwargs": {...}}),
]
"""Models exercised; add one line per new architecture."""

TOLERANCE = {"max_rel": 0.15, "mean_rel": 0.01}
"""GPU (``--dtype``) vs CPU float32 on the crop: |Δ| relative to the CPU output's scale,
max(p99.9 - p0.1, p99.9 of |y|). Calibration (CPU bfloat16 autocast vs float32, random
weights, 32 × 96 × 96 volume): DM-DetNet3D (defaults) max 8.2 % / mean 0.46 %, ISL U-Net
(base 16, depth 3) max 0.6 % / mean 0.16 %. Bugs (normalisation, tiling, channels) give
errors of order 100 %. Float32 on both sides agrees to ~1e-5."""

ANCHOR_VOX_S = 5.7e7
"""NVIDIA's nnU-Net benchmark: 3D U-Net forward on an A100 in FP16, voxels/s."""


class Autocast(torch.nn.Module):
    """Runs ``module``'s forward under ``torch.autocast(device, dtype)`` (None: as is)."""

    def __init__(self, module: torch.nn.Module, device: str, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.inner = module
        self.device_type = torch.device(device).type
        self.dtype = dtype
        out = getattr(module, "out_channels", None)
        if isinstance(out, int):
            self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.inner(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.inner(x)

    def receptive_field(self) -> Any:
        method = getattr(self.inner, "receptive_field", None)
        return method() if callable(method) else None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def _build(spec: Spec, small: bool) -> Any:
    from fewlabel.models.store import build_model

    arch = {"name": spec.arch["name"], "kwargs": {**spec.arch["kwargs"]}}
    if small:
        arch["kwargs"].update(spec.small)
    return build_model(arch), arch


# --------------------------------------------------------------------------- 1. training
def train_step(spec: Spec, device: str, crop: tuple[int, ...], batch: int, steps: int, small: bool):
    from fewlabel.training import autocast, grad_scaler

    torch.manual_seed(0)
    model, arch = _build(spec, small)
    model = model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = grad_scaler(device)
    x = torch.rand((batch, 1, *crop), device=device)
    times, losses = [], []
    _peak_reset(device)
    for step in range(steps + 1):  # step 0: warm-up (cuDNN autotuning, allocator)
        _sync(device)
        t0 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        with autocast(device):
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = torch.nn.functional.mse_loss(out.float(), torch.full_like(out, 0.25).float())
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        _sync(device)
        if step:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    grads_finite = all(
        bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None
    )
    voxels = batch * int(np.prod(crop))
    return {
        "model": spec.label,
        "arch": arch,
        "autocast": str(_autocast_dtype(device)),
        "batch": [batch, 1, *crop],
        "step_s": float(np.median(times)),
        "train_mvox_s": voxels / float(np.median(times)) / 1e6,
        "peak_gpu_mib": _peak_mib(device),
        "loss_first_last": [losses[0], losses[-1]],
        "finite": bool(np.isfinite(losses).all() and grads_finite),
    }


def _autocast_dtype(device: str) -> Any:
    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- 2-3. inference
def _predict(module: Any, image: Path, out: Path, params: Any, device: str, arch: dict) -> dict:
    from fewlabel.inference.engine import predict_with_module

    shutil.rmtree(out, ignore_errors=True)
    _peak_reset(device)
    _sync(device)
    t0 = time.perf_counter()
    summary = predict_with_module(
        module,
        image,
        out,
        params=params,
        sample="gpu-bench",
        normalization={"percentiles": [1.0, 99.8]},
        arch=arch,
        device=device,
    )
    _sync(device)
    return {"seconds": time.perf_counter() - t0, "peak_gpu_mib": _peak_mib(device), **summary}


def _model_only(module: Any, device: str, tile: tuple[int, ...], batch: int, reps: int) -> float:
    """Forward-only voxels/s on a batch of tiles already on the device (no I/O)."""

    x = torch.rand((batch, 1, *tile), device=device)
    with torch.inference_mode():
        module(x)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            module(x)
        _sync(device)
    return batch * int(np.prod(tile)) * reps / (time.perf_counter() - t0)


def _read(path: Path) -> np.ndarray:
    from fewlabel.io import open_ome_zarr

    return np.asarray(open_ome_zarr(path).array[...], dtype=np.float32)


def _compare(gpu: np.ndarray, cpu: np.ndarray) -> dict:
    lo, hi = np.percentile(cpu, [0.1, 99.9])
    # the output's scale: its range, or its magnitude when the range is narrow (a random-weight
    # density map sits near sigmoid(-2) = 0.12 everywhere; bf16 errors scale with |y|)
    scale = max(float(hi - lo), float(np.percentile(np.abs(cpu), 99.9)), 1e-12)
    diff = np.abs(gpu.astype(np.float64) - cpu.astype(np.float64))
    result = {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "scale": scale,
        "max_rel": float(diff.max()) / scale,
        "mean_rel": float(diff.mean()) / scale,
    }
    result["ok"] = bool(
        result["max_rel"] <= TOLERANCE["max_rel"] and result["mean_rel"] <= TOLERANCE["mean_rel"]
    )
    return result


def infer(spec: Spec, device: str, dtype: Any, work: Path, image: Path, crop: Path, cfg: dict):
    from fewlabel.config import PredictConfig

    torch.manual_seed(0)
    model, arch = _build(spec, cfg["small"])
    model = model.eval()
    # precision float32: the engine adds no cast of its own (its CPU default is bfloat16), so
    # the Autocast wrapper alone sets the device run's dtype and the CPU reference is float32
    params = PredictConfig(
        tile=cfg["tile"], overlap=cfg["overlap"], batch_size=cfg["batch"], precision="float32"
    )
    gpu_model = Autocast(model.to(device), device, dtype).eval()
    run = _predict(gpu_model, image, work / f"{arch['name']}.ome.zarr", params, device, arch)
    voxels = cfg["voxels"]
    model_only = _model_only(gpu_model, device, cfg["tile"], cfg["batch"], cfg["reps"])
    # correctness: the crop through the same engine on the device (dtype) and on the CPU (fp32)
    main_out = work / f"{arch['name']}.ome.zarr"
    dev_out = main_out if crop == image else work / "crop_dev.ome.zarr"
    dev_crop = run if crop == image else _predict(gpu_model, crop, dev_out, params, device, arch)
    cpu_model = Autocast(model.float().to("cpu"), "cpu", None).eval()
    cpu_crop = _predict(cpu_model, crop, work / "crop_cpu.ome.zarr", params, "cpu", arch)
    check = _compare(_read(dev_out), _read(work / "crop_cpu.ome.zarr"))
    shutil.rmtree(work / f"{arch['name']}.ome.zarr", ignore_errors=True)
    return {
        "model": spec.label,
        "arch": arch,
        "dtype": str(dtype),
        "tile": list(cfg["tile"]),
        "overlap": list(cfg["overlap"]),
        "batch": cfg["batch"],
        "voxels": voxels,
        "seconds": run["seconds"],
        "mvox_s": voxels / run["seconds"] / 1e6,
        "model_only_mvox_s": model_only / 1e6,
        "peak_gpu_mib": run["peak_gpu_mib"],
        "engine_stats": run["stats"],
        "crop_seconds_device_cpu": [dev_crop["seconds"], cpu_crop["seconds"]],
        "check": check,
    }


# --------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke test)")
    parser.add_argument("--size-gb", type=float, default=1.0, help="input volume (uint16 GiB)")
    parser.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on CUDA)")
    parser.add_argument("--models", default=None, help="comma-separated labels (default: all)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(HERE))
    parser.add_argument("--workdir", default=None, help="scratch (default: <out>/_work)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from synth_zarr import write_volume

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, args.threads))
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    dtype = dtypes[args.dtype or ("bf16" if device.startswith("cuda") else "fp32")]
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) if args.workdir else out / "_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    specs = [s for s in MODELS if args.models is None or s.label in args.models.split(",")]
    if args.small:
        cfg = {"crop": (8, 32, 32), "train_batch": 2, "steps": 1, "tile": (8, 32, 32),
               "overlap": (2, 8, 8), "batch": 2, "reps": 1, "image": (16, 64, 64),
               "crop_shape": (16, 64, 64)}  # fmt: skip
    else:
        planes = max(32, int(round(args.size_gb * 2**30 / (2 * 2048 * 2048) / 32)) * 32)
        cfg = {"crop": (32, 128, 128), "train_batch": 2, "steps": 5, "tile": (32, 256, 256),
               "overlap": (8, 48, 48), "batch": 4, "reps": 10, "image": (planes, 2048, 2048),
               "crop_shape": (48, 320, 320)}  # fmt: skip
    cfg["small"] = args.small
    cfg["voxels"] = int(np.prod(cfg["image"]))
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_supported": bool(device.startswith("cuda") and torch.cuda.is_bf16_supported()),
        "host": f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "small": args.small,
        "anchor_vox_s": ANCHOR_VOX_S,
        "tolerance": TOLERANCE,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(f"device {report['device_name']} torch {torch.__version__}", flush=True)
    report["training"] = []
    for spec in specs:
        result = train_step(spec, device, cfg["crop"], cfg["train_batch"], cfg["steps"], args.small)
        print(f"train {spec.label}: {result['step_s'] * 1e3:.1f} ms/step", flush=True)
        report["training"].append(result)

    t0 = time.perf_counter()
    image = work / "image.ome.zarr"
    crop = image if args.small else work / "crop.ome.zarr"  # smoke: the crop is the volume
    chunks = (16, 64, 64) if args.small else (32, 256, 256)
    workers = min(8, args.threads)  # ~2.5 GB per 32-plane slab of 2048² voxels
    write_volume(image, "image", cfg["image"], chunks=chunks, workers=workers)
    if crop != image:
        write_volume(crop, "image", cfg["crop_shape"], chunks=chunks, seed=1, workers=workers)
    report["volume"] = {
        "shape": list(cfg["image"]),
        "dtype": "uint16",
        "gib": cfg["voxels"] * 2 / 2**30,
        "chunks": list(chunks),
        "crop_shape": list(cfg["crop_shape"]),
        "generate_s": time.perf_counter() - t0,
    }
    print(f"volume {cfg['image']} written in {report['volume']['generate_s']:.1f} s", flush=True)
    report["inference"] = []
    for spec in (s for s in specs if s.infer):
        result = infer(spec, device, dtype, work, image, crop, cfg)
        print(
            f"infer {spec.label}: {result['mvox_s']:.2f} Mvox/s end-to-end, "
            f"{result['model_only_mvox_s']:.2f} model-only, check {result['check']}",
            flush=True,
        )
        report["inference"].append(result)
    report["total_s"] = time.perf_counter() - t_start
    report["ok"] = all(r["finite"] for r in report["training"]) and all(
        r["check"]["ok"] for r in report["inference"]
    )
    with contextlib.suppress(OSError):
        shutil.rmtree(work)
    (out / "gpu_results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_results.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    return report


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(r: dict) -> str:
    lines = [
        f"# GPU path: {r['device_name']} ({r['device']}), torch {r['torch']}, CUDA {r['cuda']}",
        "",
        f"{r['date']}; host {r['host']}; total {r['total_s']:.0f} s; all checks "
        f"{'passed' if r['ok'] else 'FAILED'}"
        + (" (smoke mode: tiny sizes)" if r["small"] else ""),
        "",
        "## Training step (autocast)",
        "",
        "| model | autocast | batch | ms / step | Mvox/s | peak GPU MiB | loss first → last "
        "| finite |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in r["training"]:
        lines.append(
            f"| {t['model']} | {t['autocast']} | {'×'.join(map(str, t['batch']))} | "
            f"{t['step_s'] * 1e3:.1f} | {t['train_mvox_s']:.2f} | "
            f"{_num(t['peak_gpu_mib'], '.0f')} | "
            f"{t['loss_first_last'][0]:.4g} → {t['loss_first_last'][1]:.4g} | {t['finite']} |"
        )
    v = r.get("volume", {})
    lines += [
        "",
        f"## Tiled inference OME-Zarr → OME-Zarr ({'×'.join(map(str, v.get('shape', [])))} "
        f"uint16, {v.get('gib', 0):.2f} GiB; anchor: 3D U-Net A100 FP16 "
        f"{r['anchor_vox_s'] / 1e6:.0f} Mvox/s forward)",
        "",
        "| model | dtype | tile / overlap / batch | s | Mvox/s end-to-end | Mvox/s model only | "
        "peak GPU MiB | crop max / mean |Δ| (rel.) | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i in r["inference"]:
        c = i["check"]
        lines.append(
            f"| {i['model']} | {i['dtype']} | {i['tile']} / {i['overlap']} / {i['batch']} | "
            f"{i['seconds']:.1f} | {i['mvox_s']:.2f} | {i['model_only_mvox_s']:.2f} | "
            f"{_num(i['peak_gpu_mib'], '.0f')} | {c['max_abs']:.3g} / {c['mean_abs']:.3g} "
            f"({c['max_rel']:.2%} / {c['mean_rel']:.2%}) | {c['ok']} |"
        )
    lines += [
        "",
        f"Tolerance (device `--dtype` vs CPU float32, same engine, crop "
        f"{'×'.join(map(str, v.get('crop_shape', [])))}): max |Δ| ≤ "
        f"{TOLERANCE['max_rel']:.0%} and mean |Δ| ≤ {TOLERANCE['mean_rel']:.1%} of the CPU "
        "output's scale, max(p99.9 − p0.1, p99.9 of |y|).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    report = main()
    sys.exit(0 if report["ok"] else 1)
