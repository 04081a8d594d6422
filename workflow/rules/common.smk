# Helper and input functions shared by the rules (no lambdas in rules). Which samples each
# stage uses is decided by fewlabel.plan (PLAN, built in paths.smk); these are thin wrappers.
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
    slab="[0-9]+",
    n_slabs="[0-9]+",


def to_json(value):
    """A config section as compact JSON for a stage's `--params` (always passed with `:q`)."""
    return json.dumps(value, separators=(",", ":"))


def sheet_path(column):
    """Input function: the sample sheet's path in `column` for this sample."""

    def get(wildcards):
        return SAMPLES.loc[wildcards.sample, column]

    get.__name__ = f"sheet_{column}"
    return get


def sheet_value(column):
    """Params function: the sheet's cell in `column` for this sample ("" = empty; `:q`)."""

    def get(wildcards):
        return SAMPLES.loc[wildcards.sample, column]

    get.__name__ = f"sheet_value_{column}"
    return get


def roi_mask_value(wildcards):
    """The sample's ROI mask when roi.enabled (density targets use it), else ""."""
    return ROI_MASK.format(sample=wildcards.sample) if config["roi"]["enabled"] else ""


def density_target_inputs(wildcards):
    """Inputs of make_density_targets: image, points, the ROI mask (roi.enabled) and an
    annotated-region file from the sheet (a path, not a keyword)."""
    inputs = {"image": IMAGE.format(sample=wildcards.sample)}
    inputs["points"] = POINTS.format(sample=wildcards.sample)
    if config["roi"]["enabled"]:
        inputs["roi"] = ROI_MASK.format(sample=wildcards.sample)
    inputs["region"] = PLAN.region_files([wildcards.sample])
    return inputs


def evaluate_detection_inputs(pred):
    """Input function of evaluate_detection for the detections at template `pred`: ground
    truth, detections, the ingested volume and the sheet's annotated-region file."""

    def inputs(wildcards):
        return {
            "gt": POINTS.format(sample=wildcards.sample),
            "pred": pred.format(sample=wildcards.sample),
            "volume": IMAGE.format(sample=wildcards.sample),
            "region": PLAN.region_files([wildcards.sample]),
        }

    return inputs


def run_end_message():
    """After a successful run: where the report is, and the warning of the learned detector
    vs LoG comparison when the LoG scored higher (fewlabel.detection.log.compare)."""
    if Path(REPORT).exists():
        print(f"fewlabel: report {REPORT}", file=sys.stderr)
    if PLAN.compare_log() and Path(LOG_BASELINE).exists():
        from fewlabel.detection.log.compare import compare

        result = compare(PLAN.detector_dir(), LOG_BASELINE, DETECTION_SUMMARY, LOG_BASELINE_SUMMARY)
        if result is not None and result.warn:
            print(f"fewlabel: WARNING: {result.verdict}", file=sys.stderr)


def ingest_source(wildcards):
    """The sheet's file for an ingest kind: image, labels or target."""
    return SAMPLES.loc[wildcards.sample, wildcards.kind]


def ingest_reference(wildcards):
    """Labels/target are checked against the sample's ingested image ("" for the image)."""
    return "" if wildcards.kind == "image" else IMAGE.format(sample=wildcards.sample)


def ingest_inputs(wildcards):
    """Named inputs of ingest_volume (with `unpack`): the sheet's file, plus the ingested
    image as `reference` for labels/target, so a shape mismatch fails at ingest."""
    inputs = {"source": ingest_source(wildcards)}
    reference = ingest_reference(wildcards)
    if reference:
        inputs["reference"] = reference
    return inputs


def channel_value(wildcards):
    """The sheet's channel selection (image only; "" = none). Reaches the shell only through
    `:q` quoting; the sheet schema also restricts it to an index or a safe name."""
    if wildcards.get("kind", "image") != "image":
        return ""
    return SAMPLES.loc[wildcards.sample, "channel"]


def axes_value(wildcards):
    """The sheet's axis order of the image file ("" = from the file's metadata; image only,
    like the channel). Reaches the shell only through `:q`; the sheet allows only TCZYX."""
    if wildcards.get("kind", "image") != "image":
        return ""
    return SAMPLES.loc[wildcards.sample, "axes"]


def voxel_size_value(wildcards):
    """The sheet's voxel size as JSON ("" = read from the file), for `:q` quoting."""
    voxel = SAMPLES.loc[wildcards.sample, "voxel_size"]
    return to_json(voxel) if voxel else ""


def demo_outdir(wildcards, output):
    """The demo folder, derived from the manifest output (reaches the shell via `:q`)."""
    return str(Path(output.manifest).parent)


def object_diameter_value():
    """detection.object_diameter_um for `--object-diameter-um={x:q}` ("" = not set; the stages
    derive sigma, min_distance and crop left at their defaults from it)."""
    diameter = config["detection"]["object_diameter_um"]
    return "" if diameter is None else repr(float(diameter))


