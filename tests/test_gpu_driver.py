"""The GPU benchmark driver (benchmarks/gpu/run.py) in its CPU smoke mode, so it cannot rot:
every model trains one autocast step with finite loss and gradients, the tiled engine writes
an OME-Zarr, and the device-vs-CPU check runs (CPU float32 on both sides: identical)."""

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
    report = module.main(["--device", "cpu", "--small", "--threads", "1", "--out", str(tmp_path)])
    assert report["ok"]
    assert [t["model"] for t in report["training"]] == [s.label for s in module.MODELS]
    assert all(t["finite"] and t["step_s"] > 0 for t in report["training"])
    inferred = [s.label for s in module.MODELS if s.infer]
    assert [i["model"] for i in report["inference"]] == inferred
    for result in report["inference"]:
        assert result["check"]["max_abs"] == 0.0  # float32 CPU vs float32 CPU
        assert result["check"]["range_p0.1_p99.9"] > 0  # a non-constant output was compared
    saved = json.loads((tmp_path / "gpu_results.json").read_text())
    assert saved["ok"] and (tmp_path / "gpu_results.md").read_text().startswith("# GPU path")
    assert not (tmp_path / "_work").exists()
