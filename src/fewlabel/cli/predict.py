"""Stages ``predict_volume`` (tiled inference with a model folder), ``init_prediction_slabs`` and
``finalize_prediction`` (slab fan-out: create the shared array once, publish it when all slabs
are done)."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_params


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", required=True)
    p.add_argument("--model-dir", required=True, help="trained model folder")
    p.add_argument("--image", required=True, help="input .ome.zarr (ZYX or CZYX)")
    p.add_argument("--output", required=True, help="output .ome.zarr (float32)")
    add_predict_params(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict_volume",
                              help="tiled, Gaussian-blended inference -> OME-Zarr (one job)")
    _add_inputs(p)
    add_common(p)
    p.set_defaults(handler=run_predict, slab=None, n_slabs=1)

    s = subparsers.add_parser("predict_volume_slab",
                              help="predict one slab into the array init_prediction_slabs made")
    _add_inputs(s)
    s.add_argument("--slab", type=int, required=True, help="slab job index, 0-based")
    s.add_argument("--n-slabs", type=int, required=True, help="number of slab jobs")
    add_common(s)
    s.set_defaults(handler=run_predict)

    q = subparsers.add_parser("init_prediction_slabs",
                              help="create the shared prediction array for slab jobs")
    _add_inputs(q)
    q.add_argument("--n-slabs", type=_n_slabs, required=True,
                   help="number of slab jobs, or 'auto' (from the volume size, --slab-voxels)")
    q.add_argument("--slab-voxels", type=int, default=None,
                   help="voxels per slab job for --n-slabs auto (default 2e9)")
    q.add_argument("--plan", default=None,
                   help="also write {'sample', 'n_slabs', ...} as JSON here (Snakemake checkpoint)")
    add_common(q)
    q.set_defaults(handler=run_predict_init)

    r = subparsers.add_parser("finalize_prediction",
                              help="publish the prediction once every slab job has finished")
    r.add_argument("--sample", required=True)
    r.add_argument("--output", required=True)
    add_common(r)
    r.set_defaults(handler=run_predict_finalize)


def _n_slabs(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-slabs must be an integer or 'auto', got "
                                         f"{value!r}") from None


def run_predict(args: argparse.Namespace) -> None:
    from fewlabel.config import PredictConfig
    from fewlabel.errors import ConfigError
    from fewlabel.inference.engine import predict_volume
    from fewlabel.device import configure_torch

    if args.slab is not None and not 0 <= args.slab < args.n_slabs:
        raise ConfigError(f"--slab {args.slab} is not in 0..{args.n_slabs - 1}.",
                          fix="pass --slab i --n-slabs n with 0 <= i < n.")
    params = PredictConfig.model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    predict_volume(args.model_dir, args.image, args.output, params=params, sample=args.sample,
                   device=device, slab=args.slab, n_slabs=args.n_slabs)


def run_predict_init(args: argparse.Namespace) -> None:
    from fewlabel.config import PredictConfig
    from fewlabel.inference.slabs import create_prediction_array
    from fewlabel.device import configure_torch

    from fewlabel.io import open_ome_zarr
    from fewlabel.inference.slabs import DEFAULT_SLAB_VOXELS
    from fewlabel.runtime import write_json

    params = PredictConfig.model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    partial = create_prediction_array(
        args.model_dir, args.image, args.output, params=params, sample=args.sample,
        n_slabs=args.n_slabs, slab_voxels=args.slab_voxels or DEFAULT_SLAB_VOXELS,
        device=device)
    if args.plan:
        array = open_ome_zarr(partial, sample=args.sample)
        attrs = array.attrs["fewlabel"]
        write_json({"sample": args.sample, "n_slabs": int(attrs["n_slabs"]),
                    "requested": args.n_slabs, "run_id": attrs["run_id"],
                    "shape": list(array.shape), "chunks": list(array.array.chunks),
                    "partial": str(partial)}, args.plan)


def run_predict_finalize(args: argparse.Namespace) -> None:
    from fewlabel.inference.slabs import finalize_prediction

    finalize_prediction(args.output, sample=args.sample)
