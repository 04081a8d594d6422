"""Stage ``predict_log``: the LoG baseline's response map of one image.

Reads the LoG model folder (sigma, converted to voxels of this image; normalisation) and the
sample's image (ZYX, or channel 0 of CZYX), computes the normalised Laplacian-of-Gaussian
response block by block (:func:`fewlabel.detection.log.baseline.log_response_zarr`) and writes
it as a float32 OME-Zarr, which ``extract_points`` turns into points.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict_log", help="LoG response map of an image (OME-Zarr)")
    p.add_argument("--model-dir", required=True, help="LoG model folder (fit_log_threshold)")
    p.add_argument("--image", required=True, help="input .ome.zarr")
    p.add_argument("--output", required=True, help="response .ome.zarr")
    p.add_argument("--sample", default=None)
    add_common(p)
    p.set_defaults(handler=predict_log)


def predict_log(args: argparse.Namespace) -> None:
    from fewlabel.detection.log.baseline import load_log_model, log_response_zarr
    from fewlabel.io import open_ome_zarr, pyramid_settings, zyx_view

    model = load_log_model(args.model_dir)
    volume = open_ome_zarr(args.image, sample=args.sample)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        log_response_zarr(
            zyx_view(volume.array),
            args.output,
            sigma=model.sigma_voxels(volume.voxel_size),
            voxel_size=volume.voxel_size,
            percentiles=model.percentiles,
            normalization=model.normalization,
            workers=args.threads,
            sample=args.sample,
        )
