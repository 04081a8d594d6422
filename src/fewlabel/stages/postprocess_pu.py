"""Stage ``postprocess_pu``: PU score map → points CSV (same columns as ``extract_points``).

Threshold (the model's ``thresholds.json`` or ``--threshold``) → NMS with the particle sphere
→ averaging of overlapping predictions → recentring on the Otsu centre of mass → CLAHE + Otsu
intensity filter → ROI / edge filters; each step switchable (``detection.pu.postprocess``) and
logged as candidates in → kept (:func:`fewlabel.detection.pu.postprocess.postprocess`).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("postprocess_pu", help="PU score map -> points CSV")
    p.add_argument("--sample", required=True)
    p.add_argument("--score-map", required=True, help="dense score map (.ome.zarr)")
    p.add_argument("--image", required=True, help="the sample's image (.ome.zarr)")
    p.add_argument("--model-dir", required=True, help="PU model folder (thresholds.json)")
    p.add_argument("--roi", default="", help="ROI mask .ome.zarr ('' = none)")
    p.add_argument("--threshold", type=float, default=None, help="override the threshold")
    p.add_argument(
        "--params", type=json_arg, default={}, help="JSON detection.pu.postprocess section"
    )
    p.add_argument("--output", required=True, help="points CSV (z,y,x,z_um,y_um,x_um,score)")
    add_common(p)
    p.set_defaults(handler=postprocess_pu)


def postprocess_pu(args: argparse.Namespace) -> None:
    import json
    import logging

    from fewlabel.config.pu import PUPostprocessConfig
    from fewlabel.detection.log.baseline import read_thresholds
    from fewlabel.detection.pu.postprocess import postprocess
    from fewlabel.errors import ModelError
    from fewlabel.inference.resample import warn_other_grid
    from fewlabel.io import atomic_path, open_ome_zarr, zyx_view

    params = PUPostprocessConfig.model_validate(args.params)
    thresholds = read_thresholds(args.model_dir)
    if "radius_um" not in thresholds:
        raise ModelError(
            "thresholds.json has no 'radius_um': not a PU model folder.",
            path=args.model_dir,
            fix="point detection.model to a folder written by train_pu, or retrain.",
        )
    threshold = (
        float(args.threshold)
        if args.threshold is not None
        else float(thresholds["detection_threshold"])
    )
    score = open_ome_zarr(args.score_map, sample=args.sample)
    image = open_ome_zarr(args.image, sample=args.sample)
    warn_other_grid(
        args.model_dir,
        image.voxel_size,
        args.sample,
        "the window classifier learned the particles' size in voxels on that grid and its score "
        "threshold was set there, so detections may be missed or doubled. Fix: add clicks on a "
        "volume of this voxel size to the training rows.",
    )
    roi = open_ome_zarr(args.roi, sample=args.sample).array if args.roi else None
    table, steps = postprocess(
        zyx_view(score.array),
        zyx_view(image.array),
        threshold=threshold,
        radius_um=float(thresholds["radius_um"]),
        voxel_size=image.voxel_size,
        params=params,
        roi=roi,
        workers=max(1, int(args.threads)),
        sample=args.sample,
    )
    logging.getLogger(__name__).info("postprocess_pu steps: %s", json.dumps(steps))
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, index=False)