def train_detector_minutes(wildcards, attempt):
    """SLURM time limit of train_detector: 720 min per ensemble member, x attempt."""
    from fewlabel.slurm import detection_minutes

    return detection_minutes(config["detection"], "train_detector", attempt)


def predict_volume_minutes(wildcards, attempt):
    """SLURM time limit of a detection prediction job (a volume or a slab): 240 min per
    network pass (ensemble members x mirror flips), x attempt."""
    from fewlabel.slurm import detection_minutes

    return detection_minutes(config["detection"], "predict_volume", attempt)


def section_params(section, drop=("enabled",)):
    """A config section as JSON for a stage's `--params`, without workflow-only switches."""
    return to_json({k: v for k, v in config[section].items() if k not in drop})


def slab_markers(wildcards):
    """Completion markers of every slab job of one volume's prediction; the slab count comes
    from the plan written by checkpoint init_prediction_slabs (`detection.slabs`, or for
    'auto' the volume size / `detection.slab_voxels`)."""
    plan = checkpoints.init_prediction_slabs.get(sample=wildcards.sample).output.plan
    with open(plan) as handle:
        n_slabs = int(json.load(handle)["n_slabs"])
    return expand(
        DETECTION_SLAB_MARKER, sample=wildcards.sample, slab=range(n_slabs), n_slabs=n_slabs
    )


def segmenter_training_inputs(wildcards):
    """Images and labels of the segmenter's train/val samples, the tile check, plus the ISL
    model if used."""
    samples = PLAN.segmentation_fit_samples()
    inputs = {"images": expand(IMAGE, sample=samples), "labels": expand(LABELS, sample=samples)}
    # volumes to predict hold a tile: checked first (ancient: never retrains)
    inputs["tiles"] = ancient(TILE_CHECK)
    if PLAN.use_isl():
        inputs["isl"] = ISL_MODEL
    return inputs


def segmenter_init_from():
    return ISL_MODEL if PLAN.use_isl() else ""


def segmentation_evaluation_inputs(wildcards):
    """Ground truth and prediction; the ISL prediction and its target where scored."""
    inputs = {"gt": LABELS, "pred": INSTANCES}
    if PLAN.has_fluorescence_eval(wildcards.sample):
        inputs["pred_fluo"] = FLUORESCENCE
        inputs["target_fluo"] = TARGET
    return inputs


def pred_fluo_value(wildcards, input):
    """The ISL prediction scored by PCC ("" when this sample has no fluorescence target)."""
    return input.get("pred_fluo", "")


def target_fluo_value(wildcards, input):
    """The fluorescence target of that PCC ("" when there is none)."""
    return input.get("target_fluo", "")


def summary_inputs(wildcards):
    """Ingest summaries (and ROI JSONs) of every sample, read by summarize_run."""
    return PLAN.summary_inputs()


def report_files(wildcards):
    """Every file the report reads, so the report reruns when any of them changes."""
    return PLAN.report_files()


def demo_manifest():
    """The demo manifest when the demo writes the inputs ([] otherwise): generated inputs must
    exist before check_predict_tiles reads their shapes."""
    if not config["demo"]["enabled"]:
        return []
    return [f"{config['demo']['output_dir']}/manifest.json"]


def check_predict_tiles(output, log):
    """Rule check_predict_tiles, in Snakemake's own Python on the validated config and sheet
    (PLAN): the library call of stage fewlabel.stages.check_predict_tiles."""
    from fewlabel.errors import FewlabelError
    from fewlabel.runtime import write_json

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    try:
        record = PLAN.check_predict_tiles()
    except FewlabelError as error:
        Path(log).write_text(f"fewlabel check_predict_tiles: error: {error}\n")
        raise
    write_json(record, output)
    Path(log).write_text(f"{len(record)} volume(s) to predict hold their prediction tiles\n")


def config_digest():
    """sha256 of the validated config (defaults filled) as canonical JSON: rule record_config's
    params, so that any config change reruns it while the rerun reason stays one line."""
    import hashlib

    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def record_config(settings, output, log):
    """Write the config snapshot. Rule record_config runs in Snakemake's own Python, on the
    config the Snakefile validated: the library call of stage fewlabel.stages.record_config."""
    from fewlabel.runtime import write_config_snapshot

    write_config_snapshot(settings, output, log_file=log)


include: "cluster.smk"


def prediction_roi(wildcards):
    """Input function: the ROI mask gating this sample's detection prediction (none: [])."""
    roi = PLAN.prediction_roi(wildcards.sample)
    return [roi] if roi else []


def prediction_roi_param(wildcards):
    """The same ROI mask as a `--roi` value ('' = no gating)."""
    return PLAN.prediction_roi(wildcards.sample)
