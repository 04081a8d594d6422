"""Throughput and peak memory of fewlabel.inference.tiling.predict_tiled; comparison with MONAI.

Every measurement runs in its own subprocess so that peak RSS (``ru_maxrss``) is per run:

* ``tiny-64``     : a deliberately tiny conv net (2 Conv3d k=3, 4 channels) on a 64 MiB float32
                    OME-Zarr (64×512×512), engine defaults (cache 64 tiles, prefetch).
* ``tiny-1024``   : the same net on a 1 GiB volume (256×1024×1024): memory must not grow.
* ``tiny-1024-c256``: as above with cache_tiles=256 (fewer recomputed tiles, +48 MiB cache).
* ``monai-64``    : MONAI ``sliding_window_inference`` (mode="gaussian", same tile/overlap,
                    sw_batch_size 4) on the 64 MiB volume held in memory; time ratio and max
                    |difference| against ``tiny-64-plain`` (the engine with margin 0, i.e. the
                    same pure Gaussian blending).
* ``detnet-64``   : detection.density.detnet.DMDetNet3D (default size, random weights), 64 MiB.
* ``identity-*``  : the engine alone (numpy identity model, no torch), 64 MiB and 1 GiB.
* ``tiny-*-mmap`` : the tiny net with ``MALLOC_MMAP_THRESHOLD_=1048576`` (glibc hands torch's
                    large temporary buffers back to the OS), 64 MiB and 1 GiB.

Inputs are written chunk by chunk (never held whole) by a separate subprocess. Run::

    .venv/bin/python benchmarks/tiled_engine/run.py --workdir /tmp/fewlabel_bench --threads 2

MONAI is only needed for the comparison (``pip install -c constraints.txt monai`` into the
venv); it is never a dependency of the package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TILE = (16, 64, 64)
OVERLAP = (4, 16, 16)
CHUNKS = (16, 128, 128)
SHAPES = {64: (64, 512, 512), 1024: (256, 1024, 1024)}
CASES = {
    "tiny-64": {"model": "tiny", "mb": 64, "engine": "fewlabel", "margin": 2},
    "tiny-64-plain": {"model": "tiny", "mb": 64, "engine": "fewlabel", "margin": 0},
    "monai-64": {"model": "tiny", "mb": 64, "engine": "monai", "compare": "tiny-64-plain"},
    "tiny-1024": {"model": "tiny", "mb": 1024, "engine": "fewlabel", "margin": 2},
    "tiny-1024-c256": {
        "model": "tiny",
        "mb": 1024,
        "engine": "fewlabel",
        "margin": 2,
        "cache_tiles": 256,
    },
    "detnet-64": {"model": "detnet", "mb": 64, "engine": "fewlabel", "margin": "rf"},
    # engine alone (numpy identity model, no torch) and torch with a fixed glibc mmap threshold:
    # separates the engine's memory from the allocator's handling of torch's conv buffers
    "identity-64": {"model": "identity", "mb": 64, "engine": "fewlabel", "margin": 2},
    "identity-1024": {"model": "identity", "mb": 1024, "engine": "fewlabel", "margin": 2},
    "tiny-64-mmap": {
        "model": "tiny",
        "mb": 64,
        "engine": "fewlabel",
        "margin": 2,
        "env": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
    },
    "tiny-1024-mmap": {
        "model": "tiny",
        "mb": 1024,
        "engine": "fewlabel",
        "margin": 2,
        "env": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
    },
}


def rss_mb() -> float:
    """Current resident set size (MiB) from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- input
