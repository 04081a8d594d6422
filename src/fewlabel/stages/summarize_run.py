"""Stage ``summarize_run``: one table row per sample and a provenance record for the run.

Reads the sample sheet, the config snapshot and every sample's ingest summary (and ROI
summary when ROI estimation ran; :meth:`fewlabel.plan.Plan.summary_inputs`), writes the run
summary TSV (:func:`fewlabel.summary.summary_table`) and the provenance JSON: versions, git
commit, config and the checksums of the sheet's input files
(:func:`fewlabel.runtime.provenance`). Under ``--sdm conda`` this rule runs in the io
environment, so its ``versions`` are that environment's (torch, snakemake: "not in this rule's
environment"); ``models`` adds, per trained model, the versions recorded by its training job.
"""

from __future__ import annotations

import argparse

from fewlabel.cli import add_common


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summarize_run", help="per-sample run summary + provenance JSON")
    p.add_argument("--sample-sheet", required=True)
    p.add_argument(
        "--config",
        required=True,
        help="the run's config snapshot (results/config.yaml, rule record_config)",
    )
    p.add_argument("--output", required=True, help="summary TSV")
    p.add_argument("--provenance", required=True, help="provenance JSON")
    add_common(p)
    p.set_defaults(handler=summarize_run)


def summarize_run(args: argparse.Namespace) -> None:
    import json
    import logging
    from pathlib import Path

    from fewlabel.config import PATH_COLUMNS
    from fewlabel.io import atomic_path
    from fewlabel.plan import Plan
    from fewlabel.runtime import provenance, write_json
    from fewlabel.summary import sheet_input_files, summary_table

    plan = Plan.from_files(args.sample_sheet, args.config)
    files = plan.summary_inputs()
    images = [json.loads(Path(p).read_text()) for p in files["images"]]
    # ROI summaries live in results/roi/<sample>/
    rois = {Path(p).parent.name: json.loads(Path(p).read_text()) for p in files["rois"]}
    splits = {str(k): str(v) for k, v in plan.sheet["split"].items()}
    table = summary_table(images, rois, splits)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    inputs = sheet_input_files(plan.sheet, PATH_COLUMNS)
    # versions: this rule's environment (io); models: the environments that trained them
    record = provenance(dict(plan.config), inputs, models=plan.trained_models())
    write_json(record, args.provenance)
    logging.getLogger(__name__).info("run summary:\n%s", table.to_string(index=False))
