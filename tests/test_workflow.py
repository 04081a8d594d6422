"""Real Snakemake runs on tiny data: the default chain, lint, planning, env files, bad config."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fewlabel.io import open_ome_zarr

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.workflow

# Small enough for 2 CPU cores; keys not given take the shipped defaults.
TINY_CONFIG = {
    "samples": "config/samples.tsv",
    "seed": 0,
    "demo": {
        "enabled": True,
        "output_dir": "demo_data",
        "params": {"spots_shape": [8, 64, 64], "nuclei_shape": [12, 48, 48], "nuclei_count": 5},
    },
    # pyramids on tiny volumes: one level below full resolution for each sample; given to
    # ingest only, followed by every later output
    "ingest": {"chunks": [8, 32, 32], "pyramid_min_voxels": 0, "pyramid_max_side": 32},
    "detection": {
        # enough steps to learn the tiny spots (validation F1 1.0 in ~10 s on one core)
        "train": {
            "epochs": 8,
            "steps_per_epoch": 6,
            "batch_size": 2,
            "crop": [8, 32, 32],
            "model": {"base_channels": 8, "depth": 2},
        },
        "predict": {"tile": [8, 32, 32], "overlap": [2, 8, 8]},
        # slab jobs sized by the volume: 8 x 64 x 64 voxels / 16384 -> 2 jobs of 2 chunks each
        "slabs": "auto",
        "slab_voxels": 16384,
    },
    "segmentation": {
        "isl": {"epochs": 2, "steps_per_epoch": 3, "crop": [8, 32, 32]},
        # enough steps for a mask (validation Dice ~0.7 in ~10 s on one core)
        "train": {"epochs": 12, "steps_per_epoch": 8, "crop": [8, 32, 32]},
        "predict": {"tile": [8, 32, 32], "overlap": [2, 8, 8]},
        "instances": {"halo": [6, 16, 16]},
    },
}


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 1200
) -> subprocess.CompletedProcess:
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-6000:]}"
        )
    return result


def make_workdir(path: Path, config: dict | None = None) -> Path:
    (path / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "samples.tsv", path / "config" / "samples.tsv")
    (path / "config.yaml").write_text(yaml.safe_dump(config or TINY_CONFIG))
    return path


def test_default_chain_outputs(finished_run):
    results = finished_run / "results"
    sheet = pd.read_csv(finished_run / "config" / "samples.tsv", sep="\t")
    for sample in sheet["sample"]:
        image = open_ome_zarr(results / "ingest" / sample / "image.ome.zarr")
        assert image.array.ndim == 3 and image.voxel_size[0] > 0
        roi = json.loads((results / "roi" / sample / "roi.json").read_text())
        assert 0 < roi["roi_fraction"] < 1
        mask = open_ome_zarr(results / "roi" / sample / "roi.ome.zarr")
        assert mask.shape == image.shape
    summary = pd.read_csv(results / "summary.tsv", sep="\t")
    assert set(summary["sample"]) == set(sheet["sample"])
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["versions"]["torch"].startswith("2.13")
    # each model's own training job's versions (under --sdm conda: the torch env's)
    assert set(provenance["models"]) == {"detector", "isl", "segmenter"}
    for role, stage in (("detector", "train_detector"), ("segmenter", "train_segmenter")):
        assert provenance["models"][role]["stage"] == stage
        assert provenance["models"][role]["versions"]["torch"].startswith("2.13")
    assert provenance["inputs"], "input checksums recorded"
    assert (finished_run / "logs" / "segment_roi" / "spots_test.log").stat().st_size > 0


def test_every_output_is_ngff_with_pyramids_and_labels_are_labels(finished_run):
    """Every OME-Zarr of the run validates as NGFF 0.5 and has the pyramid level the config
    asked for (ingest.pyramid_*: 0 voxels, largest side 32); label images carry image-label
    pointing at the sample's image."""
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    results = finished_run / "results"
    stores = sorted(results.rglob("*.ome.zarr"))
    kinds = {p.relative_to(results).parts[0] for p in stores}
    assert {"ingest", "roi", "labels", "predict", "instances"} <= kinds, kinds
    for path in stores:
        group = zarr.open_group(str(path), mode="r")
        ome = group.attrs["ome"]
        (ImageLabel if "image-label" in ome else Image).from_zarr(group)
        datasets = ome["multiscales"][0]["datasets"]
        assert [d["path"] for d in datasets] == ["0", "1"], path
        full, half = group["0"].shape[-2:], group["1"].shape[-2:]
        assert tuple(-(-n // 2) for n in full) == half, path
        assert max(group["1"].shape[-3:]) <= 32 < max(group["0"].shape[-3:]), path
    for sample, labels in (
        ("nuclei_test", results / "instances" / "nuclei_test" / "labels.ome.zarr"),
        ("nuclei_train", results / "ingest" / "nuclei_train" / "labels.ome.zarr"),
    ):
        label = zarr.open_group(str(labels), mode="r").attrs["ome"]["image-label"]
        image = results / "ingest" / sample / "image.ome.zarr"
        assert (labels / label["source"]["image"]).resolve() == image.resolve()


def test_default_chain_detection_and_segmentation(finished_run):
    results = finished_run / "results"
    assert (results / "models" / "detector" / "thresholds.json").exists()
    # the prediction ran as 2 real slab jobs writing one array, then finalized
    plan = json.loads((results / "predict" / "spots_test" / "slab_plan.json").read_text())
    assert plan["n_slabs"] == 2 and plan["requested"] == "auto"
    density = open_ome_zarr(results / "predict" / "spots_test" / "detection.ome.zarr")
    assert density.attrs["fewlabel"]["run_id"] == plan["run_id"]
    assert density.attrs["fewlabel"]["n_slabs"] == 2
    assert density.attrs["fewlabel"]["complete"] is True
    assert not (results / "predict" / "spots_test" / "detection.ome.zarr.partial").exists()
    for slab in (0, 1):
        log = finished_run / "logs" / "predict_volume_slab" / f"spots_test.{slab}-of-2.log"
        assert f"slab {slab}/2 done (2 blocks)" in log.read_text()  # 4 chunks, split 2 + 2
    points = pd.read_csv(results / "points" / "spots_test" / "points.csv")
    assert list(points.columns[:3]) == ["z", "y", "x"] and "score" in points.columns
    detection = pd.read_csv(results / "evaluate" / "detection_summary.tsv", sep="\t")
    assert {"spots_test", "ALL"} <= set(detection["sample"])
    row = detection.set_index("sample").loc["spots_test"]
    gt = pd.read_csv(results / "ingest" / "spots_test" / "points.csv")
    assert row["n_gt"] == len(gt) and row["n_pred"] == len(points)
    assert row["tp"] + row["fn"] == row["n_gt"] and row["tp"] + row["fp"] == row["n_pred"]
    assert row["f1"] == pytest.approx(2 * row["tp"] / (2 * row["tp"] + row["fp"] + row["fn"]))
    matches = pd.read_csv(results / "evaluate" / "spots_test" / "detection_matches.csv")
    assert (matches["status"] == "tp").sum() == row["tp"]
    assert (matches.loc[matches["status"] == "tp", "distance"] <= row["gate"]).all()
    assert row["f1"] >= 0.6, f"the trained detector finds too few demo spots: {row.to_dict()}"
    labels = open_ome_zarr(results / "instances" / "nuclei_test" / "labels.ome.zarr")
    assert labels.array.dtype == "uint32"
    # mask_threshold: auto (the default) took the segmenter's validation-tuned threshold
    tuned = json.loads((results / "models" / "segmenter" / "thresholds.json").read_text())
    assert labels.attrs["fewlabel"]["params"]["mask_threshold"] == tuned["mask_threshold"]
    assert labels.attrs["fewlabel"]["mask_threshold_from"].endswith("thresholds.json")
    assert labels.attrs["fewlabel"]["params"]["h"] == tuned["h"]  # h: auto, tuned on val
    assert labels.attrs["fewlabel"]["h_from"].endswith("thresholds.json")
    segmentation = pd.read_csv(results / "evaluate" / "segmentation_summary.tsv", sep="\t")
    assert "nuclei_test" in set(segmentation["sample"])
    assert "pcc" in segmentation.columns  # ISL prediction scored against its target
    seg = segmentation.set_index("sample").loc["nuclei_test"]
    assert seg["n_pred"] == len(np.unique(labels.array[...])) - 1
    assert seg["fg_iou"] >= 0.3 and seg["n_pred"] > 0, f"no usable instances: {seg.to_dict()}"
    assert seg["pcc"] > 0.0, "the ISL prediction does not correlate with its target"


def test_report_is_self_contained_with_decodable_images(finished_run):
    import base64
    import io

    import matplotlib.image

    html = (finished_run / "results" / "report" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 6
    for encoded in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        assert pixels.size > 0 and pixels.std() > 0
    for section in ("Detection", "Segmentation", "Provenance"):
        assert section in html


def test_learned_detector_is_compared_with_the_log_on_its_validation(finished_run, monkeypatch):
    """The LoG baseline is tuned on the same validation volume as the learned threshold, counted
    the same way (the demo's val volume has an annotated box), equal to tuning it by hand, and
    the report states which scores higher."""
    from fewlabel.config import DensityTargetsConfig, LogConfig, PeaksConfig
    from fewlabel.detection.log.tuning import train_log
    from fewlabel.plan import Plan

    monkeypatch.chdir(finished_run)
    models = Path("results") / "models"
    learned = json.loads((models / "detector" / "thresholds.json").read_text())
    baseline = json.loads((models / "log_baseline" / "thresholds.json").read_text())
    assert baseline["tuned_on"] == learned["tuned_on"] == "val"
    assert baseline["tuned_with"] == learned["tuned_with"] == "clicks-recall+regions-precision"
    assert baseline["samples"] == ["spots_val"]
    plan = Plan.from_files("config/samples.tsv", "results/config.yaml")
    items = plan.log_items(plan.log_splits())
    assert items[0]["annotated_region"].endswith("spots_val_region.csv")
    detection = plan.config["detection"]
    best, _ = train_log(
        items,
        finished_run / "by_hand",
        params=LogConfig.model_validate(detection["log"]),
        peaks=PeaksConfig.model_validate(detection["peaks"]),
        targets=DensityTargetsConfig.model_validate(detection["targets"]),
        evaluation=plan.config["evaluation"]["detection"],
    )
    assert best == pytest.approx(baseline["detection_threshold"])
    # both scored on the held-out test volume, the same way; the report reads the test
    summaries = [
        pd.read_csv(Path("results") / folder / "detection_summary.tsv", sep="\t")
        .set_index("sample")
        .loc["ALL"]
        for folder in ("evaluate", "log_baseline/evaluate")
    ]
    assert summaries[0]["n_gt"] == summaries[1]["n_gt"] > 0
    log_points = pd.read_csv(Path("results") / "log_baseline/points/spots_test/points.csv")
    assert summaries[1]["n_pred"] == len(log_points)
    assert (log_points["score"] > baseline["detection_threshold"]).all()
    html = (Path("results") / "report" / "report.html").read_text()
    f1, f1_log = summaries[0]["f1"], summaries[1]["f1"]
    assert "on the held-out test volumes" in html
    assert f"F1 {max(f1, f1_log):.3f} vs {min(f1, f1_log):.3f}" in html
    assert ('class="warn"' in html) == (f1_log > f1)
    said = Path("snakemake.out").read_text()  # the end of the run repeats a warning
    assert "fewlabel: report results/report/report.html" in said
    assert ("fewlabel: WARNING: The LoG baseline scores higher" in said) == (f1_log > f1)


def test_rerun_is_noop(finished_run):
    result = snakemake(finished_run, "-n", "--cores", "2")
    assert "Nothing to be done" in result.stdout + result.stderr


def planned_jobs(workdir: Path, *args: str) -> tuple[dict[str, int], str]:
    """``{rule: job count}`` of a dry run (and its text)."""
    result = snakemake(workdir, "-n", "--cores", "2", *args)
    text = result.stdout + result.stderr
    counts = {
        rule: int(n)
        for rule, n in re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.MULTILINE)
        if rule not in ("total", "job")
    }
    return counts, text


def test_readme_rerun_claims(finished_run):
    """README "Rerunning parts": touch reruns nothing; an edited points CSV reruns
    ingest_points and what follows; a params change reruns only the rules that read it (in a
    one-line reason, hiding no other reason); --forcerun takes the words after it as rule
    names."""
    workdir = finished_run
    points = workdir / "demo_data" / "spots_train.csv"
    original = points.read_text()
    try:
        points.touch()
        assert planned_jobs(workdir)[0] == {}  # same content: nothing to do
        points.write_text(original + original.strip().splitlines()[-1] + "\n")
        jobs, text = planned_jobs(workdir)
        assert jobs["ingest_points"] == 1 and "Updated input files" in text
        for rule in ("make_density_targets", "train_detector", "extract_points", "build_report"):
            assert rule in jobs, (rule, jobs)
        assert "ingest_volume" not in jobs and "train_segmenter" not in jobs
    finally:
        points.write_text(original)
    assert planned_jobs(workdir)[0] == {}  # content restored: up to date again

    jobs, text = planned_jobs(
        workdir, "--config", "evaluation={segmentation: {centre_gate_um: 2.0}}"
    )
    assert jobs.keys() <= {
        "evaluate_segmentation",
        "aggregate_segmentation",
        "build_report",
        "record_config",
        "summarize_run",
        "all",
    }, jobs
    assert {"evaluate_segmentation", "record_config"} <= jobs.keys()
    # the detection gate also tunes the detector's threshold (one matching rule)
    jobs = planned_jobs(workdir, "--config", "evaluation={detection: {gate: 0.6}}")[0]
    assert {"train_detector", "evaluate_detection"} <= jobs.keys() and "train_segmenter" not in jobs
    digest = [line for line in text.splitlines() if "before:" in line and "sha256:" in line]
    assert len(digest) == 1 and len(digest[0]) < 400, digest  # one short line, no config dump

    target = "results/roi/spots_test/roi.json"
    assert planned_jobs(workdir, target, "--forcerun", "segment_roi")[0] == {"segment_roi": 1}
    swallowed = planned_jobs(workdir, "--forcerun", "segment_roi", target)[0]
    assert swallowed["segment_roi"] == 6  # the target became a rule name: default target


def test_new_sample_plans_only_its_jobs(finished_run, tmp_path):
    workdir = finished_run
    sheet_path = workdir / "config" / "samples.tsv"
    original = sheet_path.read_text()
    try:
        shutil.copy(workdir / "demo_data" / "spots_test.tif", workdir / "new_volume.tif")
        sheet_path.write_text(
            original + "brand_new\tnew_volume.tif\t\t0.3,0.1,0.1\tpredict\tdetect\t\t\t\n"
        )
        result = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules")
        text = result.stdout + result.stderr
        planned = dict(re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.MULTILINE))
        planned.pop("total", None)
        per_sample_rules = {"ingest_volume", "segment_roi"}
        assert per_sample_rules <= set(planned), text
        for rule in per_sample_rules:
            assert planned[rule] == "1", f"{rule} planned for more than the new sample:\n{text}"
        assert "make_demo_data" not in planned
        detail = snakemake(workdir, "-n", "--cores", "2").stdout
        touched = set(re.findall(r"wildcards: sample=([\w.-]+)", detail))
        assert touched == {"brand_new"}, touched
    finally:
        sheet_path.write_text(original)


def test_lint_is_clean():
    result = subprocess.run(
        [*SNAKEMAKE, "--lint", "-s", str(REPO / "Snakefile")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_bad_config_fails_before_any_job(tmp_path):
    workdir = make_workdir(tmp_path, {**TINY_CONFIG, "ingest": {"chunks": [0, 32, 32]}})
    result = snakemake(workdir, "--cores", "1", check=False)
    assert result.returncode != 0
    assert "config key 'ingest.chunks.0'" in result.stdout + result.stderr
    assert not (workdir / "results").exists() and not (workdir / "demo_data").exists()


def test_unsafe_sample_id_fails_before_any_job(tmp_path):
    workdir = make_workdir(tmp_path)
    with open(workdir / "config" / "samples.tsv", "a") as sheet:
        sheet.write("a;rm -rf x\tdemo_data/spots_test.tif\t\t1,1,1\tpredict\tdetect\t\t\t\n")
    result = snakemake(workdir, "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    assert "sample id 'a;rm -rf x' is not allowed" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- env files
IMPORT_TO_PACKAGE = {
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "torch": "torch",
    "zarr": "zarr",
    "numcodecs": "numcodecs",
    "tifffile": "tifffile",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "jinja2": "jinja2",
    "jsonschema": "jsonschema",
}
RULE_RE = re.compile(
    r"^\s*(?:rule|checkpoint) (\w+):|^\s*use rule \w+ as (\w+) with:", re.MULTILINE
)
RUN_RULES = {"record_config", "check_predict_tiles"}  # `run:` in Snakemake's Python; call a
# function of their name


def rules_with_env_and_stage() -> list[tuple[str, str | None, str | None, Path]]:
    """(rule, conda env, stage, file) of every rule; a ``use rule A as B`` rule reads A's
    (tests/slurm_profile.rule_blocks)."""
    from slurm_profile import rule_blocks

    blocks = rule_blocks()
    found = []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for match in RULE_RE.finditer(text):
            name = match.group(1) or match.group(2)
            body = blocks[name]
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
            stage = re.search(r"python -m fewlabel ([\w-]+)", body) or re.search(
                r"run:\s*\n\s*(\w+)\(", body
            )
            found.append(
                (name, conda.group(1) if conda else None, stage.group(1) if stage else None, path)
            )
    return found


def third_party_imports(module_file: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level third-party imports of a fewlabel module and every fewlabel module it imports."""
    seen = seen if seen is not None else set()
    if module_file in seen or not module_file.exists():
        return set()
    seen.add(module_file)
    names: set[str] = set()
    tree = ast.parse(module_file.read_text())
    src = REPO / "src"
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for module in modules:
            top = module.split(".")[0]
            if top == "fewlabel":
                base = src / Path(*module.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    names |= third_party_imports(candidate, seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                names.add(top)
    return names


def stage_module_file(rule: str) -> Path:
    """``src/fewlabel/stages/<rule>.py``, checked: it defines a function named like the rule,
    and that function is the handler of ``python -m fewlabel <rule>``."""
    from fewlabel.cli import build_parser

    path = REPO / "src" / "fewlabel" / "stages" / f"{rule}.py"
    assert path.exists(), f"rule {rule}: no stage module src/fewlabel/stages/{rule}.py"
    tree = ast.parse(path.read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == rule for node in tree.body), (
        f"{path.name} defines no function {rule}(args)"
    )
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    handler = subparsers.choices[rule].get_default("handler")
    assert (handler.__module__, handler.__name__) == (f"fewlabel.stages.{rule}", rule), (
        f"`python -m fewlabel {rule}` runs {handler.__module__}.{handler.__name__}"
    )
    return path


def env_packages(env_file: Path) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    names = set()
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            names.add(re.split(r"[=<>! ]", entry)[0].lower())
    return names


def test_every_rule_has_an_env_file_listing_its_imports():
    from slurm_profile import parent_rule

    rules = rules_with_env_and_stage()
    names = [name for name, *_ in rules]
    assert len(names) == len(set(names)), f"rule names must be distinct: {sorted(names)}"
    assert {"init_prediction_slabs", "predict_volume_slab", "fit_log_threshold"} <= set(names)
    for name, conda, stage, path in rules:
        if name == "all":
            continue
        parent = parent_rule(name)  # a `use rule <stage> as <stage>_<what>` rule: its stage
        assert stage == (parent or name) and name.startswith(stage), (
            f"rule {name} calls stage {stage!r}: a rule and its stage share one name"
        )
        stage_module_file(stage)  # stages/<rule>.py: every stage also runs without Snakemake
        if name in RUN_RULES:
            continue
        assert conda, f"rule {name} ({path.name}) has no conda: env file"
        env_file = (path.parent / conda).resolve()
        assert env_file.exists(), f"rule {name}: env file {conda} does not exist"
        assert stage, f"rule {name} does not call `python -m fewlabel <stage>`"
        packages = env_packages(env_file)
        for env_dep in yaml.safe_load(env_file.read_text())["dependencies"]:
            if isinstance(env_dep, str):
                assert "=" in env_dep, f"{conda}: '{env_dep}' is not pinned"
        needed = third_party_imports(stage_module_file(stage))
        for module in needed:
            package = IMPORT_TO_PACKAGE.get(module, module)
            assert package in packages, (
                f"rule {name} (stage {stage}) imports {module}, but {conda} does not list {package}"
            )


def test_snakemake_report_builds(finished_run):
    """Outputs marked with report() make `snakemake --report` work."""
    target = finished_run / "snakemake_report.zip"
    result = snakemake(finished_run, "--report", str(target))
    assert target.exists() and target.stat().st_size > 10_000
    assert "No files found for patterns" not in result.stdout + result.stderr


def test_forcerun_in_slab_mode_names_the_recovery_and_recovers(finished_run):
    """`--forcerun finalize_prediction` cannot republish a deleted array: it says how to
    recover; `--forcerun init_prediction_slabs` recomputes the slabs and publishes again.
    (Runs last: it rewrites the finished run's prediction.)"""
    target = "results/points/spots_test/points.csv"
    failed = snakemake(
        finished_run, "--cores", "2", "--forcerun", "finalize_prediction", target, check=False
    )
    assert failed.returncode != 0
    log = (finished_run / "logs" / "finalize_prediction" / "spots_test.log").read_text()
    assert "--forcerun init_prediction_slabs" in log
    snakemake(finished_run, "--cores", "2", "--forcerun", "init_prediction_slabs", target)
    density = open_ome_zarr(
        finished_run / "results" / "predict" / "spots_test" / "detection.ome.zarr"
    )
    assert density.attrs["fewlabel"]["complete"] is True
