"""Planning the workflow: parse without torch, a 1,000-row sheet, GPU routing on SLURM, the
sample plan shared by the Snakefile and the multi-sample stages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from slurm_profile import expected_request, gpu_rules, local_rules, render, rule_blocks, with_site

from fewlabel.plan import DETECTION_METRICS, Plan, expand

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
MAX_SHELL_LINE = 8 * 1024


def tiny_project(workdir: Path, rows: int, n_train: int = 10, n_val: int = 10) -> Path:
    """A sheet of ``rows`` detection volumes (``n_train`` train, ``n_val`` val, the rest test)
    on one tiny TIFF and one points CSV; demo data off."""
    data = workdir / "data"
    data.mkdir(parents=True)
    volume = np.random.default_rng(0).poisson(100, (8, 32, 32)).astype(np.uint16)
    volume[3:6, 14:19, 14:19] += 400  # one spot at the clicked point
    tifffile.imwrite(data / "v.tif", volume)
    (data / "v.csv").write_text("z,y,x\n4,16,16\n")
    lines = ["sample\timage\tvoxel_size\tsplit\tpoints"]
    for i in range(rows):
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        lines.append(f"s{i:04d}\tdata/v.tif\t0.3,0.1,0.1\t{split}\tdata/v.csv")
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n")
    config = {
        "samples": "samples.tsv",
        "demo": {"enabled": False},
        "segmentation": {"enabled": False},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def dry_run(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *SNAKEMAKE,
            "-d",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "-n",
            "-p",
            "--cores",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


@pytest.mark.workflow
def test_dry_run_of_1000_rows_keeps_every_shell_line_short(tmp_path):
    workdir = tiny_project(tmp_path, 1000)
    result = dry_run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "python -m fewlabel" in line]
    assert len(commands) > 3000  # ingest, points, roi, prediction, ... for 1,000 volumes
    longest = max(commands, key=len)
    assert len(longest) <= MAX_SHELL_LINE, f"{len(longest)} characters: {longest[:300]}..."
    assert "--sample-sheet samples.tsv" in result.stdout  # multi-sample stages read the sheet


@pytest.mark.workflow
def test_dry_run_and_lint_do_not_import_torch(tmp_path):
    """Parsing the Snakefile (every dry run, --lint, cluster re-parse) must not pay for torch."""
    blocker = tmp_path / "block"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text(
        "raise ImportError('torch imported while parsing the workflow')\n"
    )
    workdir = tiny_project(tmp_path / "w", 30)
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "PYTHONPATH": str(blocker),
        "HOME": str(tmp_path),
    }
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert check.returncode != 0  # the blocker works
    result = dry_run(workdir, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lint = subprocess.run(
        [*SNAKEMAKE, "--lint"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]


def test_slurm_profile_routes_exactly_the_gpu_rules_to_gpus(tmp_path):
    """profiles/slurm, rendered with a site block: GPU rules (`resources: gpu=1`) get `gpu: 1`,
    the GPU partition and the GPU model; CPU rules never; the caps hold; threads decide
    --cpus-per-task (no cpus_per_task anywhere)."""
    rules = set(rule_blocks())
    gpu = gpu_rules()
    assert {"train_detector", "predict_volume", "predict_volume_slab"} <= gpu
    assert "fit_log_threshold" not in gpu
    site = {
        "cpu_partition": "c-part",
        "gpu_partition": "g-part",
        "gpu_model": "a100",
        "max_cpus": 4,
        "max_mem_mb": 20000,
    }
    profile = render(with_site(site, tmp_path / "site"))
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    assert named <= rules, f"profile names rules that do not exist: {sorted(named - rules)}"
    for name in rules:
        job = expected_request(profile, name)
        if name in gpu:
            assert (job["gpus"], job["partition"], job["gpu_model"]) == (1, "g-part", "a100"), (
                f"GPU rule {name} is not routed to a GPU in profiles/slurm: {job}"
            )
        else:
            assert (job["gpus"], job["partition"], job["gpu_model"]) == (0, "c-part", None), (
                f"CPU rule {name} asks for a GPU node in profiles/slurm: {job}"
            )
        assert job["cpus"] <= 4 and job["mem_mb"] <= 20000, (name, job)
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        assert not {"cpus_per_task", "cpus_per_gpu"} & set(resources)
    shipped = render()
    assert expected_request(shipped, "train_detector")["gpu_model"] is None  # "" = any GPU
    assert expected_request(shipped, "train_detector")["cpus"] == 8  # set-threads, not capped
    assert "slurm_account" not in shipped["default-resources"]  # "" = the default account
    assert (
        render(with_site({"account": "lab"}, tmp_path / "a"))["default-resources"]["slurm_account"]
        == "lab"
    )


def test_bookkeeping_rules_run_on_the_submit_host():
    """Cheap rules (small files, no volume reads) are `localrule: True`: no sbatch round trip."""
    assert local_rules() == {
        "record_config",
        "ingest_points",
        "finalize_prediction",
        "aggregate_detection",
        "aggregate_detection_log_baseline",  # use rule aggregate_detection as …: inherited
        "aggregate_segmentation",
    }
    assert not local_rules() & gpu_rules()


def test_plan_selects_samples_like_the_sheet_says(tmp_path):
    workdir = tiny_project(tmp_path, 25)
    from fewlabel.config import load_samples

    plan = Plan(
        load_samples(workdir / "samples.tsv", base_dir=workdir),
        {
            "detection": {"enabled": True},
            "segmentation": {"enabled": False},
            "roi": {"enabled": True},
            "report": {"title": "t"},
            "samples": "samples.tsv",
        },
    )
    assert plan.detection_fit_samples("train") == [f"s{i:04d}" for i in range(10)]
    assert len(plan.detection_fit_samples()) == 20
    assert plan.detection_eval_samples() == [f"s{i:04d}" for i in range(20, 25)]
    assert expand(DETECTION_METRICS, ["a"]) == ["results/evaluate/a/detection.tsv"]
    items = plan.detector_items("val")
    assert [i["sample"] for i in items] == [f"s{i:04d}" for i in range(10, 20)]
    assert set(items[0]) == {"sample", "image", "target", "weight", "points"}
    outputs = plan.final_outputs()
    assert "results/points/s0024/points.csv" in outputs and outputs[-1].endswith("report.html")
    assert not plan.segmentation_enabled()
    files = plan.report_files()
    assert "results/models/detector" in files and "samples.tsv" in files


def test_predict_only_sheet_without_a_model_fails_at_parse_time(tmp_path):
    workdir = tiny_project(tmp_path, 25)
    text = (workdir / "samples.tsv").read_text().replace("\ttrain\t", "\tpredict\t")
    (workdir / "samples.tsv").write_text(text.replace("\tval\t", "\tpredict\t"))
    result = dry_run(workdir)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "25 sample(s) for detection" in message and "set detection.model" in message


@pytest.mark.workflow
def test_predict_only_sheet_reuses_a_trained_detector(tmp_path, finished_run):
    """The commonest case after a first training: new volumes, the trained model folder (the
    detector of the session's default chain run)."""
    workdir = tiny_project(tmp_path, 1)
    (workdir / "samples.tsv").write_text(  # new2: another z step than the training volumes
        "sample\timage\tvoxel_size\tsplit\nnew1\tdata/v.tif\t0.3,0.1,0.1\tpredict\n"
        "new2\tdata/v.tif\t0.45,0.1,0.1\tpredict\n"
    )
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["detection"] = {
        "model": str(finished_run / "results" / "models" / "detector"),
        "predict": {"tile": [8, 32, 32], "overlap": [2, 8, 8]},
    }
    config["roi"] = {"enabled": False}
    config["ingest"] = {"chunks": [8, 32, 32]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "-d",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    points = pd.read_csv(workdir / "results" / "points" / "new1" / "points.csv")
    assert list(points.columns)[:3] == ["z", "y", "x"]
    assert not (workdir / "results" / "models" / "detector").exists()  # nothing retrained
    assert "train_detector" not in result.stdout + result.stderr
    # detection.predict.model_grid: new2 (z 0.45 µm) is predicted on the training grid (z 0.3)
    from fewlabel.io import open_ome_zarr

    own = open_ome_zarr(workdir / "results" / "predict" / "new1" / "detection.ome.zarr")
    assert own.voxel_size == (0.3, 0.1, 0.1) and own.shape == (8, 32, 32)
    grid = open_ome_zarr(workdir / "results" / "predict" / "new2" / "detection.ome.zarr")
    assert grid.voxel_size == (0.3, 0.1, 0.1) and grid.shape == (11, 32, 32)  # 3.15 µm of z
    assert grid.attrs["fewlabel"]["resampled"]["image_voxel_size"] == [0.45, 0.1, 0.1]
    new2 = pd.read_csv(workdir / "results" / "points" / "new2" / "points.csv")
    assert len(new2) and new2["z"].between(0, 7).all()  # the image's voxels, not the grid's
    np.testing.assert_allclose(new2["z_um"], new2["z"] * 0.45, rtol=1e-6)


def test_isl_pretrains_on_a_train_row_with_only_a_target(tmp_path):
    """A train row with a fluorescence target and no labels: ISL pretrains on it, the
    segmenter fine-tunes only on labelled rows, detection ignores it (a real dry run)."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(data / "v.tif", rng.poisson(100, (8, 32, 32)).astype(np.uint16))
    tifffile.imwrite(data / "f.tif", rng.poisson(50, (8, 32, 32)).astype(np.uint16))
    labels = np.zeros((8, 32, 32), np.uint16)
    labels[2:6, 10:20, 10:20] = 1
    tifffile.imwrite(data / "l.tif", labels)
    (tmp_path / "samples.tsv").write_text(
        "sample\timage\tvoxel_size\tsplit\ttask\tlabels\ttarget\n"
        "lab1\tdata/v.tif\t0.3,0.1,0.1\ttrain\tsegment\tdata/l.tif\tdata/f.tif\n"
        "fluo1\tdata/v.tif\t0.3,0.1,0.1\ttrain\tboth\t\tdata/f.tif\n"
        "test1\tdata/v.tif\t0.3,0.1,0.1\ttest\tsegment\tdata/l.tif\t\n"
    )
    config = {"samples": "samples.tsv", "demo": {"enabled": False}, "detection": {}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    from fewlabel.config import load_samples

    plan = Plan(
        load_samples(tmp_path / "samples.tsv", base_dir=tmp_path),
        {"segmentation": {"enabled": True, "pretrain_isl": True}, "detection": {"enabled": True}},
    )
    assert plan.isl_samples("train") == ["lab1", "fluo1"]
    assert [i["sample"] for i in plan.segmenter_items("train")] == ["lab1"]
    assert plan.detection_fit_samples() == [] and not plan.detection_enabled()
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = re.split(r"\n(?=rule |localrule )", result.stdout)
    isl = [job for job in jobs if job.startswith(("rule pretrain_isl:", "localrule pretrain_isl:"))]
    assert len(isl) == 1, result.stdout[-3000:]
    assert "results/ingest/fluo1/target.ome.zarr" in isl[0]
    segmenter = [job for job in jobs if "train_segmenter:" in job.split("\n", 1)[0]]
    assert len(segmenter) == 1 and "results/models/isl" in segmenter[0]
    assert "results/ingest/fluo1/" not in segmenter[0]
    assert "train_detector" not in result.stdout and "fit_log_threshold" not in result.stdout


@pytest.mark.workflow
def test_axes_column_reaches_ingest_of_a_raw_4d_tiff(tmp_path):
    """A 4D TIFF without axis metadata ingests when the sheet states its axes (a real run)."""
    data = tmp_path / "data"
    data.mkdir()
    volume = np.random.default_rng(0).integers(1, 999, (6, 2, 16, 16), dtype=np.uint16)
    tifffile.imwrite(data / "raw.tif", volume, photometric="minisblack")
    (tmp_path / "samples.tsv").write_text(
        "sample\timage\tchannel\taxes\tvoxel_size\tsplit\n"
        "a\tdata/raw.tif\t1\tZCYX\t0.3,0.1,0.1\tpredict\n"
    )
    config = {
        "samples": "samples.tsv",
        "demo": {"enabled": False},
        "ingest": {"chunks": [6, 16, 16]},
        "detection": {"enabled": False},
        "segmentation": {"enabled": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/ingest/a/image.ome.zarr"
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "-d",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--cores",
            "1",
            "-p",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--axes=ZCYX" in result.stdout + result.stderr
    from fewlabel.io import open_ome_zarr

    np.testing.assert_array_equal(open_ome_zarr(tmp_path / target).array[:], volume[:, 1])


def test_check_predict_tiles_names_sample_shape_tile_and_fix(tmp_path, monkeypatch):
    """Stage check_predict_tiles (the training rules wait for it)."""
    from fewlabel.cli import main

    workdir = tiny_project(tmp_path, 3, n_train=1, n_val=1)
    monkeypatch.chdir(workdir)
    from fewlabel.config import load_samples, validate_config

    config = yaml.safe_load(Path("config.yaml").read_text())
    validate_config(config)
    assert Plan(load_samples("samples.tsv"), config).tile_check_samples() == ["s0002"]
    args = ["check_predict_tiles", "--configfile", "config.yaml"]
    assert main([*args, "--output", "t.json", "--log", "t.log"]) == 2
    text = Path("t.log").read_text()
    for part in (
        "sample 's0002'",
        "file 'data/v.tif'",
        "the volume (8, 32, 32) is smaller than one tile, detection.predict.tile = (16, 128, 128)",
        "set detection.predict.pad_to_tile: true",
        "detection.predict.tile to at most [8, 32, 32]",
    ):
        assert part in text, (part, text)
    assert not Path("t.json").exists()
    config["detection"] = {"predict": {"pad_to_tile": True}}
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main([*args, "--output", "t.json"]) == 0
    assert json.loads(Path("t.json").read_text())["s0002"]["shape"] == [8, 32, 32]


def test_check_predict_tiles_checks_the_shape_on_the_training_grid(tmp_path, monkeypatch):
    """detection.predict.model_grid: a test volume that holds the tile on its own grid (z 0.3
    µm, 8 planes) but not on the training grid (z 0.4 µm of the train row: 6 planes) fails
    before training, naming both shapes and both fixes."""
    from fewlabel.cli import main

    workdir = tiny_project(tmp_path, 3, n_train=1, n_val=1)
    monkeypatch.chdir(workdir)
    sheet = Path("samples.tsv").read_text().splitlines()
    sheet[1] = sheet[1].replace("0.3,0.1,0.1", "0.4,0.1,0.1")  # the train row
    Path("samples.tsv").write_text("\n".join(sheet) + "\n")
    config = yaml.safe_load(Path("config.yaml").read_text())
    config["detection"] = {"predict": {"tile": [8, 32, 32], "overlap": [2, 4, 4]}}
    Path("config.yaml").write_text(yaml.safe_dump(config))
    args = ["check_predict_tiles", "--configfile", "config.yaml", "--output", "t.json"]
    assert main([*args, "--log", "t.log"]) == 2
    text = Path("t.log").read_text()
    for part in (
        "sample 's0002'",
        "the volume (6, 32, 32) is smaller than one tile, detection.predict.tile = (8, 32, 32)",
        "training grid [0.4, 0.1, 0.1] µm",
        "the image is (8, 32, 32) voxels of [0.3, 0.1, 0.1] µm",
        "set detection.predict.pad_to_tile: true",
        "detection.predict.model_grid: false",
    ):
        assert part in text, (part, text)
    config["detection"]["predict"]["pad_to_tile"] = True
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main(args) == 0
    assert json.loads(Path("t.json").read_text())["s0002"]["shape_on_training_grid"] == [6, 32, 32]
    config["detection"]["predict"] = {
        "tile": [8, 32, 32],
        "overlap": [2, 4, 4],
        "model_grid": False,
    }
    Path("config.yaml").write_text(yaml.safe_dump(config))
    assert main(args) == 0
    assert "shape_on_training_grid" not in json.loads(Path("t.json").read_text())["s0002"]


@pytest.mark.workflow
def test_too_small_volume_to_predict_fails_before_training(tmp_path):
    workdir = tiny_project(tmp_path, 3, n_train=1, n_val=1)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["roi"] = {"enabled": False}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml")]
        + ["--cores", "1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "check_predict_tiles" in text and "sample 's0002'" in text
    log = (workdir / "logs" / "check_predict_tiles" / "tiles.log").read_text()
    assert "sample 's0002'" in log and "detection.predict.pad_to_tile: true" in log
    assert not (workdir / "results" / "models" / "detector").exists()  # never trained
    assert not (workdir / "logs" / "train_detector").exists()


@pytest.mark.workflow
def test_other_workdir_without_configfile_uses_the_workflow_config(tmp_path):
    """`snakemake -d OTHER` (no config/ there, no --configfile): the workflow's own config and
    sheet; a nested --config override validates like config.yaml."""
    result = subprocess.run(
        [*SNAKEMAKE, "-d", str(tmp_path), "-n", "--cores", "1", "--config"]
        + ["detection={train: {epochs: 2}, model: null}", "segmentation={train: {dims: 2}}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert f"no config/config.yaml in {tmp_path}" in text
    assert "make_demo_data" in text and "train_detector" in text
    assert not (tmp_path / "config").exists()


@pytest.mark.workflow
def test_roi_gate_prediction_passes_the_roi_mask_to_detection_prediction(tmp_path):
    project = tiny_project(tmp_path, rows=3, n_train=1, n_val=1)
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["roi"] = {"gate_prediction": False}
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    off = dry_run(project)
    assert off.returncode == 0, off.stderr
    predict = [ln for ln in off.stdout.splitlines() if "fewlabel predict_volume " in ln]
    assert predict and all("--roi= " in ln for ln in predict)  # '' = no gating
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["roi"] = {"gate_prediction": True}
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    on = dry_run(project)
    assert on.returncode == 0, on.stderr
    predict = [ln for ln in on.stdout.splitlines() if "fewlabel predict_volume " in ln]
    assert predict  # the test split is predicted
    for line in predict:
        sample = re.search(r"--sample (\S+)", line).group(1)
        assert f"--roi=results/roi/{sample}/roi.ome.zarr" in line


def test_an_init_from_that_is_not_a_model_folder_is_a_parse_time_problem(tmp_path):
    workdir = tiny_project(tmp_path, 25)
    from fewlabel.config import load_samples

    config = {
        "detection": {"enabled": True, "train": {"init_from": str(tmp_path / "nope")}},
        "segmentation": {"enabled": False},
        "samples": "samples.tsv",
    }
    plan = Plan(load_samples(workdir / "samples.tsv", base_dir=workdir), config)
    (problem,) = plan.problems()
    assert "detection.train.init_from" in problem and "nope" in problem
    (tmp_path / "nope").mkdir()
    (tmp_path / "nope" / "model.json").write_text("{}")
    assert plan.problems() == []


def test_log_baseline_is_planned_beside_a_density_detector_trained_here(tmp_path):
    """detection.log.compare tunes the LoG on the split the density threshold is tuned on (val,
    else train) into results/models/log_baseline, reads the sheet's annotated_region and feeds
    the report; method log tunes it as the detector on train + val; pu, a reused model or
    compare: false plan no baseline."""
    workdir = tiny_project(tmp_path, 25)
    from fewlabel.config import load_samples

    sheet = load_samples(workdir / "samples.tsv", base_dir=workdir)

    def plan(detection: dict, rows: pd.DataFrame = sheet) -> Plan:
        section = {"enabled": True, "method": "density", "log": {"compare": True}, **detection}
        return Plan(rows, {"detection": section, "segmentation": {"enabled": False},
                           "roi": {"enabled": False}, "report": {"title": "t"},
                           "samples": "samples.tsv"})  # fmt: skip

    density = plan({})
    assert density.compare_log() and density.log_dir() == "results/models/log_baseline"
    assert density.log_splits() == ("val",)
    assert "results/models/log_baseline" in density.final_outputs()
    assert "results/models/log_baseline" in density.report_files()
    items = density.log_items(density.log_splits())
    assert [i["sample"] for i in items] == [f"s{i:04d}" for i in range(10, 20)]
    assert items[0]["annotated_region"] == ""
    no_val = plan({}, sheet[sheet["split"] != "val"])
    assert no_val.log_splits() == ("train",)  # as train_detector tunes without val rows
    log = plan({"method": "log"})
    assert not log.compare_log() and log.log_dir() == "results/models/detector"
    assert log.log_splits() == ("train", "val")
    for off in ({"method": "pu"}, {"model": "elsewhere"}, {"log": {"compare": False}}):
        assert not plan(off).compare_log(), off
        assert "results/models/log_baseline" not in plan(off).final_outputs()

    text = dry_run(workdir).stdout
    job = re.search(r"rule fit_log_threshold:.*?python -m fewlabel fit_log_threshold[^\n]*", text,
                    flags=re.DOTALL)  # fmt: skip
    assert job and "--splits val" in job.group(0), text[-3000:]
    assert "--output-dir results/models/log_baseline" in job.group(0)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["detection"] = {"log": {"compare": False}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    assert "fit_log_threshold" not in dry_run(workdir).stdout
