# Helper and input functions shared by the rules (no lambdas in rules).
import json
import shlex




def shell_prefix():
    """Make `python -m fewlabel` run this checkout's package: under `--sdm conda` with the
    rule env's python, else with the interpreter running Snakemake (no venv activation needed)."""
    try:
        methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    except AttributeError:
        methods = set()
    src = shlex.quote(str(Path(workflow.basedir) / "src"))
    prefix = f"set -euo pipefail; export PYTHONPATH={src}; "
    if not any("conda" in m for m in methods):
        prefix += f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; "
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


def channel_value(wildcards):
    """The sheet's channel selection (image only; "" = none). Reaches the shell only through
    `:q` quoting; the sheet schema also restricts it to an index or a safe name."""
    if wildcards.get("kind", "image") != "image":
        return ""
    return SAMPLES.loc[wildcards.sample, "channel"]


def voxel_size_value(wildcards):
    """The sheet's voxel size as JSON ("" = read from the file), for `:q` quoting."""
    voxel = SAMPLES.loc[wildcards.sample, "voxel_size"]
    return to_json(voxel) if voxel else ""


def demo_outdir(wildcards, output):
    """The demo folder, derived from the manifest output (reaches the shell via `:q`)."""
    return str(Path(output.manifest).parent)


def section_params(section, drop=("enabled",)):
    """A config section as JSON for a stage's `--params`, without workflow-only switches."""
    return to_json({k: v for k, v in config[section].items() if k not in drop})


# ----------------------------------------------------------------------------- detection
def detection_fit_samples():
    """Detection samples used for fitting (train + val splits with points)."""
    return samples_where(split=["train", "val"], task="detect", has="points")


def detection_predict_samples():
    """Detection samples the trained detector is applied to (test + predict splits)."""
    return samples_where(split=["test", "predict"], task="detect")


def detection_eval_samples():
    """Detection samples with ground truth to score (test split with points)."""
    return samples_where(split="test", task="detect", has="points")


def detector_items_json(split):
    """JSON list of training/validation items for `train-detector`."""
    items = [
        {
            "sample": sample,
            "image": IMAGE.format(sample=sample),
            "target": DENSITY_TARGET.format(sample=sample),
            "weight": DENSITY_WEIGHT.format(sample=sample),
            "points": POINTS.format(sample=sample),
        }
        for sample in samples_where(split=split, task="detect", has="points")
    ]
    return to_json(items)


def log_items_json():
    """JSON list of fitting items for the LoG baseline's threshold tuning."""
    return to_json(
        [
            {"sample": s, "image": IMAGE.format(sample=s), "points": POINTS.format(sample=s)}
            for s in detection_fit_samples()
        ]
    )


def slab_markers(wildcards):
    """Completion markers of every slab job of one volume's prediction; the slab count comes
    from the plan written by checkpoint predict_volume_init (`detection.slabs`, or for 'auto'
    the volume size / `detection.slab_voxels`)."""
    plan = checkpoints.predict_volume_init.get(sample=wildcards.sample).output.plan
    with open(plan) as handle:
        n_slabs = int(json.load(handle)["n_slabs"])
    return expand(
        DETECTION_SLAB_MARKER, sample=wildcards.sample, slab=range(n_slabs), n_slabs=n_slabs
    )


# ----------------------------------------------------------------------------- segmentation
def isl_samples(splits):
    """Segmentation samples with a paired fluorescence target in the given splits."""
    return samples_where(split=splits, task="segment", has="target")


def isl_items_json(split):
    """JSON list of {sample, image, target} items for `pretrain-isl`."""
    return to_json(
        [
            {"sample": s, "image": IMAGE.format(sample=s), "target": TARGET.format(sample=s)}
            for s in isl_samples([split])
        ]
    )


def segmentation_fit_samples(split=("train", "val")):
    """Segmentation samples with instance labels used for fine-tuning."""
    return samples_where(split=list(split), task="segment", has="labels")


def segmentation_predict_samples():
    return samples_where(split=["test", "predict"], task="segment")


def segmentation_eval_samples():
    return samples_where(split="test", task="segment", has="labels")


def use_isl():
    """Pretrain with in silico labelling when enabled and paired training data exist."""
    return config["segmentation"]["pretrain_isl"] and bool(isl_samples(["train"]))


def segmenter_items_json(split):
    """JSON list of {sample, image, labels} items for `train-segmenter`."""
    return to_json(
        [
            {"sample": s, "image": IMAGE.format(sample=s), "labels": LABELS.format(sample=s)}
            for s in segmentation_fit_samples([split])
        ]
    )


def segmenter_init_from():
    return ISL_MODEL if use_isl() else ""


