"""Speed and memory of ``ingest_volume`` and ``segment_roi`` on ≥ 1 GB synthetic volumes.

For each volume size: write a uint16 ZYX TIFF plane by plane (never holding the volume),
then run ``fewlabel.io.ingest_volume`` and ``fewlabel.roi.segment_roi`` each in its own
subprocess and record wall time and the subprocess's peak RSS (``ru_maxrss`` of the child
itself). Results go to ``results.tsv`` and ``results.md`` next to this script; the big files
live under ``benchmarks/_work/ingest_roi`` (gitignored) and are deleted afterwards.

    .venv/bin/python benchmarks/ingest_roi/run.py            # defaults of the committed run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


# --------------------------------------------------------------------------- data
def write_spot_tiff(
    path: Path,
    shape: tuple[int, int, int],
    *,
    seed: int = 0,
    density_per_mvox: float = 275.0,
    background: float = 100.0,
    snr: float = 4.0,
    sigma_zyx: tuple[float, float, float] = (1.0, 1.5, 1.5),
) -> dict:
    """Write Poisson spots on an uneven background as a ZYX uint16 TIFF, one plane at a time.

    PTC SNR ``(I_obj − I_bg)/sqrt(I_obj)`` at each spot's local background; memory is a few
    planes. Returns facts about the volume.
    """
    import tifffile

    z_size, y_size, x_size = shape
    rng = np.random.default_rng(seed)
    n_spots = int(round(density_per_mvox * z_size * y_size * x_size / 1e6))
    centres = rng.uniform([0, 0, 0], [z_size - 1, y_size - 1, x_size - 1], size=(n_spots, 3))
    centres = centres[np.argsort(centres[:, 0])]
    yy, xx = np.meshgrid(
        np.arange(y_size, dtype=np.float32), np.arange(x_size, dtype=np.float32), indexing="ij"
    )

    def bg_plane(z: float) -> np.ndarray:
        return (
            background
            * (
                1.0
                + 0.3
                * np.sin(2 * np.pi * xx / x_size)
                * np.cos(2 * np.pi * yy / y_size + z / z_size)
            )
        ).astype(np.float32)

    def bg_at(z: float, y: float, x: float) -> float:
        return background * (
            1.0 + 0.3 * np.sin(2 * np.pi * x / x_size) * np.cos(2 * np.pi * y / y_size + z / z_size)
        )

    sz, sy, sx = sigma_zyx
    reach = (int(np.ceil(3 * sz)), int(np.ceil(4 * sy)), int(np.ceil(4 * sx)))
    peak = np.array([bg_at(*c) for c in centres])
    amplitudes = ((snr + np.sqrt(snr * snr + 4 * peak)) / 2) ** 2 - peak  # I_obj - I_bg

    def planes():
        lo = 0
        for z in range(z_size):
            plane = bg_plane(float(z))
            while lo < n_spots and centres[lo, 0] < z - reach[0]:
                lo += 1
            hi = lo
            while hi < n_spots and centres[hi, 0] <= z + reach[0]:
                hi += 1
            for i in range(lo, hi):
                cz, cy, cx = centres[i]
                amp = amplitudes[i] * np.exp(-0.5 * ((z - cz) / sz) ** 2)
                y0, y1 = max(int(cy) - reach[1], 0), min(int(cy) + reach[1] + 1, y_size)
                x0, x1 = max(int(cx) - reach[2], 0), min(int(cx) + reach[2] + 1, x_size)
                gy = np.exp(-0.5 * ((np.arange(y0, y1) - cy) / sy) ** 2)
                gx = np.exp(-0.5 * ((np.arange(x0, x1) - cx) / sx) ** 2)
                plane[y0:y1, x0:x1] += (amp * gy[:, None] * gx[None, :]).astype(np.float32)
            yield np.minimum(rng.poisson(plane), 65535).astype(np.uint16)

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(planes(), shape=shape, dtype=np.uint16)
    return {"n_spots": n_spots, "bytes": int(np.prod(shape)) * 2}


# --------------------------------------------------------------------------- child steps
def _child(step: str, args: argparse.Namespace) -> None:
    """Run one step in this (child) process; print a JSON line with its own peak RSS."""
    start = time.perf_counter()
    info: dict = {}
    if step == "generate":
        info = write_spot_tiff(Path(args.tiff), tuple(args.shape), seed=args.seed)
    elif step == "ingest":
        from fewlabel.io import ingest_volume

        summary = ingest_volume(
            args.tiff, args.zarr, sample="bench", voxel_size=args.voxel, chunks=args.chunks
        )
        info = {"shape": summary["shape"], "min": summary["min"], "max": summary["max"]}
    elif step == "roi":
        from fewlabel.config import RoiConfig
        from fewlabel.roi import segment_roi

        summary = segment_roi(
            args.zarr,
            args.mask,
            args.json,
            params=RoiConfig(),
            sample="bench",
            workers=args.threads,
            seed=args.seed,
        )
        info = {
            k: summary[k]
            for k in ("roi_fraction", "roi_voxels", "total_voxels", "clahe_kernel_voxels")
        }
        info["gmm_weights"] = summary["gmm"]["weights"]
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        "RESULT "
        + json.dumps(
            {
                "step": step,
                "wall_s": wall,
                "peak_rss_mb": peak_kb / 1024,  # MiB
                **info,
            }
        ),
        flush=True,
    )


def _run_child(step: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, *argv]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )
    outer_wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"step {step} failed ({proc.returncode})")
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["process_wall_s"] = outer_wall  # includes interpreter start and imports
    return result


# --------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--shapes",
        default="144x1024x1024,576x1024x1024",
        help="comma-separated ZxYxX volume shapes (uint16)",
    )
    parser.add_argument("--shape", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--voxel", type=float, nargs=3, default=[0.3, 0.1, 0.1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work" / "ingest_roi"))
    parser.add_argument("--keep", action="store_true", help="keep the big files")
    parser.add_argument("--results-dir", default=str(HERE))
    parser.add_argument("--tiff"), parser.add_argument("--zarr")
    parser.add_argument("--mask"), parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args)
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    common = [
        "--chunks",
        *map(str, args.chunks),
        "--voxel",
        *map(str, args.voxel),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    try:
        for text in args.shapes.split(","):
            shape = [int(v) for v in text.lower().split("x")]
            tag = "x".join(map(str, shape))
            files = {
                "--tiff": work / f"{tag}.tif",
                "--zarr": work / f"{tag}.ome.zarr",
                "--mask": work / f"{tag}.roi.ome.zarr",
                "--json": work / f"{tag}.roi.json",
            }
            argv = common + ["--shape", *map(str, shape)]
            for key, value in files.items():
                argv += [key, str(value)]
            size_gb = int(np.prod(shape)) * 2 / 1e9
            for step in ("generate", "ingest", "roi"):
                print(f"[{tag}] {step} ...", flush=True)
                result = _run_child(step, argv)
                result.update(shape=tag, volume_gb=size_gb)
                print(
                    f"[{tag}] {step}: {result['wall_s']:.1f} s, peak RSS "
                    f"{result['peak_rss_mb']:.0f} MiB",
                    flush=True,
                )
                rows.append(result)
            rows[-2]["zarr_gb"] = _du(files["--zarr"]) / 1e9
            if not args.keep:
                for value in files.values():
                    _rm(value)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    _write_results(rows, args, Path(args.results_dir))


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _rm(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _write_results(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    cols = [
        "shape",
        "volume_gb",
        "step",
        "threads",
        "wall_s",
        "process_wall_s",
        "peak_rss_mib",
        "rss_fraction_of_volume",
    ]
    lines = ["\t".join(cols)]
    for r in rows:
        r["peak_rss_mib"] = r["peak_rss_mb"]
        r["threads"] = args.threads if r["step"] == "roi" else 1
        r["rss_fraction_of_volume"] = r["peak_rss_mb"] * 1024**2 / (r["volume_gb"] * 1e9)
        lines.append(
            "\t".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
        )
    (out / "results.tsv").write_text("\n".join(lines) + "\n")
    cpu = platform.processor() or platform.machine()
    md = [
        "# ingest_volume + segment_roi: speed and memory",
        "",
        f"Command: `.venv/bin/python benchmarks/ingest_roi/run.py --shapes {args.shapes} "
        f"--chunks {' '.join(map(str, args.chunks))} --threads {args.threads}`",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; CPU "
        "shared with other jobs while it ran, so wall times are indicative.",
        f"Volumes: uint16 ZYX TIFF written plane by plane, Poisson spots (SNR 4, 275 per 100³ "
        f"voxels) on an uneven background; voxel {args.voxel} µm; OME-Zarr chunks "
        f"{args.chunks}; `segment_roi` with default `RoiConfig` and {args.threads} threads.",
        "Peak RSS is the child process's own `ru_maxrss` (each step runs in a fresh "
        "subprocess; includes the interpreter and imported libraries).",
        "",
        "| volume | GB | step | wall s | peak RSS MiB | RSS / volume size | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = ""
        if r["step"] == "ingest":
            note = f"OME-Zarr on disk {r.get('zarr_gb', float('nan')):.2f} GB"
        elif r["step"] == "roi":
            note = (
                f"ROI fraction {r['roi_fraction']:.3f}, CLAHE region "
                f"{r['clahe_kernel_voxels']} voxels"
            )
        elif r["step"] == "generate":
            note = f"{r['n_spots']} spots"
        md.append(
            f"| {r['shape']} | {r['volume_gb']:.2f} | {r['step']} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['rss_fraction_of_volume']:.2f} | {note} |"
        )
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
