"""fewlabel: few-annotation detection and instance segmentation of 3D microscopy volumes.

Run `snakemake --cores N` (workstation) or `snakemake --workflow-profile profiles/slurm` (cluster; see README "Cluster").
See README.md; configuration in config/config.yaml, samples in config/samples.tsv.
"""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from fewlabel.config import load_samples, validate_config  # noqa: E402  (torch-free)
from fewlabel.errors import ConfigError  # noqa: E402


# The working directory's config/config.yaml, else the workflow's own: `snakemake -d OTHER`
# works without --configfile (the shipped config and sample sheet, data written under OTHER).
DEFAULT_CONFIG = "config/config.yaml"
WORKFLOW_CONFIG = not Path(DEFAULT_CONFIG).exists() and not workflow.overwrite_configfiles


configfile: str(Path(workflow.basedir) / DEFAULT_CONFIG) if WORKFLOW_CONFIG else DEFAULT_CONFIG


if WORKFLOW_CONFIG:
    sheet = Path(str(config.get("samples", "config/samples.tsv")))
    if not sheet.is_absolute() and not sheet.exists():
        config["samples"] = str(Path(workflow.basedir) / sheet)
    print(
        f"fewlabel: no {DEFAULT_CONFIG} in {Path.cwd()}: using {workflow.basedir}/"
        f"{DEFAULT_CONFIG} (sample sheet {config.get('samples')})",
        file=sys.stderr,
    )


try:
    # FewlabelConfig.model_validate(config); the full configuration (defaults included) is
    # written back into `config`, so every rule sees whole sections.
    validate_config(config)
    SAMPLES = load_samples(
        config["samples"],
        generated_dirs=[config["demo"]["output_dir"]] if config["demo"]["enabled"] else [],
        segmentation_method=config["segmentation"]["method"],
    )
except ConfigError as error:
    raise WorkflowError(f"fewlabel configuration error: {error}") from None


resource_scopes:
    gpu="local",


include: "workflow/rules/paths.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/roi.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/pu.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/bfs.smk"
include: "workflow/rules/report.smk"


rule all:
    """Everything the configuration asks for (see fewlabel.plan.Plan.final_outputs)."""
    input:
        PLAN.final_outputs(),
    default_target: True
