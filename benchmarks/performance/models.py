"""Model efficiency: FLOPs per tile (``torch.utils.flop_counter``), achieved GFLOP/s per
inference variant, against the machine's float32 peak. Also registers ``bench_tiny`` (the
2-layer conv net of the scaling runs)."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from fewlabel.models.store import register_architecture


class BenchTiny(nn.Module):
    """2 Conv3d k=3 (1 → 4 → 1 channels, ReLU): engine-bound (benchmarks/tiled_engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv3d(1, 4, 3, padding=1)
        self.c2 = nn.Conv3d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


register_architecture("bench_tiny", BenchTiny, replace=True)


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    from fewlabel.detection.density.detnet import DMDetNet3D
    from fewlabel.models.unet import UNet

    torch.manual_seed(0)
    unet = UNet(base_channels=8, depth=2, norm="batch", pool_z=True)
    for m in unet.modules():  # trained-like BatchNorm statistics
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return {
        "DM-DetNet3D config default (base 8, depth 2)": (
            DMDetNet3D(base_channels=8, depth=2),
            (4, 1, 16, 128, 128),
        ),
        "DM-DetNet3D() class default (base 16, depth 2)": (
            DMDetNet3D(),
            (4, 1, 16, 128, 128),
        ),
        "ISL U-Net config default (base 8, depth 2, BN)": (unet, (4, 1, 16, 96, 96)),
    }


FLOAT32_FAST = "float32 fewlabel (one channels-last sample at a time, oneDNN direct, BN folded)"


def _variants(net: nn.Module) -> dict[str, Any]:
    from fewlabel.inference.fast import cpu_has_bf16, model_runner

    plain = net.eval()

    def autocast_bf16(x: np.ndarray) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(torch.from_numpy(x)).float().numpy()

    cl = copy.deepcopy(plain).to(memory_format=torch.channels_last_3d)

    def channels_last(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)
        return cl(t).contiguous().numpy()

    out = {
        "float32 (before)": lambda x: plain(torch.from_numpy(x)).numpy(),
        "float32 channels_last_3d": channels_last,
        FLOAT32_FAST: model_runner(plain, "cpu", "float32"),
    }
    if cpu_has_bf16():
        out["bf16 autocast"] = autocast_bf16
        out["bf16 fewlabel (default: bf16 weights, channels-last)"] = model_runner(
            plain, "cpu", "bfloat16"
        )
    return out


def measure_models(reps: int = 3) -> dict[str, Any]:
    """Per model and variant: min CPU seconds (thread time, 1 thread) per batch, GFLOP/s,
    speed-up and max |difference| to float32."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for name, (net, shape) in _models().items():
        net.eval()
        x = rng.normal(size=shape).astype(np.float32)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(torch.from_numpy(x))
        flops = counter.get_total_flops()
        variants = _variants(net)
        best = dict.fromkeys(variants, float("inf"))
        outs = {}
        with torch.inference_mode():
            for key, fn in variants.items():
                outs[key] = fn(x)  # warm-up (oneDNN primitive creation)
            for _ in range(reps):
                for key, fn in variants.items():
                    t0 = time.thread_time()
                    fn(x)
                    best[key] = min(best[key], time.thread_time() - t0)
        ref = outs["float32 (before)"]
        rows = {}
        for key in variants:
            rows[key] = {
                "cpu_s": best[key],
                "gflops": flops / best[key] / 1e9,
                "mvox_s": x.size / best[key] / 1e6,
                "speedup": best["float32 (before)"] / best[key],
                "max_abs_diff": float(np.abs(outs[key] - ref).max()),
            }
            print(name, key, rows[key])
        results[name] = {
            "batch": list(shape),
            "gflop_per_batch": flops / 1e9,
            "kflop_per_voxel": flops / x.size / 1e3,
            "variants": rows,
        }
    return results
