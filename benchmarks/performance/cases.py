"""One benchmark case per process (``run.py case '<json>'``): its peak RSS is its own.

Every case prints one JSON line: wall and CPU seconds (``getrusage``: user + system of this
process, i.e. the work done, which other jobs on the shared cores do not inflate), peak RSS
(``VmHWM``) and RSS just before the measured work, plus case-specific numbers.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    """Peak RSS of this process (``VmHWM``: reset at ``exec``, unlike ``ru_maxrss``, which a
    child inherits from the parent that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_predict(args: dict[str, Any]) -> dict[str, Any]:
    """fewlabel's engine (``predict_volume``) of this process's source tree."""
    import torch

    from fewlabel.config import PredictConfig
    from fewlabel.inference import engine

    torch.set_num_threads(int(args.get("threads", 1)))
    params = PredictConfig.model_validate(args["params"])
    kwargs = {"roi": args["roi"]} if args.get("roi") else {}
    base = _rss_now_mib()
    t0, c0 = time.perf_counter(), _cpu()
    summary = engine.predict_volume(
        args["model_dir"], args["image"], args["output"], params=params, sample="bench",
        device="cpu", **kwargs,
    )  # fmt: skip
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu() - c0,
        "rss_base_mib": base,
        "rss_peak_mib": _peak_mib(),
        "stats": summary["stats"],
    }


def case_tiled(args: dict[str, Any]) -> dict[str, Any]:
    """fewlabel's engine with pure Gaussian blending (margin 0), like MONAI / nnU-Net."""
    import torch
    import zarr

    from fewlabel.inference.fast import model_runner
    from fewlabel.inference.model_info import intensity_range
    from fewlabel.inference.tiling import predict_tiled
    from fewlabel.io import open_ome_zarr
    from fewlabel.models.store import load_model
    from fewlabel.normalize import apply_range

    torch.set_num_threads(int(args.get("threads", 1)))
    loaded = load_model(args["model_dir"], "cpu")
    source = open_ome_zarr(args["image"]).array
    low, high = intensity_range(source, loaded.normalization)
    target = zarr.create_array(
        args["output"], shape=source.shape, chunks=source.chunks, dtype="float32",
        overwrite=True,
    )  # fmt: skip
    base = _rss_now_mib()
    t0, c0 = time.perf_counter(), _cpu()
    with torch.inference_mode():
        stats = predict_tiled(
            model_runner(loaded.module, "cpu", args["precision"]),
            source,
            target,
            tile=args["tile"],
            overlap=args["overlap"],
            batch_size=4,
            cache_tiles=int(args.get("cache_tiles", 64)),
            sigma_scale=0.125,
            preprocess=lambda d: apply_range(d, low, high),
        )
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": _cpu() - c0,
        "rss_base_mib": base,
        "rss_peak_mib": _peak_mib(),
        "stats": stats.as_dict(),
    }


def case_monai(args: dict[str, Any]) -> dict[str, Any]:
    """MONAI ``sliding_window_inference`` (Gaussian), the original float32 module, volume in RAM."""
    sys.path.append(args["monai_site"])  # benchmark-only venv, after fewlabel's packages
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from fewlabel.inference.model_info import intensity_range
    from fewlabel.io import open_ome_zarr
    from fewlabel.models.store import load_model
    from fewlabel.normalize import apply_range

    torch.set_num_threads(int(args.get("threads", 1)))
    loaded = load_model(args["model_dir"], "cpu")
    source = open_ome_zarr(args["image"]).array
    low, high = intensity_range(source, loaded.normalization)
    base = _rss_now_mib()
    t0, c0 = time.perf_counter(), _cpu()
    volume = apply_range(np.asarray(source[...], dtype=np.float32), low, high)
    fractions = [o / t for o, t in zip(args["overlap"], args["tile"], strict=True)]
    with torch.inference_mode():
        out = sliding_window_inference(
            torch.from_numpy(volume)[None, None],
            roi_size=args["tile"],
            sw_batch_size=4,
            predictor=loaded.module,
            overlap=fractions,
            mode="gaussian",
            sigma_scale=0.125,
        )
    result = out[0, 0].numpy()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _peak_mib()
    ref = np.asarray(zarr.open_array(args["reference"], mode="r")[...])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_base_mib": base,
        "rss_peak_mib": peak,
        "max_abs_diff": float(np.abs(result - ref).max()),
        "output_max": float(np.abs(ref).max()),
    }


CASES = {"predict": case_predict, "tiled": case_tiled, "monai": case_monai}


def main(spec: str) -> None:
    args = json.loads(spec)
    out = CASES[args["kind"]](args)
    print("RESULT " + json.dumps(out))
