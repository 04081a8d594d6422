"""The GPU benchmark driver (benchmarks/gpu/run.py) in its CPU smoke mode, so it cannot rot:
every model trains one autocast step with finite loss and gradients, the tiled engine writes
an OME-Zarr, and the device-vs-CPU check runs (here CPU bfloat16 autocast vs CPU float32)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
def test_gpu_driver_smoke_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_run", REPO / "benchmarks/gpu/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    args = ["--device", "cpu", "--small", "--dtype", "bf16", "--threads", "1"]
    report = module.main([*args, "--out", str(tmp_path)])
    assert [t["model"] for t in report["training"]] == [s.label for s in module.MODELS]
    assert all(t["finite"] and t["step_s"] > 0 for t in report["training"])
    inferred = [s.label for s in module.MODELS if s.infer]
    assert [i["model"] for i in report["inference"]] == inferred
    for result in report["inference"]:
        check = result["check"]
        assert result["dtype"] == "torch.bfloat16"
        assert 0.0 < check["max_abs"]  # the forward really ran in bfloat16 ...
        # ... with rounding-sized errors (here ~6 % max / 0.6 % mean for DM-DetNet3D; CPU bf16
        # kernels differ between machines, so the bound is looser than TOLERANCE; a broken
        # engine path (normalisation, tiles, channels) gives ~100 %)
        assert check["scale"] > 0 and check["max_rel"] < 0.5 and check["mean_rel"] < 0.05
    saved = json.loads((tmp_path / "gpu_results.json").read_text())
    assert saved["training"] and (tmp_path / "gpu_results.md").read_text().startswith("# GPU path")
    assert not (tmp_path / "_work").exists()
