"""Stage ``bfs_instances``: BFS-Net instance labels (paper §3.4).

Reads S1's centre likelihood and S2's foreground probability of one volume (foreground: above
the S2 model's ``mask_threshold``), takes S1's local
maxima (peak threshold and radius from the S1 model folder), merges those closer than
``merge_distance_um`` (score-weighted mean) and floods S2's foreground from them, chunk by
chunk (:mod:`fewlabel.segmentation.bfs.instances`). Writes the uint32 labels OME-Zarr (an NGFF
label image of the input) at the same path as the other segmenters, and the merged centres CSV.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bfs_instances", help="merged S1 peaks + watershed in S2's mask")
    p.add_argument("--sample", required=True)
    p.add_argument("--likelihood", required=True, help="S1 prediction .ome.zarr")
    p.add_argument("--mask", required=True, help="S2 prediction .ome.zarr (probability)")
    p.add_argument("--s1-dir", required=True, help="S1 model folder (peak settings)")
    p.add_argument(
        "--s2-dir", required=True, help="S2 model folder (its thresholds.json: mask_threshold)"
    )
    p.add_argument("--output", required=True, help="output labels .ome.zarr (uint32)")
    p.add_argument("--centres", required=True, help="output merged centres CSV")
    p.add_argument(
        "--params", type=json_arg, default={}, help="JSON segmentation.bfs.instances section"
    )
    add_common(p)
    p.set_defaults(handler=bfs_instances)


def bfs_instances(args: argparse.Namespace) -> None:
    import zarr

    from fewlabel.config import BfsInstancesConfig
    from fewlabel.errors import InputDataError
    from fewlabel.io import (
        atomic_path,
        create_ome_zarr,
        label_source,
        open_ome_zarr,
        pyramid_settings,
        write_points_csv,
    )
    from fewlabel.models.store import load_model
    from fewlabel.segmentation.bfs.instances import assign_instances, merge_peaks
    from fewlabel.segmentation.bfs.models import S1_ARCH, S2_ARCH
    from fewlabel.segmentation.bfs.s1 import s1_peaks

    params = BfsInstancesConfig.model_validate(args.params)
    s1 = load_model(args.s1_dir, "cpu", expect=S1_ARCH)
    mask_threshold = float(
        load_model(args.s2_dir, "cpu", expect=S2_ARCH).thresholds["mask_threshold"]
    )
    likelihood = open_ome_zarr(args.likelihood, sample=args.sample)
    mask = open_ome_zarr(args.mask, sample=args.sample)
    if tuple(likelihood.shape) != tuple(mask.shape) or len(mask.shape) != 3:
        raise InputDataError(
            f"S1 likelihood {tuple(likelihood.shape)} and S2 mask {tuple(mask.shape)} must be "
            "ZYX volumes of one shape.",
            sample=args.sample,
            path=args.mask,
            fix="predict both networks on the same ingested image.",
        )
    voxel = mask.voxel_size
    workers = max(1, int(args.threads))
    peaks = s1_peaks(
        likelihood.array,
        voxel,
        threshold=float(s1.thresholds.get("peak_threshold", 0.3)),
        min_distance_um=float(s1.thresholds.get("peak_min_distance_um", 2.0)),
        sample=args.sample,
        path=args.likelihood,
        workers=workers,
    )
    merged = merge_peaks(peaks, params.merge_distance_um, voxel)
    write_points_csv(merged, args.centres)
    image = mask.attrs.get("fewlabel", {}).get("image")
    with pyramid_settings(like=args.mask, workers=workers), atomic_path(args.output) as tmp:
        out = create_ome_zarr(
            tmp,
            mask.shape,
            "uint32",
            tuple(mask.array.chunks),
            voxel,
            name=f"{args.sample}:labels",
            extra_attrs={
                "sample": args.sample,
                "kind": "labels",
                "method": "bfs",
                "source": str(args.mask),
                "params": params.model_dump(mode="json"),
                "mask_threshold": mask_threshold,
                "n_peaks": len(peaks),
                "n_centres": len(merged),
            },
            image_label=label_source(args.output, image),
        )
        n = assign_instances(
            mask.array,
            merged[["z", "y", "x"]].to_numpy(),
            out,
            voxel_size=voxel,
            mask_threshold=mask_threshold,
            merge_distance_um=params.merge_distance_um,
            halo=params.halo,
            min_size=params.min_size,
            workers=workers,
        )
        group = zarr.open_group(str(tmp), mode="r+")
        group.attrs["fewlabel"] = {**group.attrs["fewlabel"], "n_objects": int(n)}
