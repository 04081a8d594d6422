"""Planning the workflow: parse without torch, a 1,000-row sheet, GPU routing on SLURM, the
sample plan shared by the Snakefile and the multi-sample stages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from fewlabel.plan import DETECTION_METRICS, Plan, expand

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
MAX_SHELL_LINE = 8 * 1024


def tiny_project(workdir: Path, rows: int) -> Path:
    """A sheet of ``rows`` detection volumes (10 train, 10 val, the rest test) on one tiny
    TIFF and one points CSV; demo data off."""
    data = workdir / "data"
    data.mkdir(parents=True)
    tifffile.imwrite(data / "v.tif", np.zeros((8, 32, 32), np.uint16))
    (data / "v.csv").write_text("z,y,x\n4,16,16\n")
    lines = ["sample\timage\tvoxel_size\tsplit\tpoints"]
    for i in range(rows):
        split = "train" if i < 10 else "val" if i < 20 else "test"
        lines.append(f"s{i:04d}\tdata/v.tif\t0.3,0.1,0.1\t{split}\tdata/v.csv")
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n")
    config = {"samples": "samples.tsv", "demo": {"enabled": False},
              "segmentation": {"enabled": False}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def dry_run(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile",
                           str(workdir / "config.yaml"), "-n", "-p", "--cores", "1", *args],
                          capture_output=True, text=True, timeout=900, env=env)


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
        "raise ImportError('torch imported while parsing the workflow')\n")
    workdir = tiny_project(tmp_path / "w", 30)
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "PYTHONPATH": str(blocker), "HOME": str(tmp_path)}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env,
                           capture_output=True, text=True)
    assert check.returncode != 0  # the blocker works
    result = dry_run(workdir, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lint = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]


def rule_resources() -> dict[str, bool]:
    """Every rule/checkpoint name -> whether it asks for a GPU (`gpu=1` in its resources)."""
    found: dict[str, bool] = {}
    pattern = re.compile(r"^\s*(?:rule|checkpoint) (\w+):", re.MULTILINE)
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in pattern.finditer(text)]
        for index, (start, name) in enumerate(starts):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
            found[name] = bool(re.search(r"resources:\s*\n\s*gpu=1", text[start:end]))
    return found


def test_slurm_profile_routes_exactly_the_gpu_rules_to_gpus():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    default_partition = profile["default-resources"]["slurm_partition"]
    rules = rule_resources()
    gpu_rules = {name for name, gpu in rules.items() if gpu}
    assert {"train_detector", "predict_volume", "predict_volume_slab"} <= gpu_rules
    assert "fit_log_threshold" not in gpu_rules
    set_resources = profile.get("set-resources", {})
    unknown = set(set_resources) - set(rules)
    assert not unknown, f"profile names rules that do not exist: {sorted(unknown)}"
    for name in rules:
        settings = set_resources.get(name, {})
        partition = settings.get("slurm_partition", default_partition)
        if name in gpu_rules:
            assert settings.get("gpu") == 1 and partition == "gpu", \
                f"GPU rule {name} is not routed to a GPU in profiles/slurm"
        else:
            assert partition != "gpu" and "gpu" not in settings, \
                f"CPU rule {name} asks for a GPU node in profiles/slurm"
    assert set(profile.get("set-threads", {})) <= set(rules)


def test_plan_selects_samples_like_the_sheet_says(tmp_path):
    workdir = tiny_project(tmp_path, 25)
    from fewlabel.config import load_samples

    plan = Plan(load_samples(workdir / "samples.tsv", base_dir=workdir),
                {"detection": {"enabled": True}, "segmentation": {"enabled": False},
                 "roi": {"enabled": True}, "report": {"title": "t"}, "samples": "samples.tsv"})
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
