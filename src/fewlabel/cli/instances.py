"""Stage ``split_instances``: 2-channel prediction (mask prob, distance) → uint32 instance labels."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, json_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split_instances",
        help="h-maxima markers + watershed on a mask/distance prediction (chunk-safe)")
    p.add_argument("--sample", required=True)
    p.add_argument("--prediction", required=True,
                   help="CZYX OME-Zarr with 2 channels: 0 = mask probability, 1 = distance")
    p.add_argument("--output", required=True, help="output labels .ome.zarr (uint32)")
    p.add_argument("--params", type=json_arg, default={},
                   help="JSON segmentation.instances section: mask_threshold ('auto' or a "
                        "number), h ('auto' or a number), min_size (0), fill_holes (false), "
                        "halo ([8, 32, 32])")
    p.add_argument("--model-dir", default=None,
                   help="segmenter model folder; 'auto' values are read from its thresholds.json")
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


def _resolve_auto(params, model_dir: str | None, sample: str):  # noqa: ANN001, ANN202
    """``params`` with ``'auto'`` mask_threshold / h taken from the segmenter's thresholds.json.

    Returns the resolved params and, per key, where its value came from. A model without a
    tuned ``h`` (no whole validation image) falls back to 0.1 with a warning.
    """
    import logging

    from fewlabel.detection.log.baseline import read_threshold, read_thresholds
    from fewlabel.errors import ConfigError

    auto = [k for k in ("mask_threshold", "h") if getattr(params, k) == "auto"]
    sources = {k: "config" for k in ("mask_threshold", "h")}
    if not auto:
        return params, sources
    if not model_dir:
        raise ConfigError(f"{' and '.join(auto)} 'auto' needs the segmenter model folder.",
                          sample=sample, fix="pass --model-dir, or give numbers.")
    path = f"{model_dir}/thresholds.json"
    changes = {}
    if "mask_threshold" in auto:
        changes["mask_threshold"] = read_threshold(model_dir, "mask_threshold")
        sources["mask_threshold"] = path
    if "h" in auto:
        if read_thresholds(model_dir).get("h") is None:
            logging.getLogger(__name__).warning(
                "sample %s: %s has no tuned h (no whole validation image); using h = 0.1",
                sample, path)
            changes["h"], sources["h"] = 0.1, "default (no tuned value)"
        else:
            changes["h"], sources["h"] = read_threshold(model_dir, "h"), path
    resolved = type(params).model_validate({**params.model_dump(), **changes})
    return resolved, sources


def run_split_instances(args: argparse.Namespace) -> None:
    from fewlabel.errors import InputDataError
    from fewlabel.config import InstancesConfig
    from fewlabel.segmentation.instances import split_instances_chunked
    from fewlabel.io import atomic_path, create_ome_zarr, open_ome_zarr

    params = InstancesConfig.model_validate(args.params)
    params, sources = _resolve_auto(params, args.model_dir, args.sample)
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
                                           "params": params.model_dump(mode="json"),
                                           "mask_threshold_from": sources["mask_threshold"],
                                           "h_from": sources["h"]})
        n = split_instances_chunked(
            _Channel(pred.array, 0), _Channel(pred.array, 1), out, halo=params.halo,
            mask_threshold=params.mask_threshold, h=params.h, min_size=params.min_size,
            fill_holes=params.fill_holes, workers=max(1, args.threads))
        import zarr

        group = zarr.open_group(str(tmp), mode="r+")
        attrs = dict(group.attrs["fewlabel"])
        attrs["n_objects"] = int(n)
        group.attrs["fewlabel"] = attrs