def make_input(path: Path, shape: tuple[int, int, int]) -> None:
    """Synthetic float32 OME-Zarr: smooth background + bright spots + noise, chunk by chunk."""
    from fewlabel.blocks import block_grid
    from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr

    if path.exists():
        if tuple(open_ome_zarr(path).array.shape) == shape:
            return
    with atomic_path(path) as tmp:
        arr = create_ome_zarr(tmp, shape, np.float32, CHUNKS, (1.0, 0.25, 0.25), name="bench")
        for i, block in enumerate(block_grid(shape, CHUNKS)):
            rng = np.random.default_rng(i)
            z, y, x = np.meshgrid(
                *[np.arange(s.start, s.stop, dtype=np.float32) for s in block],
                indexing="ij",
                sparse=True,
            )
            data = 100 + 20 * np.sin(z / 17.0) * np.cos(y / 53.0) * np.sin(x / 41.0)
            data = data + rng.normal(0, 5, size=data.shape)
            spots = rng.random(data.shape) > 0.9995
            data = data + 400 * spots
            arr[block] = data.astype(np.float32)


# --------------------------------------------------------------------------- models
def build_model(name: str):
    import torch

    torch.manual_seed(0)
    if name == "identity":
        return None, (5, 5, 5)
    if name == "tiny":
        net = torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv3d(4, 1, 3, padding=1),
        )
        rf = (5, 5, 5)
    else:
        from fewlabel.detection.density.detnet import DMDetNet3D

        net = DMDetNet3D()
        rf = net.receptive_field()
    return net.eval(), rf


