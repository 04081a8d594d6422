"""Inference speed benchmarks (issue 13): model efficiency, engine vs baseline, ROI gating,
fewlabel vs MONAI / nnU-Net settings with trained models, engine scaling.

Usage (one command each; ``all`` runs every part, ~25 min of CPU on 1 thread)::

    .venv/bin/python benchmarks/performance/run.py all --workdir /tmp/fewlabel_perf
    .venv/bin/python benchmarks/performance/run.py models|engine|sidebyside|scaling ...
    .venv/bin/python benchmarks/performance/run.py scaling --big     # adds the 4 GiB volume
    .venv/bin/python benchmarks/performance/run.py report            # results.json -> .md

MONAI is for the comparison only (never a dependency): install it into a separate venv,
``python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install monai==1.6.1``, and pass
its site-packages with ``--monai-site`` (appended to ``sys.path`` of the MONAI case only).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = REPO / "src"
RESULTS = HERE / "results.json"
DEFAULT_TILE, DEFAULT_OVERLAP = [16, 128, 128], [8, 48, 48]
UNET_TILE, UNET_OVERLAP = [16, 96, 96], [8, 44, 44]


# --------------------------------------------------------------------------- plumbing
def load_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(part: str, value: Any) -> None:
    data = load_results()
    data[part] = value
    data.setdefault("machine", {}).update(machine())
    RESULTS.write_text(json.dumps(data, indent=1, default=str))


def machine() -> dict[str, Any]:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), ""
    )
    flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "avx512f": " avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }


def run_case(spec: dict[str, Any], src: Path = SRC) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(spec.get("threads", 1)))
    cmd = ["nice", "-n", "10", sys.executable, str(HERE / "run.py"), "case", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case failed: {spec}\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(spec.get("label", spec["kind"]), {k: v for k, v in out.items() if k != "stats"})
    return out


def baseline_src(workdir: Path, rev: str) -> Path:
    """``src/`` of git revision ``rev`` (the code before this change) under ``workdir``."""
    dest = workdir / f"baseline-{rev}"
    if not (dest / "src" / "fewlabel").exists():
        blob = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(dest, filter="data")
    return dest / "src"


def write_volume(path: Path, shape: tuple[int, ...], seed: int, chunks=(16, 128, 128)) -> Path:
    """uint16 gamma noise with bright blobs, written chunk-slab by chunk-slab."""
    from fewlabel.io import create_ome_zarr

    if path.exists():
        return path
    arr = create_ome_zarr(path, shape, np.uint16, chunks, (1.0, 1.0, 1.0), name="bench")
    rng = np.random.default_rng(seed)
    for z in range(0, shape[0], chunks[0]):
        n = min(chunks[0], shape[0] - z)
        arr[z : z + n] = (rng.gamma(2.0, 40.0, size=(n, *shape[1:])) + 100).astype(np.uint16)
    return path


def write_roi(path: Path, shape: tuple[int, ...], fraction: float, seed: int) -> float:
    """A compact ROI (the sample fills one part of the field of view): an ellipsoid spanning z,
    off-centre in y/x, scaled to cover about ``fraction`` of the voxels (``seed`` unused)."""
    from fewlabel.io import write_ome_zarr

    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = (shape[0] / 2, shape[1] * 0.3, shape[2] * 0.35)
    # volume of the ellipsoid clipped to the box ~ fraction: search the lateral radius
    for radius in np.linspace(0.05, 1.0, 96) * max(shape[1:]):
        roi = ((z - centre[0]) / shape[0]) ** 2 + ((y - centre[1]) / radius) ** 2 + (
            (x - centre[2]) / (radius * 1.2)
        ) ** 2 <= 1.0
        if roi.mean() >= fraction:
            break
    write_ome_zarr(path, roi.astype(np.uint8), (1.0, 1.0, 1.0), chunks=(16, 128, 128))
    return float(roi.mean())


def random_model(workdir: Path, name: str, arch: str, kwargs: dict[str, Any]) -> Path:
    import torch

    from fewlabel.models.store import build_model, save_model

    folder = workdir / name
    if not (folder / "model.json").exists():
        torch.manual_seed(0)
        save_model(
            folder,
            build_model({"name": arch, "kwargs": kwargs}),
            arch={"name": arch, "kwargs": kwargs},
            training={},
            normalization={"percentiles": [1.0, 99.8]},
        )
    return folder


# --------------------------------------------------------------------------- parts
def part_models(args: argparse.Namespace) -> None:
    from models import measure_models

    save("models", measure_models(reps=args.reps))


def part_engine(args: argparse.Namespace) -> None:
    """Same volume, config-default tiles: baseline code vs this code (defaults, float32),
    alternating (best CPU time of the repeats counts); ROI gating at ~20 % ROI voxels."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shape = (32, 512, 512)
    image = write_volume(work / "engine_img.ome.zarr", shape, seed=1)
    model = random_model(work, "detnet_b8", "dmdetnet3d", {"base_channels": 8, "depth": 2})
    roi = work / "engine_roi_compact.ome.zarr"
    fraction = write_roi(roi, shape, 0.2, seed=2)
    params = {"tile": DEFAULT_TILE, "overlap": DEFAULT_OVERLAP}
    common = {"kind": "predict", "model_dir": str(model), "image": str(image), "threads": 1}
    old = baseline_src(work, args.baseline_rev)
    runs = [("baseline", {}, old), ("default", {}, SRC)] * args.repeats
    runs += [("float32", {"precision": "float32"}, SRC), ("default+roi", {"roi": str(roi)}, SRC)]
    rows: dict[str, Any] = {}
    for i, (label, extra, src) in enumerate(runs):
        spec = {
            **common,
            "label": label,
            "params": params,
            "output": str(work / f"e_{label}.ome.zarr"),
        }
        if "precision" in extra:
            spec["params"] = {**params, **extra}
        if "roi" in extra:
            spec["roi"] = extra["roi"]
        result = run_case(spec, src=src)
        key = label if label not in rows else f"{label} (repeat {i // 2 + 1})"
        rows[key] = result
    diffs = _diffs(work, ["e_baseline", "e_default", "e_float32", "e_default+roi"], roi)
    save("engine", {"shape": shape, "roi_fraction": fraction, "rows": rows, "diffs": diffs})


