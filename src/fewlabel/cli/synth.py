"""Stages ``make_demo_data`` (the demo inputs of the default workflow) and ``synth`` (one volume)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg

SHEET_COLUMNS = ("sample", "image", "channel", "voxel_size", "split", "task", "points", "labels",
                 "target")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("make_demo_data", help="write the synthetic demo volumes + manifest.json")
    p.add_argument("--outdir", required=True, help="folder for the demo files")
    p.add_argument("--params", type=json_arg, default={},
                   help='JSON (config demo.params), e.g. {"spots_shape": [16, 128, 128], '
                        '"spots_snr": 4, "nuclei_count": 6}')
    p.add_argument("--sheet", default=None, help="also write the demo sample sheet (TSV) here")
    add_common(p)
    p.set_defaults(handler=run_make_demo)

    q = subparsers.add_parser("synth", help="one synthetic volume (spots, centrioles, nuclei)")
    q.add_argument("--kind", choices=["spots", "centrioles", "nuclei"], required=True)
    q.add_argument("--out-prefix", required=True,
                   help="writes <prefix>.tif and <prefix>.csv (nuclei: also <prefix>_labels.tif, "
                        "<prefix>_labelfree.tif; <prefix>.tif is the fluorescence)")
    q.add_argument("--shape", type=json_arg, default=None, help="JSON [z, y, x]")
    q.add_argument("--voxel-size", type=json_arg, default=None,
                   help="JSON [z, y, x] µm written to the TIFF metadata")
    q.add_argument("--snr", type=float, default=None, help="spots: PTC SNR")
    q.add_argument("--density", default=None, help="spots: low|medium|high or spots per 100^3")
    q.add_argument("--clutter", action=argparse.BooleanOptionalAction, default=None,
                   help="spots: uneven background and out-of-class blobs")
    q.add_argument("--n-particles", type=int, default=None, help="centrioles: particle count")
    q.add_argument("--n-nuclei", type=int, default=None, help="nuclei: nucleus count")
    q.add_argument("--params", type=json_arg, default=None,
                   help="JSON of further keyword arguments of the generator")
    add_common(q)
    q.set_defaults(handler=run_synth)


def run_make_demo(args: argparse.Namespace) -> None:
    from fewlabel.config import DemoParams
    from fewlabel.synth import make_demo

    rows = make_demo(args.outdir, params=DemoParams.model_validate(args.params), seed=args.seed)
    if args.sheet:
        _write_sheet(rows, args.sheet)


def _write_sheet(rows: list[dict[str, str]], path: str) -> None:
    import csv
    from pathlib import Path

    from fewlabel.io import atomic_path

    with atomic_path(path) as tmp, open(Path(tmp), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SHEET_COLUMNS), delimiter="\t",
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def run_synth(args: argparse.Namespace) -> None:
    import inspect

    from fewlabel import synth
    from fewlabel.errors import ConfigError

    generator = {"spots": synth.spot_volume, "centrioles": synth.centriole_volume,
                 "nuclei": synth.nuclei_pair}[args.kind]
    kwargs = dict(args.params or {})
    density = args.density
    if density is not None and density not in synth.DENSITIES:
        try:
            density = float(density)
        except ValueError:
            density = args.density  # the generator reports the error
    for key, value in (("snr", args.snr), ("density", density), ("clutter", args.clutter),
                       ("n_particles", args.n_particles), ("n_nuclei", args.n_nuclei)):
        if value is not None:
            kwargs[key] = value
    if args.shape is not None:
        kwargs["shape"] = args.shape
    allowed = set(inspect.signature(generator).parameters) - {"seed"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"option(s) {unknown} do not apply to --kind {args.kind}; allowed: "
                          f"{sorted(allowed)}.", fix="remove them or choose another --kind.")
    default_voxel = {"spots": (0.3, 0.1, 0.1), "centrioles": (0.1, 0.05, 0.05),
                     "nuclei": (0.5, 0.25, 0.25)}[args.kind]
    voxel = args.voxel_size or kwargs.get("voxel_size")
    if args.kind == "nuclei":  # keep the written voxel size and the anisotropy consistent
        if voxel is None and "anisotropy" in kwargs:
            voxel = (0.25 * float(kwargs["anisotropy"]), 0.25, 0.25)
        voxel = voxel or default_voxel
        if len(voxel) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in voxel):
            kwargs.setdefault("anisotropy", float(voxel[0]) / float(voxel[2]))
    voxel = voxel or default_voxel
    if len(voxel) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in voxel):
        raise ConfigError(f"--voxel-size {voxel!r} is not three positive numbers.",
                          fix="give JSON [z, y, x] in µm, e.g. [0.3, 0.1, 0.1].")
    result = generator(**kwargs, seed=args.seed)
    prefix = args.out_prefix
    if args.kind == "nuclei":
        synth.write_tiff(f"{prefix}.tif", result.fluorescence, voxel)
        synth.write_tiff(f"{prefix}_labelfree.tif", result.label_free, voxel)
        synth.write_tiff(f"{prefix}_labels.tif", result.labels, voxel)
    else:
        synth.write_tiff(f"{prefix}.tif", result.image, voxel)
    from fewlabel.io import write_points_csv

    write_points_csv(result.points[["z", "y", "x"]], f"{prefix}.csv")
