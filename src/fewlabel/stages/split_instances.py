"""Stage ``split_instances``: a mask + distance prediction → uint32 instance labels.

Reads the 2-channel prediction of ``predict_segmentation`` (mask probability, distance) and
the instance parameters (``'auto'`` values from the segmenter's ``thresholds.json``;
:func:`fewlabel.segmentation.instances.resolve_auto_parameters`), splits the foreground into
objects by h-maxima markers and watershed, chunk by chunk with a halo
(:func:`fewlabel.segmentation.instances_chunked.split_instances_chunked`), and writes the labels
OME-Zarr with the parameters used, where each came from and the object count. The labels are
an NGFF label image (``image-label``, source: the predicted image), so napari opens them as a
labels layer, with the prediction's pyramid settings (nearest levels for large volumes).
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split_instances",
        help="h-maxima markers + watershed on a mask/distance prediction (chunk-safe)",
    )
    p.add_argument("--sample", required=True)
    p.add_argument(
        "--prediction",
        required=True,
        help="CZYX OME-Zarr with 2 channels: 0 = mask probability, 1 = distance",
    )
    p.add_argument("--output", required=True, help="output labels .ome.zarr (uint32)")
    p.add_argument(
        "--params",
        type=json_arg,
        default={},
        help="JSON segmentation.instances section: mask_threshold ('auto' or a "
        "number), h ('auto' or a number), min_size (0), fill_holes (false), "
        "halo ([8, 32, 32])",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="segmenter model folder; 'auto' values are read from its thresholds.json",
    )
    add_common(p)
    p.set_defaults(handler=split_instances)


def split_instances(args: argparse.Namespace) -> None:
    import zarr

    from fewlabel.config import InstancesConfig
    from fewlabel.errors import InputDataError
    from fewlabel.io import (
        atomic_path,
        create_ome_zarr,
        label_source,
        open_ome_zarr,
        pyramid_settings,
        zyx_view,
    )
    from fewlabel.segmentation.instances import resolve_auto_parameters
    from fewlabel.segmentation.instances_chunked import split_instances_chunked

    params = InstancesConfig.model_validate(args.params)
    params, sources = resolve_auto_parameters(params, args.model_dir, sample=args.sample)
    pred = open_ome_zarr(args.prediction, sample=args.sample)
    shape = pred.shape
    if len(shape) != 4 or shape[0] != 2:
        raise InputDataError(
            f"prediction has shape {shape}; expected CZYX with 2 channels "
            "(mask probability, distance).",
            sample=args.sample,
            path=args.prediction,
            fix="predict with the mask+distance segmentation model.",
        )
    image = pred.attrs.get("fewlabel", {}).get("image")  # what the segmenter saw
    with (
        pyramid_settings(like=args.prediction, workers=max(1, args.threads)),
        atomic_path(args.output) as tmp,
    ):
        out = create_ome_zarr(
            tmp,
            shape[1:],
            "uint32",
            tuple(pred.array.chunks[1:]),
            pred.voxel_size,
            name=f"{args.sample}:labels",
            extra_attrs={
                "sample": args.sample,
                "kind": "labels",
                "source": str(args.prediction),
                "params": params.model_dump(mode="json"),
                "mask_threshold_from": sources["mask_threshold"],
                "h_from": sources["h"],
            },
            image_label=label_source(args.output, image),
        )
        n = split_instances_chunked(
            zyx_view(pred.array, 0),
            zyx_view(pred.array, 1),
            out,
            halo=params.halo,
            mask_threshold=params.mask_threshold,
            h=params.h,
            min_size=params.min_size,
            fill_holes=params.fill_holes,
            workers=max(1, args.threads),
        )
        group = zarr.open_group(str(tmp), mode="r+")
        group.attrs["fewlabel"] = {**group.attrs["fewlabel"], "n_objects": int(n)}
