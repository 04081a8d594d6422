"""Stage ``extract_points``: a density or LoG response map → detected points CSV.

Reads the map (ZYX, or channel 0 of CZYX) and the detection threshold (``--threshold``, else
the model folder's ``thresholds.json``), finds the local maxima above it with sub-voxel
refinement, block by block (:func:`fewlabel.detection.peaks.extract_points`), and writes the
points (z, y, x voxels; µm; score) as CSV. A map predicted on the model's training grid
(:mod:`fewlabel.inference.resample`) gives points in the image's voxels all the same.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_object_diameter, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract_points", help="local maxima of a density/response map -> points CSV"
    )
    p.add_argument("--sample", required=True)
    p.add_argument("--density", required=True, help="density or response map (.ome.zarr)")
    p.add_argument(
        "--model-dir",
        default=None,
        help="model folder; its thresholds.json gives 'detection_threshold'",
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="override the model's detection threshold"
    )
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help='JSON detection.peaks section: {"min_distance": [z,y,x], '
        '"refine_radius": [z,y,x], "block_shape": null}',
    )
    add_object_diameter(
        p,
        derives=(
            "a min_distance left at its default becomes the object radius in voxels of this map"
        ),
    )
    p.add_argument("--output", required=True, help="points CSV (z,y,x,z_um,y_um,x_um,score)")
    add_common(p)
    p.set_defaults(handler=extract_points)


def extract_points(args: argparse.Namespace) -> None:
    from fewlabel.config import PeaksConfig
    from fewlabel.detection import peaks
    from fewlabel.detection.log.baseline import read_threshold
    from fewlabel.detection.sizes import derive_peaks
    from fewlabel.errors import ConfigError
    from fewlabel.io import atomic_path, open_ome_zarr, zyx_view

    params = PeaksConfig.model_validate(args.params)
    if args.threshold is not None:
        threshold = float(args.threshold)
    elif args.model_dir is not None:
        threshold = read_threshold(args.model_dir)
    else:
        raise ConfigError(
            "extract_points needs --model-dir (with thresholds.json) or --threshold.",
            sample=args.sample,
            fix="pass the trained model folder.",
        )
    volume = open_ome_zarr(args.density, sample=args.sample)
    if args.model_dir is not None:
        _warn_other_grid(args.model_dir, volume.voxel_size, args.sample)
    params = derive_peaks(params, args.object_diameter_um, volume.voxel_size, sample=args.sample)
    table = peaks.extract_points(
        zyx_view(volume.array),
        threshold=threshold,
        min_distance=params.min_distance,
        refine_radius=params.refine_radius,
        voxel_size=volume.voxel_size,
        workers=args.threads,
        block_shape=params.block_shape,
    )
    resampled = volume.attrs.get("fewlabel", {}).get("resampled")
    if resampled and len(table):  # predicted on the model's grid: back to the image's voxels
        from fewlabel.inference.resample import points_to_image

        zyx = table[["z", "y", "x"]].to_numpy(float)
        image_voxel = resampled["image_voxel_size"]
        table[["z", "y", "x"]] = points_to_image(zyx, volume.voxel_size, image_voxel)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, index=False)


def _warn_other_grid(model_dir: str, voxel_size: tuple[float, ...], sample: str) -> None:
    """Warn when the map is not on the model's training grid (``detection.predict.model_grid:
    false`` predicts a volume of another voxel size on its own grid), saying on which grid the
    threshold was tuned (``thresholds.json``'s ``tuned_on_grid``; folders without it: the
    training grid)."""
    from fewlabel.detection.log.baseline import read_thresholds
    from fewlabel.inference.resample import warn_other_grid

    own = read_thresholds(model_dir).get("tuned_on_grid") == "own"
    warn_other_grid(
        model_dir,
        voxel_size,
        sample,
        (
            "the network learnt on the training grid and is applied on this volume's; its "
            "threshold was tuned as it is applied here (validation volumes on their own grids, "
            "detection.predict.model_grid: false)."
            if own
            else "the detection threshold was tuned on the training grid, so it may not carry "
            "over (benchmarks/real_spots: F1 0.77 on the image's grid vs 0.88 on the training "
            "grid). Fix: detection.predict.model_grid: true. A network with the LoG prior "
            "(detection.train.model.log_prior) is the exception: there the image's grid scored "
            "higher (test F1 0.81 vs 0.73), and this warning is expected."
        ),
    )
