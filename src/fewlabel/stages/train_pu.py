"""Stage ``train_pu``: positive-unlabelled window classifier → model folder (``method: pu``).

Reads the train and val items (image, clicked points, ROI mask) from the sample sheet, trains
the fully convolutional classifier with the GE-binomial loss (or PN), SWA / EMA, sets the
score threshold and writes the model folder
(:func:`fewlabel.detection.pu.fit.train_to_folder`; Vedrenne et al.).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import (
    add_common,
    add_object_diameter,
    add_training_inputs,
    json_arg,
    training_items,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train_pu", help="train the PU window classifier -> model folder")
    add_training_inputs(p, keys="sample, image, points, roi", section="detection.pu")
    p.add_argument(
        "--roi-params",
        type=json_arg,
        default={},
        help="JSON roi section (particle_radius_um / expected_particles fallbacks)",
    )
    p.add_argument(
        "--use-roi",
        choices=("yes", "no"),
        default="yes",
        help="no: ignore the ROI masks (roi.enabled: false); unlabelled windows anywhere",
    )
    add_object_diameter(
        p,
        derives="normalisation.background_um left at its default is set to it per axis "
        "(a top-hat box of two diameters)",
    )
    add_common(p)
    p.set_defaults(handler=train_pu)


def train_pu(args: argparse.Namespace) -> None:
    import json
    import logging

    from fewlabel.config import RoiConfig
    from fewlabel.config.pu import PUConfig
    from fewlabel.detection.pu.fit import train_to_folder
    from fewlabel.device import configure_torch
    from fewlabel.runtime import write_json

    params = PUConfig.model_validate(args.params)
    roi = RoiConfig.model_validate(args.roi_params)
    train, val = training_items(args, "pu_items")
    items = [dict(item) for item in [*train, *val]]
    if args.use_roi == "no":
        for item in items:
            item["roi"] = ""
    device = configure_torch(args.threads, args.seed)
    summary = train_to_folder(
        items, args.out_dir, params=params, roi=roi, seed=args.seed, device=device,
        object_diameter_um=args.object_diameter_um,
    )  # fmt: skip
    if args.summary:
        write_json(summary, args.summary)
    logging.getLogger(__name__).info("train_pu summary: %s", json.dumps(summary, default=str))
