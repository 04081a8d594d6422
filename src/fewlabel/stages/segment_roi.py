"""Stage ``segment_roi``: ROI mask and class-prior estimate of one sample.

Reads the sample's ingested ZYX image, segments its region of interest (smoothing,
clipping/CLAHE, 2-Gaussian mixture, erosion/dilation; :func:`fewlabel.roi.segment_roi`,
Vedrenne et al. §2.2) and writes the ``uint8`` mask OME-Zarr and a summary JSON (ROI
fraction, PU class prior π, warnings).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment_roi",
        help="ROI mask (smoothing + clipping/CLAHE + 2-Gaussian mixture + erosion/dilation) "
        "and the PU class prior π",
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--image", required=True, help="the sample's ingested ZYX .ome.zarr")
    p.add_argument("--mask-out", required=True, help="output ROI mask (uint8 .ome.zarr)")
    p.add_argument("--json-out", required=True, help="output summary JSON")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help="JSON object with the 'roi' config keys (fewlabel.config.RoiConfig)",
    )
    add_common(p)
    p.set_defaults(handler=segment_roi)


def segment_roi(args: argparse.Namespace) -> None:
    from fewlabel import roi
    from fewlabel.config import RoiConfig
    from fewlabel.io import pyramid_settings

    params = RoiConfig.model_validate(args.params)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        roi.segment_roi(
            args.image,
            args.mask_out,
            args.json_out,
            params=params,
            sample=args.sample,
            workers=max(1, int(args.threads)),
            seed=int(args.seed),
        )
