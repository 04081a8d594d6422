"""Stage ``predict_volume_slab``: predict one slab of a volume into the shared array.

Reads the model folder and the sample's image and predicts slab ``--slab`` of ``--n-slabs``
(a contiguous run of output chunks) into the partial array that ``init_prediction_slabs``
created next to ``--output`` (:func:`fewlabel.inference.engine.predict_volume` with a slab),
marking the slab done; ``finalize_prediction`` publishes the array.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common, add_predict_inputs, add_roi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict_volume_slab", help="predict one slab into the array init_prediction_slabs made"
    )
    add_predict_inputs(p)
    p.add_argument("--slab", type=int, required=True, help="slab job index, 0-based")
    p.add_argument("--n-slabs", type=int, required=True, help="number of slab jobs")
    add_roi(p)
    add_common(p)
    p.set_defaults(handler=predict_volume_slab)


def predict_volume_slab(args: argparse.Namespace) -> None:
    from fewlabel.config import DetectionPredictConfig
    from fewlabel.device import configure_torch
    from fewlabel.errors import ConfigError
    from fewlabel.inference import engine

    if not 0 <= args.slab < args.n_slabs:
        raise ConfigError(
            f"--slab {args.slab} is not in 0..{args.n_slabs - 1}.",
            fix="pass --slab i --n-slabs n with 0 <= i < n.",
        )
    params = DetectionPredictConfig.model_validate(args.params)
    device = configure_torch(args.threads, args.seed)
    engine.predict_volume(
        args.model_dir,
        args.image,
        args.output,
        params=params,
        sample=args.sample,
        roi=args.roi,
        device=device,
        slab=args.slab,
        n_slabs=args.n_slabs,
    )
