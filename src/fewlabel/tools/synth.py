"""Tool ``synth`` (not a rule): one synthetic volume with its ground truth, for tests and
benchmarks.

Generates spots (PTC-like), centrioles or nuclei (:mod:`fewlabel.synth`) and writes
``<prefix>.tif`` (voxel size in the TIFF metadata) and the points ``<prefix>.csv``; nuclei
also write ``<prefix>_labelfree.tif`` and ``<prefix>_labels.tif`` (``<prefix>.tif`` is then
the fluorescence).
"""

from __future__ import annotations

import argparse
from typing import Any

from fewlabel.cli import add_common, json_arg
from fewlabel.errors import ConfigError

#: voxel size (z, y, x) µm written when none is given, per kind
DEFAULT_VOXEL = {
    "spots": (0.3, 0.1, 0.1),
    "centrioles": (0.1, 0.05, 0.05),
    "nuclei": (0.5, 0.25, 0.25),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synth", help="one synthetic volume (spots, centrioles, nuclei)")
    p.add_argument("--kind", choices=["spots", "centrioles", "nuclei"], required=True)
    p.add_argument(
        "--out-prefix",
        required=True,
        help="writes <prefix>.tif and <prefix>.csv (nuclei: also <prefix>_labels.tif, "
        "<prefix>_labelfree.tif; <prefix>.tif is the fluorescence)",
    )
    p.add_argument("--shape", type=json_arg, default=None, help="JSON [z, y, x]")
    p.add_argument(
        "--voxel-size",
        type=json_arg,
        default=None,
        help="JSON [z, y, x] µm written to the TIFF metadata",
    )
    p.add_argument("--snr", type=float, default=None, help="spots: PTC SNR")
    p.add_argument("--density", default=None, help="spots: low|medium|high or spots per 100^3")
    p.add_argument(
        "--clutter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="spots: uneven background and out-of-class blobs",
    )
    p.add_argument("--n-particles", type=int, default=None, help="centrioles: particle count")
    p.add_argument("--n-nuclei", type=int, default=None, help="nuclei: nucleus count")
    p.add_argument(
        "--params",
        type=json_arg,
        default=None,
        help="JSON of further keyword arguments of the generator",
    )
    add_common(p)
    p.set_defaults(handler=synth)


def synth(args: argparse.Namespace) -> None:
    from fewlabel import synth as generators
    from fewlabel.io import write_points_csv

    generator = {
        "spots": generators.spot_volume,
        "centrioles": generators.centriole_volume,
        "nuclei": generators.nuclei_pair,
    }[args.kind]
    kwargs = _generator_kwargs(args, generator, generators.DENSITIES)
    voxel = _voxel_size(args, kwargs)
    result = generator(**kwargs, seed=args.seed)
    prefix = args.out_prefix
    if args.kind == "nuclei":
        generators.write_tiff(f"{prefix}.tif", result.fluorescence, voxel)
        generators.write_tiff(f"{prefix}_labelfree.tif", result.label_free, voxel)
        generators.write_tiff(f"{prefix}_labels.tif", result.labels, voxel)
    else:
        generators.write_tiff(f"{prefix}.tif", result.image, voxel)
    write_points_csv(result.points[["z", "y", "x"]], f"{prefix}.csv")


def _generator_kwargs(args: argparse.Namespace, generator: Any, densities: Any) -> dict[str, Any]:
    """The generator's keyword arguments from --params and the options; ConfigError for an
    option that the chosen --kind does not take."""
    import inspect

    kwargs = dict(args.params or {})
    density = args.density
    if density is not None and density not in densities:
        try:
            density = float(density)
        except ValueError:
            density = args.density  # the generator reports the error
    for key, value in (
        ("snr", args.snr),
        ("density", density),
        ("clutter", args.clutter),
        ("n_particles", args.n_particles),
        ("n_nuclei", args.n_nuclei),
    ):
        if value is not None:
            kwargs[key] = value
    if args.shape is not None:
        kwargs["shape"] = args.shape
    allowed = set(inspect.signature(generator).parameters) - {"seed"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"option(s) {unknown} do not apply to --kind {args.kind}; allowed: {sorted(allowed)}.",
            fix="remove them or choose another --kind.",
        )
    return kwargs


def _voxel_size(args: argparse.Namespace, kwargs: dict[str, Any]) -> Any:
    """The voxel size to write; for nuclei it also sets the generator's anisotropy (in
    ``kwargs``) so that the written voxel size and the anisotropy agree."""
    default_voxel = DEFAULT_VOXEL[args.kind]
    voxel = args.voxel_size or kwargs.get("voxel_size")
    if args.kind == "nuclei":
        if voxel is None and "anisotropy" in kwargs:
            voxel = (0.25 * float(kwargs["anisotropy"]), 0.25, 0.25)
        voxel = voxel or default_voxel
        if len(voxel) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in voxel):
            kwargs.setdefault("anisotropy", float(voxel[0]) / float(voxel[2]))
    voxel = voxel or default_voxel
    if len(voxel) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in voxel):
        raise ConfigError(
            f"--voxel-size {voxel!r} is not three positive numbers.",
            fix="give JSON [z, y, x] in µm, e.g. [0.3, 0.1, 0.1].",
        )
    return voxel
