"""``results.json`` → ``results.md`` (tables only; the reading is in README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PEAK_NOTE = (
    "float32 peak of the 2 cores: 2 cores × 2.1 GHz × 2 AVX-512 FMA units × 16 lanes × 2 FLOP "
    "= 269 GFLOP/s (134 per core; 1 thread below, so % of one core)"
)


def _models(data: dict[str, Any]) -> list[str]:
    out = ["## 1. Model efficiency (one 4-tile batch, 1 thread, CPU time)", "", PEAK_NOTE, ""]
    for name, m in data.items():
        out += [
            f"**{name}**: batch {m['batch']}, {m['gflop_per_batch']:.1f} GFLOP per batch "
            f"({m['kflop_per_voxel']:.0f} kFLOP/voxel)",
            "",
            "| variant | CPU s / batch | GFLOP/s | % of 1-core fp32 peak | Mvox/s | speed-up "
            "| max abs diff to float32 |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, r in m["variants"].items():
            out.append(
                f"| {key} | {r['cpu_s']:.3f} | {r['gflops']:.1f} | "
                f"{100 * r['gflops'] / 134.4:.0f} % | "
                f"{r['mvox_s']:.2f} | {r['speedup']:.2f}× | {r['max_abs_diff']:.2e} |"
            )
        out.append("")
    return out


def _engine(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    base = min((r for k, r in rows.items() if k.startswith("baseline")), key=lambda r: r["cpu_s"])
    best = min((r for k, r in rows.items() if k.startswith("default") and "roi" not in k),
               key=lambda r: r["cpu_s"])  # fmt: skip
    out = [
        "## 2. Engine end to end: before vs after, and ROI gating (same volume, same tiles)",
        "",
        f"Volume {data['shape']} uint16 OME-Zarr, DM-DetNet3D config default (base 8, depth 2, "
        "random weights), tile [16, 128, 128], overlap [8, 48, 48], batch 4, cache 64, 1 torch "
        "thread, each run its own process (before/after pairs repeated, then float32 and ROI). "
        "ROI: one compact "
        f"ellipsoid (the sample filling part of the field), {100 * data['roi_fraction']:.0f} % "
        "of the voxels. Speed-ups: CPU seconds of the best 'before' run / this run.",
        "",
        "| run | CPU s | wall s | CPU speed-up vs before | tiles computed | tiles skipped "
        "| load (uptime) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        s = r["stats"]
        out.append(
            f"| {key} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {base['cpu_s'] / r['cpu_s']:.2f}× | "
            f"{s['tiles_computed']} | {s.get('tiles_skipped', 0)} | "
            f"{r['uptime'].split('load average:')[-1].strip()} |"
        )
    gated = rows.get("default+roi")
    if gated:
        s = gated["stats"]
        out += [
            "",
            f"ROI gating: {s['tiles_needed'] - s['tiles_skipped']} of {s['tiles_needed']} tiles "
            f"hold ROI voxels; CPU time gated / ungated (best default run) = "
            f"{gated['cpu_s'] / best['cpu_s']:.2f} "
            f"(speed-up {best['cpu_s'] / gated['cpu_s']:.2f}×).",
        ]
    out += ["", "| output difference | value |", "|---|---|"]
    out += [f"| {k} | {v:.3g} |" for k, v in data["diffs"].items()]
    return out + [""]


def _load_range(data: dict[str, Any]) -> str:
    """Range of the 1-minute load averages recorded in the rows' ``uptime``."""
    loads = [
        float(r["uptime"].split("load average:")[-1].split(",")[0])
        for entry in data.values()
        if isinstance(entry, dict)
        for r in entry["rows"].values()
        if "uptime" in r
    ]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "not recorded"