def _diffs(work: Path, names: list[str], roi: Path) -> dict[str, float]:
    from fewlabel.io import open_ome_zarr

    arrays = {n: np.asarray(open_ome_zarr(work / f"{n}.ome.zarr").array[...]) for n in names}
    inside = np.asarray(open_ome_zarr(roi).array[...]) > 0
    base = arrays[names[0]]
    out = {f"{n} vs {names[0]}": float(np.abs(arrays[n] - base).max()) for n in names[1:3]}
    gated, default = arrays[names[3]], arrays[names[1]]
    out["gated vs default inside ROI"] = float(np.abs(gated[inside] - default[inside]).max())
    out["gated: fraction of voxels predicted"] = float((gated != 0).mean())
    return out


def part_sidebyside(args: argparse.Namespace) -> None:
    from sidebyside import side_by_side

    save("sidebyside", side_by_side(Path(args.workdir), args.monai_site, run_case))


def part_scaling(args: argparse.Namespace) -> None:
    """Tiny conv net (engine-bound) at the default detection tiles, 64 MiB / 512 MiB (/ 4 GiB
    with --big) of float32 output on a 512 x 512 plane (growing in z); plus the plan's
    recompute factor vs plane size."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = random_model(work, "tiny", "bench_tiny", {})
    sizes = {"64 MiB": (64, 512, 512), "512 MiB": (512, 512, 512)}
    if args.big:
        sizes["4 GiB"] = (4096, 512, 512)
    rows = {}
    for label, shape in sizes.items():
        image = write_volume(work / f"scale_{shape[0]}.ome.zarr", shape, seed=3)
        spec = {
            "kind": "predict",
            "label": f"scaling {label}",
            "model_dir": str(model),
            "image": str(image),
            "output": str(work / f"scale_out_{shape[0]}_t{DEFAULT_TILE[1]}.ome.zarr"),
            "params": {"tile": DEFAULT_TILE, "overlap": DEFAULT_OVERLAP, "precision": "float32"},
            "threads": 1,
            "register_tiny": True,
        }
        rows[label] = {"shape": shape, **run_case(spec)}
    save("scaling", rows)
    save("recompute", recompute_table())


def recompute_table() -> dict[str, float]:
    """Tiles computed / tiles needed (dry run of the plan, no model) vs plane and cache."""
    from fewlabel.inference.geometry import TileLayout, TilePlan, choose_order

    out = {}
    for plane in (512, 1024, 2048):
        for tile, overlap in (
            ((16, 64, 64), (4, 16, 16)),
            (tuple(DEFAULT_TILE), tuple(DEFAULT_OVERLAP)),
        ):
            layout = TileLayout.build((32, plane, plane), tile, overlap, (16, 128, 128), 4)
            for cache in (64, 128, 256):
                order = choose_order(layout, None, cache)
                count = TilePlan(layout, None, order, cache).count()
                key = f"plane {plane}², tile {list(tile)}, cache {cache}"
                out[key] = count["tiles_computed"] / count["tiles_needed"]
                print(key, out[key])
    return out


def main() -> None:
    sys.path.insert(0, str(HERE))
    if len(sys.argv) > 2 and sys.argv[1] == "case":
        from cases import main as case_main

        spec = json.loads(sys.argv[2])
        if spec.get("register_tiny"):
            import models
        case_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", choices=["all", "models", "engine", "sidebyside", "scaling", "report"]
    )
    parser.add_argument("--workdir", default="/tmp/fewlabel_perf")
    parser.add_argument("--baseline-rev", default="ca6a36f", help="git revision before the change")
    parser.add_argument("--monai-site", default="/work/venv-bench/lib/python3.11/site-packages")
    parser.add_argument("--big", action="store_true", help="scaling: add the 4 GiB volume")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="engine: baseline/default pairs")
    args = parser.parse_args()
    import models  # noqa: F401  (registers bench_tiny for this process)
    from report import render

    parts = {
        "models": part_models,
        "engine": part_engine,
        "sidebyside": part_sidebyside,
        "scaling": part_scaling,
    }
    for name, fn in parts.items():
        if args.part in (name, "all"):
            fn(args)
    render(load_results(), HERE / "results.md")


if __name__ == "__main__":
    main()
