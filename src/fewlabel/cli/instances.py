"""Stage ``split-instances``: 2-channel prediction (mask prob, distance) → uint32 instance labels."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split-instances",
        help="h-maxima markers + watershed on a mask/distance prediction (chunk-safe)")
    p.add_argument("--sample", required=True)
    p.add_argument("--prediction", required=True,
                   help="CZYX OME-Zarr with 2 channels: 0 = mask probability, 1 = distance")
    p.add_argument("--output", required=True, help="output labels .ome.zarr (uint32)")
    p.add_argument("--params", type=json_arg, default=None,
                   help="JSON: mask_threshold (0.5, or 'auto'), h (0.1), min_size (0), "
                        "fill_holes (false), halo ([8, 32, 32])")
    p.add_argument("--model-dir", default=None,
                   help="segmenter model folder; mask_threshold 'auto' reads its thresholds.json")
    add_common(p)
    p.set_defaults(handler=run_split_instances)


class _Channel:
    """A ZYX view of one channel of a CZYX array (sliced lazily)."""

    def __init__(self, array, channel: int) -> None:  # noqa: ANN001 - zarr or numpy array
        self.array = array
        self.channel = channel
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, index):  # noqa: ANN001, ANN204
        return self.array[(self.channel, *index)]


def _tuned_threshold(params, model_dir: str | None, sample: str):  # noqa: ANN001, ANN202
    """``params`` with mask_threshold from the segmenter's thresholds.json, and that path."""
    import dataclasses
    import json
    from pathlib import Path

    from fewlabel.errors import ConfigError, ModelError

    if not model_dir:
        raise ConfigError("mask_threshold 'auto' needs the segmenter model folder.",
                          sample=sample, fix="pass --model-dir, or give a number.")
    path = Path(model_dir) / "thresholds.json"
    try:
        value = json.loads(path.read_text())["mask_threshold"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the tuned mask_threshold ({exc}).", sample=sample,
                         path=path, fix="retrain the segmenter, or set "
                                        "segmentation.instances.mask_threshold to a number.")
    tuned = dataclasses.replace(params, mask_threshold=float(value))
    tuned.validate(sample=sample)
    return tuned, str(path)


def run_split_instances(args: argparse.Namespace) -> None:
    from fewlabel.errors import InputDataError
    from fewlabel.instances import SplitParams, split_instances_chunked
    from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr

    params = SplitParams.from_dict(args.params, sample=args.sample)
    threshold_source = "config"
    if params.mask_threshold == "auto":
        params, threshold_source = _tuned_threshold(params, args.model_dir, args.sample)
    pred = open_ome_zarr(args.prediction, sample=args.sample)
    shape = pred.shape
    if len(shape) != 4 or shape[0] != 2:
        raise InputDataError(f"prediction has shape {shape}; expected CZYX with 2 channels "
                             "(mask probability, distance).", sample=args.sample,
                             path=args.prediction,
                             fix="predict with the mask+distance segmentation model.")
    chunks = tuple(pred.array.chunks[1:])
    with atomic_path(args.output) as tmp:
        out = create_ome_zarr(tmp, shape[1:], "uint32", chunks, pred.voxel_size,
                              name=f"{args.sample}:labels",
                              extra_attrs={"sample": args.sample, "kind": "labels",
                                           "source": str(args.prediction),
                                           "params": params.as_dict(),
                                           "mask_threshold_from": threshold_source})
        n = split_instances_chunked(
            _Channel(pred.array, 0), _Channel(pred.array, 1), out, halo=params.halo,
            mask_threshold=params.mask_threshold, h=params.h, min_size=params.min_size,
            fill_holes=params.fill_holes, workers=max(1, args.threads))
        import zarr

        group = zarr.open_group(str(tmp), mode="r+")
        attrs = dict(group.attrs["fewlabel"])
        attrs["n_objects"] = int(n)
        group.attrs["fewlabel"] = attrs