def segmenter_training_inputs(wildcards):
    samples = segmentation_fit_samples()
    inputs = {
        "images": expand(IMAGE, sample=samples),
        "labels": expand(LABELS, sample=samples),
    }
    if use_isl():
        inputs["isl"] = ISL_MODEL
    return inputs


def segmentation_evaluation_inputs(wildcards):
    inputs = {"gt": LABELS, "pred": INSTANCES}
    if use_isl() and SAMPLES.loc[wildcards.sample, "target"]:
        inputs["pred_fluo"] = FLUORESCENCE
        inputs["target_fluo"] = TARGET
    return inputs


def fluorescence_args(wildcards, input):
    """PCC of the ISL prediction when this sample has a fluorescence target."""
    if "pred_fluo" not in input.keys():
        return ""
    return (f"--pred-fluo {shlex.quote(input.pred_fluo)} "
            f"--target-fluo {shlex.quote(input.target_fluo)}")


def segmentation_enabled():
    return config["segmentation"]["enabled"] and bool(segmentation_fit_samples(["train"]))


# ----------------------------------------------------------------------------- report
def _detection_report_samples():
    if not (config["detection"]["enabled"] and detection_fit_samples()):
        return []
    evaluated = set(detection_eval_samples())
    return [
        {
            "sample": s,
            "image": IMAGE.format(sample=s),
            "gt": POINTS.format(sample=s) if s in evaluated else None,
            "pred": DETECTIONS.format(sample=s),
            "matches": DETECTION_MATCHES.format(sample=s) if s in evaluated else None,
        }
        for s in detection_predict_samples()
    ]


def report_inputs():
    """What the report shows (dict of ReportInputs fields; paths relative to the workdir)."""
    inputs = {
        "title": config["report"]["title"],
        "config": config,
        "sample_sheet": config["samples"],
        "summary_tsv": RUN_SUMMARY,
        "provenance_json": PROVENANCE,
        "images": {s: IMAGE.format(sample=s) for s in SAMPLES.index},
    }
    if config["roi"]["enabled"]:
        inputs["roi_jsons"] = expand(ROI_JSON, sample=SAMPLES.index)
        inputs["roi_masks"] = {s: ROI_MASK.format(sample=s) for s in SAMPLES.index}
    detection = _detection_report_samples()
    if detection:
        inputs["detection_samples"] = detection
        inputs["detection_model_dir"] = DETECTOR
        if detection_eval_samples():
            inputs["detection_summary_tsv"] = DETECTION_SUMMARY
    if segmentation_enabled():
        inputs["segmenter_model_dir"] = SEGMENTER
        if use_isl():
            inputs["isl_model_dir"] = ISL_MODEL
        evaluated = set(segmentation_eval_samples())
        if evaluated:
            inputs["segmentation_summary_tsv"] = SEGMENTATION_SUMMARY
        inputs["segmentation_samples"] = [
            {
                "sample": s,
                "image": IMAGE.format(sample=s),
                "gt_labels": LABELS.format(sample=s) if s in evaluated else None,
                "pred_labels": INSTANCES.format(sample=s),
                "target": TARGET.format(sample=s) if SAMPLES.loc[s, "target"] else None,
                "pred_fluorescence": (
                    FLUORESCENCE.format(sample=s)
                    if use_isl() and SAMPLES.loc[s, "target"]
                    else None
                ),
                "metrics_tsv": SEGMENTATION_METRICS.format(sample=s) if s in evaluated else None,
            }
            for s in segmentation_predict_samples()
        ]
    return inputs


def report_inputs_json():
    return to_json(report_inputs())


def report_input_files():
    """Every file the report reads, so the report reruns when any of them changes."""
    files = []

    def collect(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in ("config", "title", "sample"):
                    collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str):
            files.append(value)

    collect(report_inputs())
    return sorted(set(files))


def final_outputs():
    """Everything `snakemake` builds by default."""
    outputs = expand(IMAGE, sample=SAMPLES.index)
    if config["roi"]["enabled"]:
        outputs += expand(ROI_JSON, sample=SAMPLES.index)
    outputs += expand(POINTS, sample=samples_where(has="points"))
    outputs += expand(LABELS, sample=samples_where(has="labels"))
    outputs += expand(TARGET, sample=samples_where(has="target"))
    outputs += [RUN_SUMMARY, PROVENANCE]
    if config["detection"]["enabled"] and detection_fit_samples():
        outputs += expand(DETECTIONS, sample=detection_predict_samples())
        if detection_eval_samples():
            outputs.append(DETECTION_SUMMARY)
    if segmentation_enabled():
        outputs += expand(INSTANCES, sample=segmentation_predict_samples())
        if segmentation_eval_samples():
            outputs.append(SEGMENTATION_SUMMARY)
    outputs.append(REPORT)
    return outputs