def _side(data: dict[str, Any]) -> list[str]:
    out = [
        "## 3. Side by side with trained models: fewlabel vs MONAI sliding_window_inference",
        "",
        "Same volume, tile, overlap, Gaussian σ = tile/8, batch 4, CPU, 1 thread, no mirroring; "
        "fewlabel with pure Gaussian blending (margin 0) like MONAI; MONAI runs the original "
        "float32 module on the whole volume in RAM; each run its own process. Ratios = MONAI / "
        f"fewlabel. Detection threshold {data.get('detector_threshold', 0):.2f} (tuned on "
        "validation), F1 at a 3-voxel gate. One run: `run.py sidebyside --workdir "
        "/tmp/fewlabel_perf` (trained models reused from that folder); 1-minute load average "
        f"during the run: {_load_range(data)}.",
        "",
        "| model / setting / volume | engine | CPU s | wall s | CPU time ratio MONAI/this "
        "| peak RSS MiB | RSS − before MiB | max abs diff to fewlabel float32 | F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in data.items():
        if not isinstance(entry, dict):
            continue
        monai = entry["rows"]["MONAI float32"]
        for engine, r in entry["rows"].items():
            f1 = r.get("detection", {}).get("f1")
            diff = r.get("max_abs_diff")
            out.append(
                f"| {key.replace(' | ', ' / ')} | {engine} | {r['cpu_s']:.1f} | "
                f"{r['wall_s']:.1f} | "
                f"{monai['cpu_s'] / r['cpu_s']:.2f} | {r['rss_peak_mib']:.0f} | "
                f"{r['rss_peak_mib'] - r['rss_base_mib']:.0f} | "
                f"{'–' if diff is None else f'{diff:.2e}'} | {'–' if f1 is None else f'{f1:.4f}'} |"
            )
    return out + [""]


def _scaling(data: dict[str, Any]) -> list[str]:
    out = [
        "## 4. Engine scaling (tiny 2-layer conv net, float32, default detection tiles "
        "[16, 128, 128], overlap [8, 48, 48], cache 64; volumes grow in z on a 512² plane)",
        "",
        "One run: `run.py scaling --big` (each size its own process, `nice -n 10`, 1 thread).",
        "",
        "| volume (float32 output) | shape | CPU µs / voxel | wall µs / voxel | recompute factor "
        "| peak RSS MiB | RSS − before MiB | load (uptime) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = None
    for label, r in data.items():
        vox = r["shape"][0] * r["shape"][1] * r["shape"][2]
        per = 1e6 * r["cpu_s"] / vox
        first = first or per
        out.append(
            f"| {label} | {r['shape']} | {per:.3f} ({per / first:.2f}× the first) | "
            f"{1e6 * r['wall_s'] / vox:.3f} | {r['stats']['recompute_factor']:.3f} | "
            f"{r['rss_peak_mib']:.0f} | {r['rss_peak_mib'] - r['rss_base_mib']:.0f} | "
            f"{r['uptime'].split('load average:')[-1].strip()} |"
        )
    return out + [""]


def _scaling_tile64(data: dict[str, Any]) -> list[str]:
    lines = _scaling(data)
    lines[0] = (
        "### Same with the smaller tile of benchmarks/tiled_engine ([16, 64, 64], overlap "
        "[4, 16, 16]): the plan's recompute factor differs between the sizes (see below)"
    )
    return lines


def _recompute(data: dict[str, Any]) -> list[str]:
    out = [
        "### Recompute factor vs plane size (dry run of the tile plan, no model; z = 32)",
        "",
        "| plane / tile / cache tiles | tiles computed / tiles needed |",
        "|---|---|",
    ]
    rows = [f"| {k.replace(' | ', ', ')} | {v:.3f} |" for k, v in data.items()]
    return out + rows + [""]


def render(results: dict[str, Any], path: Path) -> None:
    m = results.get("machine", {})
    lines = [
        "# Inference performance (issue 13)",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores (KVM, shared with other "
        f"jobs), AVX-512 {m.get('avx512f')}, AVX512-BF16 {m.get('avx512_bf16')}, AMX-BF16 "
        f"{m.get('amx_bf16')}; torch {m.get('torch')}; last part finished at: {m.get('uptime')}. "
        "CPU seconds (user + system of the run's process) are the load-independent measure; "
        "wall seconds depend on the other jobs. Command and settings: README.md.",
        "",
    ]
    for key, fn in (
        ("models", _models),
        ("engine", _engine),
        ("sidebyside", _side),
        ("scaling", _scaling),
        ("scaling_tile64", _scaling_tile64),
        ("recompute", _recompute),
    ):
        if key in results:
            lines += fn(results[key])
    path.write_text("\n".join(lines) + "\n")