# --------------------------------------------------------------------------- one case
def run_case(name: str, workdir: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    case = CASES[name]
    from fewlabel.io import create_ome_zarr, open_ome_zarr
    from fewlabel.normalize import apply_range, percentile_range

    shape = SHAPES[case["mb"]]
    src = open_ome_zarr(workdir / f"input-{case['mb']}.ome.zarr").array
    net, rf = build_model(case["model"])
    low, high = percentile_range(src, (1, 99.8))
    result = {
        "case": name,
        "shape": list(shape),
        "model": case["model"],
        "engine": case["engine"],
        "threads": threads,
        "tile": list(TILE),
        "overlap": list(OVERLAP),
        "chunks": list(CHUNKS),
    }
    result["load_1min"] = float(Path("/proc/loadavg").read_text().split()[0])
    result["rss_baseline_mb"] = rss_mb()
    out_path = workdir / f"out-{name}.ome.zarr"
    if case["engine"] == "fewlabel":
        from fewlabel.inference.tiling import predict_tiled

        if case["margin"] == "rf":
            margin = tuple(r // 2 if 2 * (r // 2) <= o else 0 for r, o in zip(rf, OVERLAP))
        else:
            margin = (case["margin"],) * 3
        target = create_ome_zarr(out_path, shape, np.float32, CHUNKS, (1.0, 0.25, 0.25))

        def model_fn(batch: np.ndarray) -> np.ndarray:
            if net is None:
                return batch * 1.0
            return net(torch.from_numpy(batch)).numpy()

        t0 = time.perf_counter()
        with torch.inference_mode():
            stats = predict_tiled(
                model_fn,
                src,
                target,
                tile=TILE,
                overlap=OVERLAP,
                batch_size=4,
                cache_tiles=case.get("cache_tiles", 64),
                margin=margin,
                progress_desc=name,
                preprocess=lambda d: apply_range(d, low, high),
            )
        seconds = time.perf_counter() - t0
        result.update(
            {
                "seconds": seconds,
                "margin": list(margin),
                "recompute_factor": stats.recompute_factor,
                "tiles_needed": stats.tiles_needed,
                "tiles_computed": stats.tiles_computed,
                "max_cached_tiles": stats.max_cached_tiles,
                "cache_tiles": stats.cache_capacity,
                "order": list(stats.order),
                "model_seconds": stats.model_seconds,
                "wait_read_seconds": stats.wait_read_seconds,
            }
        )
    else:
        from monai.inferers import sliding_window_inference

        t0 = time.perf_counter()
        volume = torch.from_numpy(apply_range(src[...], low, high))[None, None]
        with torch.inference_mode():
            pred = sliding_window_inference(
                volume, TILE, 4, net, overlap=0.25, mode="gaussian", sigma_scale=0.125
            )
        out = pred[0, 0].numpy()
        seconds = time.perf_counter() - t0  # includes reading the input into memory
        reference = open_ome_zarr(workdir / f"out-{case['compare']}.ome.zarr").array
        diff = 0.0
        for z in range(0, shape[0], CHUNKS[0]):
            diff = max(
                diff, float(np.abs(out[z : z + CHUNKS[0]] - reference[z : z + CHUNKS[0]]).max())
            )
        result.update(
            {
                "seconds": seconds,
                "max_abs_diff": diff,
                "compare": case["compare"],
                "output_abs_max": float(np.abs(out).max()),
            }
        )
    result["voxels_per_second"] = float(np.prod(shape)) / result["seconds"]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# --------------------------------------------------------------------------- driver
def write_results(results: list[dict], path: Path, meta: dict) -> None:
    by = {r["case"]: r for r in results}
    lines = [
        "# Tiled inference engine: throughput and memory",
        "",
        f"Machine: {meta['cpu']} ({meta['cores']} cores, shared with other jobs; load average "
        f"{meta['load']}), torch {meta['torch']}, {meta['threads']} torch threads, CPU only. "
        f"Date: {meta['date']}. Command: see README.md.",
        "",
        f"Tile {list(TILE)}, overlap {list(OVERLAP)}, batch 4, input/output chunks "
        f"{list(CHUNKS)}, float32 OME-Zarr (zstd) on local disk. `tiny` = 2 Conv3d k=3 "
        "(1→4→1 channels, ReLU) — deliberately tiny so the 1 GiB run finishes in minutes on "
        "2 cores; `detnet` = DMDetNet3D() defaults (random weights).",
        "",
        "| case | volume | model | engine | cache tiles | wall s | voxels/s | recompute factor "
        "| peak RSS MiB | RSS after imports MiB | peak − baseline MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        vol = "×".join(map(str, r["shape"]))
        mib = int(np.prod(r["shape"])) * 4 / 2**20
        factor = f"{r['recompute_factor']:.3f}" if "recompute_factor" in r else "—"
        lines.append(
            f"| {r['case']} | {vol} ({mib:.0f} MiB) | {r['model']} | {r['engine']} | "
            f"{r.get('cache_tiles', '—')} | {r['seconds']:.1f} | {r['voxels_per_second']:.3g} | "
            f"{factor} | {r['peak_rss_mb']:.0f} | {r['rss_baseline_mb']:.0f} | "
            f"{r['peak_rss_mb'] - r['rss_baseline_mb']:.0f} |"
        )
    lines.append("")
    pairs = [
        (a, b)
        for a, b in (
            ("identity-64", "identity-1024"),
            ("tiny-64", "tiny-1024"),
            ("tiny-64-mmap", "tiny-1024-mmap"),
        )
        if a in by and b in by
    ]
    if pairs:
        lines += ["## Memory vs volume size (peak − baseline, MiB)", ""]
        for a, b in pairs:
            da = by[a]["peak_rss_mb"] - by[a]["rss_baseline_mb"]
            db = by[b]["peak_rss_mb"] - by[b]["rss_baseline_mb"]
            lines.append(f"* `{a}` → `{b}` (16× the voxels): {da:.0f} → {db:.0f} MiB")
        lines += [
            "",
            "`identity-*` run the engine with a numpy identity model (no torch): the engine's "
            "own memory (block buffers, tile cache, prefetched bricks, zarr I/O). `*-mmap` set "
            "`MALLOC_MMAP_THRESHOLD_=1048576` so that glibc returns torch's large temporary "
            "convolution buffers to the OS on free instead of keeping them in fragmented heap "
            "arenas; the remaining growth of the default `tiny-*` runs is that allocator "
            "behaviour, not data held by the engine (the fixed threshold costs time: every "
            "large buffer is a fresh mmap, ~1.5–2× slower here).",
            "",
        ]
    if "tiny-64" in by and "tiny-64-plain" in by:
        a, b = by["tiny-64"], by["tiny-64-plain"]
        lines += [
            "## Timing noise",
            "",
            f"`tiny-64` and `tiny-64-plain` do the same work (the margin only changes blending "
            f"weights) yet took {a['seconds']:.1f} s and {b['seconds']:.1f} s (model time "
            f"{a['model_seconds']:.1f} s vs {b['model_seconds']:.1f} s): the 2 cores are shared "
            "with other jobs, so single wall times vary up to ~2×. Time spent waiting for input "
            "reads (prefetched in a background thread) is < 0.2 s in every run; the model "
            "dominates (see `model_seconds` in results.json).",
            "",
        ]
    if "monai-64" in by and "tiny-64-plain" in by:
        m, f = by["monai-64"], by["tiny-64-plain"]
        lines += [
            "## Comparison with MONAI `sliding_window_inference`",
            "",
            "Same 64 MiB volume, model (`tiny`), tile, overlap (0.25 → step 12/48/48), "
            "Gaussian blending with σ = tile/8 and MONAI's 1e-3 weight clamp, sw_batch_size 4. "
            "The fewlabel run uses margin 0 (pure Gaussian blending, like MONAI). MONAI holds "
            "input, output and weight map for the whole volume in memory; its time includes "
            "reading the volume into memory.",
            "",
            f"* time fewlabel / MONAI: {f['seconds']:.1f} s / {m['seconds']:.1f} s = "
            f"**{f['seconds'] / m['seconds']:.2f}**",
            f"* peak RSS fewlabel / MONAI: {f['peak_rss_mb']:.0f} / {m['peak_rss_mb']:.0f} MiB",
            f"* max |fewlabel − MONAI| over the volume: **{m['max_abs_diff']:.2e}** "
            f"(outputs up to {m['output_abs_max']:.2f})",
            "",
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    mk = sub.add_parser("make-input")
    mk.add_argument("--mb", type=int, required=True)
    mk.add_argument("--workdir", type=Path, required=True)
    sub.add_parser("report")
    one = sub.add_parser("case")
    one.add_argument("--name", required=True, choices=sorted(CASES))
    one.add_argument("--workdir", type=Path, required=True)
    one.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fewlabel_bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cases", default="tiny-64,tiny-64-plain,monai-64,tiny-1024,tiny-1024-c256,detnet-64"
    )
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    parser.add_argument(
        "--merge", action="store_true", help="add/replace these cases in the existing results.json"
    )
    args = parser.parse_args()
    if args.cmd == "make-input":
        make_input(args.workdir / f"input-{args.mb}.ome.zarr", SHAPES[args.mb])
        return
    if args.cmd == "report":  # re-render results.md from results.json
        data = json.loads(args.results.with_suffix(".json").read_text())
        write_results(data["results"], args.results, data["meta"])
        return
    if args.cmd == "case":
        print(json.dumps(run_case(args.name, args.workdir, args.threads)))
        return
    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.cases.split(",") if n]
    results = []
    for mb in sorted({CASES[n]["mb"] for n in names}):
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "make-input",
                "--mb",
                str(mb),
                "--workdir",
                str(args.workdir),
            ],
            check=True,
        )
        print(f"input {mb} MiB ready ({time.perf_counter() - t0:.0f}s)", flush=True)
    for name in names:
        env = {**os.environ, **CASES[name].get("env", {})}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "case",
                "--name",
                name,
                "--workdir",
                str(args.workdir),
                "--threads",
                str(args.threads),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["env"] = CASES[name].get("env", {})
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.merge and args.results.with_suffix(".json").exists():
        old = json.loads(args.results.with_suffix(".json").read_text())["results"]
        fresh = {r["case"] for r in results}
        results = [r for r in old if r["case"] not in fresh] + results
        order = list(CASES)
        results.sort(key=lambda r: order.index(r["case"]))
    meta = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "torch": torch.__version__,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
    }
    (args.results.with_suffix(".json")).write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    write_results(results, args.results, meta)
    print(args.results.read_text())


if __name__ == "__main__":
    main()
