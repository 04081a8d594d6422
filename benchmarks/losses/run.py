"""Segmentation loss comparison on synthetic nuclei (few training images), CPU-scaled.

Each loss is the mask term of the segmenter's mask + distance objective (``loss`` param of
``train_segmenter``; ``mask_distance`` = its default mask term). Same data, model, schedule,
ISL initialisation and post-processing as benchmarks/isl_finetune (imported from there).

    .venv/bin/python benchmarks/losses/run.py [--seeds 0,1,2] [--n 1] [--init isl]

Work dir: benchmarks/_work/isl_finetune (shared data / ISL model; runs tagged per loss).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "isl_finetune"))
import run as bench  # noqa: E402

LOSSES = [
    ("bce", {}),
    ("dice", {}),
    ("focal", {}),
    ("focal_tversky", {}),
    ("combined", {"preset": "balanced"}),
    ("combined_ft", {}),
    ("mask_distance", {}),
]


def mean_sd(table, column: str) -> str:
    """``mean ± sd`` of a result column over seeds (sd 0 for one seed)."""
    values = table[column]
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def summarize() -> str:
    """Markdown table: mean ± s.d. over seeds per loss, sorted by fg IoU."""
    t = pd.read_csv(HERE / "results.tsv", sep="\t")
    lines = [
        "| loss (mask term) | seeds | fg IoU | AP@0.5:0.95 | AP@0.5 | F1@0.5 | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    order = t.groupby("loss")["fg_iou"].mean().sort_values(ascending=False).index
    for loss in order:
        g = t[t["loss"] == loss]
        f = functools.partial(mean_sd, g)
        lines.append(
            f"| {loss} | {len(g)} | {f('fg_iou')} | {f('ap_mean')} | {f('ap_50')} | "
            f"{f('f1_50')} | {g['train_s'].mean():.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--init", default="isl")
    ap.add_argument("--losses", default=",".join(name for name, _ in LOSSES))
    ap.add_argument("--append", action="store_true", help="merge into existing results.tsv")
    ap.add_argument("--summarize", action="store_true", help="only print the markdown table")
    args = ap.parse_args()
    if args.summarize:
        print(summarize())
        return 0
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    isl_model, _ = bench.pretrain_synthetic()
    wanted = args.losses.split(",")
    rows = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        for name, params in LOSSES:
            if name not in wanted:
                continue
            # mask_distance with default params is exactly the isl_finetune run: reuse it
            tag = "" if name == "mask_distance" else f"loss-{name}_"
            rows.append(
                bench.train_eval(
                    args.n,
                    args.init,
                    seed,
                    isl_model,
                    loss=None if name == "mask_distance" else name,
                    loss_params=params,
                    tag=tag,
                )
            )
            print(rows[-1], flush=True)
            table = pd.DataFrame(rows)
            if (HERE / "results.tsv").exists() and args.append:
                old = pd.read_csv(HERE / "results.tsv", sep="\t")
                table = pd.concat([old, table]).drop_duplicates(
                    ["loss", "seed", "n_train", "init"], keep="last"
                )
            table.to_csv(HERE / "results.tsv", sep="\t", index=False)
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
