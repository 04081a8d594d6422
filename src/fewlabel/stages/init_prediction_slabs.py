"""Stage ``init_prediction_slabs``: create the shared prediction array of one volume and plan
its slab jobs (Snakemake checkpoint).

Reads the model folder and the sample's image, creates the partial output array next to
``--output`` with its slab count (a number, or ``auto`` from the volume size and
``--slab-voxels``; :func:`fewlabel.inference.slabs.create_prediction_array`) and writes the
slab plan JSON (sample, n_slabs, run id, shape, chunks) that the workflow expands into
``predict_volume_slab`` jobs.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs


def _n_slabs(value: str) -> int | str:
    """argparse ``type=`` for ``--n-slabs``: an integer or ``auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--n-slabs must be an integer or 'auto', got {value!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init_prediction_slabs", help="create the shared prediction array for slab jobs"
    )
    add_predict_inputs(p)
    p.add_argument(
        "--n-slabs",
        type=_n_slabs,
        required=True,
        help="number of slab jobs, or 'auto' (from the volume size, --slab-voxels)",
    )
    p.add_argument(
        "--slab-voxels",
        type=int,
        default=None,
        help="voxels per slab job for --n-slabs auto (default 2e9)",
    )
    p.add_argument(
        "--plan",
        default=None,
        help="also write {'sample', 'n_slabs', ...} as JSON here (Snakemake checkpoint)",
    )
    add_common(p)
    p.set_defaults(handler=init_prediction_slabs)


def init_prediction_slabs(args: argparse.Namespace) -> None:
    from fewlabel.config import DetectionPredictConfig
    from fewlabel.device import configure_torch
    from fewlabel.inference.slabs import DEFAULT_SLAB_VOXELS, create_prediction_array
    from fewlabel.io import open_ome_zarr, pyramid_settings
    from fewlabel.runtime import write_json

    params = DetectionPredictConfig.model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    with pyramid_settings(like=args.image, workers=max(1, int(args.threads))):
        partial = create_prediction_array(
            args.model_dir,
            args.image,
            args.output,
            params=params,
            sample=args.sample,
            n_slabs=args.n_slabs,
            slab_voxels=args.slab_voxels or DEFAULT_SLAB_VOXELS,
            device=device,
        )
    if args.plan:
        array = open_ome_zarr(partial, sample=args.sample)
        attrs = array.attrs["fewlabel"]
        write_json(
            {
                "sample": args.sample,
                "n_slabs": int(attrs["n_slabs"]),
                "requested": args.n_slabs,
                "run_id": attrs["run_id"],
                "shape": list(array.shape),
                "chunks": list(array.array.chunks),
                "partial": str(partial),
            },
            args.plan,
        )
