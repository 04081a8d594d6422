"""Stage ``summarize_run``: one table row per sample and a provenance record for the run."""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summarize_run", help="per-sample run summary + provenance JSON")
    p.add_argument("--sample-sheet", required=True)
    p.add_argument("--config", required=True,
                   help="the run's config snapshot (results/config.yaml, rule record_config)")
    p.add_argument("--output", required=True, help="summary TSV")
    p.add_argument("--provenance", required=True, help="provenance JSON")
    add_common(p)
    p.set_defaults(handler=run_summarize)


def run_summarize(args: argparse.Namespace) -> None:
    import json
    import logging
    from pathlib import Path

    import pandas as pd

    from fewlabel.io import atomic_path
    from fewlabel.plan import Plan
    from fewlabel.runtime import provenance, write_json

    log = logging.getLogger("fewlabel.summary")
    plan = Plan.from_files(args.sample_sheet, args.config)
    sheet = plan.sheet
    files = plan.summary_inputs()
    rows = []
    rois = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in files["rois"]}
    for path in files["images"]:
        info = json.loads(Path(path).read_text())
        sample = info["sample"]
        roi = rois.get(sample, {})
        rows.append({
            "sample": sample,
            "split": sheet.loc[sample, "split"] if sample in sheet.index else "",
            "shape_zyx": "x".join(str(s) for s in info["shape"]),
            "voxel_size_um": ",".join(f"{v:g}" for v in info["voxel_size"]),
            "dtype": info["dtype"],
            "min": info["min"],
            "max": info["max"],
            "roi_fraction": roi.get("roi_fraction", float("nan")),
            "min_batch_size": roi.get("min_batch_size", float("nan")),
            "roi_warnings": "; ".join(roi.get("warnings", [])),
        })
    table = pd.DataFrame(rows)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    inputs = [p for p in sheet[["image", "points", "labels", "target"]].to_numpy().ravel() if p]
    write_json(provenance(dict(plan.config), inputs), args.provenance)
    log.info("run summary:\n%s", table.to_string(index=False))
