"""Scaling of the block-wise stages: time per voxel and peak RSS at 64 MiB, 512 MiB, 4 GiB.

For every stage and size: write a synthetic OME-Zarr input of that many (uncompressed) bytes
slab by slab (:mod:`synth_zarr`, never whole in memory), then run the stage through the CLI
(``python -m fewlabel <stage> ...``) in a fresh process and take that process's own CPU time
(``os.wait4``) and peak RSS (``VmHWM`` at exit; ``ru_maxrss`` would include the parent's RSS
at fork). Stages: ``segment_roi`` (uint16 image), ``extract_points``
(float32 density map), ``split_instances`` (float32 mask + distance, 2 channels). The plane is
512 × 512 voxels and the number of planes grows with the size, chunks (32, 256, 256).

    nice -n 10 .venv/bin/python benchmarks/performance/scaling.py            # 64M, 512M
    nice -n 10 .venv/bin/python benchmarks/performance/scaling.py --sizes 64M,512M,4G

``--src DIR`` runs the stages from another source tree (e.g. the main branch's ``src`` for
before/after numbers); ``--tag`` names that run in the results. Results: ``scaling.json``
(appended, one record per run) and a table on stdout; inputs live under
``benchmarks/_work/scaling`` (gitignored) and are deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

PLANE = (512, 512)
CHUNKS = (32, 256, 256)
VOXEL = (0.3, 0.1, 0.1)
STAGES = {
    # stage: input kind of synth_zarr
    "segment_roi": "image",
    "extract_points": "density",
    "split_instances": "segmentation",
}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
    return int(float(text.rstrip("KMG")) * scale)


# The stage runs as ``python -m fewlabel ...`` and reports its own peak RSS (VmHWM of its
# address space) at exit: ``ru_maxrss`` of a child would include the parent's RSS at fork.
LAUNCHER = (
    "import runpy, sys\n"
    "sys.argv = ['fewlabel', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('fewlabel', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "    print('VMHWM_KB', hwm[0].split()[1] if hwm else -1, flush=True)\n"
)


def stage_command(stage: str, src: Path, work: Path, threads: int) -> list[str]:
    py = [sys.executable, "-c", LAUNCHER, stage, "--sample", "bench", "--threads", str(threads)]
    if stage == "segment_roi":
        return py + [
            "--image",
            str(src),
            "--mask-out",
            str(work / "roi.ome.zarr"),
            "--json-out",
            str(work / "roi.json"),
        ]
    if stage == "extract_points":
        return py + ["--density", str(src), "--threshold", "0.3", "--output", str(work / "p.csv")]
    return py + [
        "--prediction",
        str(src),
        "--output",
        str(work / "labels.ome.zarr"),
        "--params",
        json.dumps({"mask_threshold": 0.5, "h": 0.1}),
    ]


def run_measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; return its wall time, own CPU time (``os.wait4``) and own peak RSS (the
    VmHWM line the launcher prints)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace")[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    text = out.decode(errors="replace")
    hwm = [int(line.split()[1]) for line in text.splitlines() if line.startswith("VMHWM_KB")]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": hwm[-1] / 1024 if hwm and hwm[-1] > 0 else float("nan"),
    }


def generate(kind: str, path: Path, nbytes: int, seed: int) -> dict:
    from synth_zarr import bytes_per_voxel, write_volume

    planes = max(1, nbytes // (PLANE[0] * PLANE[1] * bytes_per_voxel(kind)))
    start = time.perf_counter()
    info = write_volume(path, kind, (planes, *PLANE), chunks=CHUNKS, voxel_size=VOXEL, seed=seed)
    info["generate_s"] = time.perf_counter() - start
    info["voxels"] = planes * PLANE[0] * PLANE[1]
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64M,512M", help="input sizes (uncompressed bytes)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--src", default=str(REPO / "src"), help="fewlabel source tree to run")
    parser.add_argument("--tag", default="this branch")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / "_work" / "scaling"))
    parser.add_argument("--results", default=str(HERE / "scaling.json"))
    parser.add_argument("--keep", action="store_true", help="keep the generated volumes")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))  # the generator uses fewlabel.io of this checkout
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(args.src).resolve()),
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    work = Path(args.workdir)
    records = []
    for stage in args.stages.split(","):
        kind = STAGES[stage]
        for size in args.sizes.split(","):
            nbytes = parse_size(size)
            case = work / f"{stage}-{size}"
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir(parents=True)
            src = case / "input.ome.zarr"
            info = generate(kind, src, nbytes, args.seed)
            load_before = os.getloadavg()
            measured = run_measured(stage_command(stage, src, case, args.threads), env)
            record = {
                "stage": stage,
                "size": size,
                "input_bytes": info["bytes"],
                "shape": info["shape"],
                "voxels": info["voxels"],
                "threads": args.threads,
                "tag": args.tag,
                "src": str(Path(args.src).resolve()),
                "generate_s": round(info["generate_s"], 2),
                **{k: round(v, 3) for k, v in measured.items()},
                "cpu_ns_per_voxel": round(measured["cpu_s"] / info["voxels"] * 1e9, 2),
                "wall_ns_per_voxel": round(measured["wall_s"] / info["voxels"] * 1e9, 2),
                "loadavg_before": [round(v, 2) for v in load_before],
                "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "machine": f"{os.cpu_count()} CPUs {platform.machine()}, "
                f"Python {platform.python_version()}",
            }
            records.append(record)
            print(json.dumps(record), flush=True)
            if not args.keep:
                shutil.rmtree(case, ignore_errors=True)
    results = Path(args.results)
    old = json.loads(results.read_text()) if results.exists() else []
    results.write_text(json.dumps(old + records, indent=1) + "\n")
    print(table(records))


def table(records: list[dict]) -> str:
    lines = [
        "| stage | tag | size | voxels | threads | wall s | CPU s | CPU ns/voxel | "
        "wall ns/voxel | peak RSS MiB | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['stage']} | {r['tag']} | {r['size']} | {r['voxels']:,} | {r['threads']} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['cpu_ns_per_voxel']:.0f} | "
            f"{r['wall_ns_per_voxel']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['loadavg_before'][0]:.1f} / {r['loadavg_after'][0]:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
