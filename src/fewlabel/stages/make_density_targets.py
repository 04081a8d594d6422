"""Stage ``make_density_targets``: annotated points → Gaussian density target + weight map.

Reads the sample's ingested image (shape, voxel size) and its points CSV, renders one
Gaussian per point as the regression target and the adaptive-wing weight map
(:func:`fewlabel.detection.density.targets.make_density_targets`), and writes both as
OME-Zarr (``--target``, ``--weight``).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_object_diameter, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make_density_targets", help="points -> Gaussian density target + AWing weight map"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--image", required=True, help="the sample's ingested .ome.zarr")
    p.add_argument("--points", required=True, help="points CSV (z,y,x voxels)")
    p.add_argument("--target", required=True, help="output density target .ome.zarr")
    p.add_argument("--weight", required=True, help="output weight map .ome.zarr")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON detection.targets section: {"sigma": [z,y,x], "sigma_unit": '
        '"voxel"|"um", "lam": 10, "T": 0.2}',
    )
    p.add_argument(
        "--annotated-region",
        default="",
        help="sheet column annotated_region: full | none | box CSV | mask image ('' = "
        "detection.targets.annotation)",
    )
    p.add_argument(
        "--roi",
        default="",
        help="ROI mask .ome.zarr (''= none): unlabelled voxels only inside it, background outside",
    )
    add_object_diameter(p, derives="a sigma left at its default becomes d/4 µm")
    add_common(p)
    p.set_defaults(handler=make_density_targets)


def make_density_targets(args: argparse.Namespace) -> None:
    from fewlabel.config import DensityTargetsConfig
    from fewlabel.detection.density import targets
    from fewlabel.io import pyramid_settings

    params = DensityTargetsConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        targets.make_density_targets(
            args.image,
            args.points,
            args.target,
            args.weight,
            params=params,
            sample=args.sample,
            workers=args.threads,
            object_diameter_um=args.object_diameter_um,
            annotated_region=args.annotated_region or None,
            roi=args.roi or None,
        )
