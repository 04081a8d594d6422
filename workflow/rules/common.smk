# Helper and input functions shared by the rules (no lambdas in rules).
import json




def shell_prefix():
    """Make `python -m fewlabel` run this checkout's package: under `--sdm conda` with the
    rule env's python, else with the interpreter running Snakemake (no venv activation needed)."""
    try:
        methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    except AttributeError:
        methods = set()
    prefix = f"set -euo pipefail; export PYTHONPATH='{Path(workflow.basedir) / 'src'}'; "
    if not any("conda" in m for m in methods):
        prefix += f"export PATH='{Path(sys.executable).parent}':\"$PATH\"; "
    return prefix


shell.prefix(shell_prefix())


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9_.-]*",


def to_json(value):
    """A config value as compact JSON for a `--params` option."""
    return json.dumps(value, separators=(",", ":"))


def samples_where(split=None, task=None, has=None):
    """Sample ids filtered by split(s), task and a non-empty column."""
    rows = SAMPLES
    if split is not None:
        splits = [split] if isinstance(split, str) else list(split)
        rows = rows[rows["split"].isin(splits)]
    if task is not None:
        rows = rows[rows["task"].isin([task, "both"])]
    if has is not None:
        rows = rows[rows[has] != ""]
    return list(rows["sample"])


def sheet_path(column):
    """Input function: the sample sheet's path in `column` for this sample."""

    def get(wildcards):
        return SAMPLES.loc[wildcards.sample, column]

    get.__name__ = f"sheet_{column}"
    return get


def ingest_source(wildcards):
    """The sheet's file for an ingest kind: image, labels or target."""
    return SAMPLES.loc[wildcards.sample, wildcards.kind]


def channel_arg(wildcards):
    """The sheet's channel selection applies to the image only."""
    channel = SAMPLES.loc[wildcards.sample, "channel"]
    if wildcards.get("kind", "image") != "image" or channel == "":
        return ""
    return f"--channel '{channel}'"


def voxel_size_arg(wildcards):
    voxel = SAMPLES.loc[wildcards.sample, "voxel_size"]
    return f"--voxel-size '{to_json(voxel)}'" if voxel else ""


def section_params(section, drop=("enabled",)):
    """A config section as JSON for a stage's `--params`, without workflow-only switches."""
    return to_json({k: v for k, v in config[section].items() if k not in drop})


def final_outputs():
    """Everything `snakemake` builds by default."""
    outputs = expand(IMAGE, sample=SAMPLES.index)
    if config["roi"]["enabled"]:
        outputs += expand(ROI_JSON, sample=SAMPLES.index)
    outputs += expand(POINTS, sample=samples_where(has="points"))
    outputs += expand(LABELS, sample=samples_where(has="labels"))
    outputs += expand(TARGET, sample=samples_where(has="target"))
    outputs += [RUN_SUMMARY, PROVENANCE]
    return outputs
