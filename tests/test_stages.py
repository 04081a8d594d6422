"""Stage = rule: one module per Snakemake rule in ``fewlabel.stages``, named like the rule,
with an entry function of that name; every stage runs without Snakemake."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fewlabel.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
STAGES = REPO / "src" / "fewlabel" / "stages"
RULE_RE = re.compile(r"^\s*(?:rule|checkpoint) (\w+):", re.MULTILINE)


def rule_names() -> set[str]:
    names = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        names |= set(RULE_RE.findall(path.read_text()))
    return names - {"all"}


def test_stages_hold_one_module_per_rule_and_nothing_else():
    modules = {p.stem for p in STAGES.glob("*.py") if not p.stem.startswith("_")}
    rules = rule_names()
    assert len(rules) >= 25
    assert modules == rules, (
        f"rules without a stage module: {sorted(rules - modules)}; "
        f"stage modules without a rule: {sorted(modules - rules)}"
    )


@pytest.mark.parametrize("rule", sorted(rule_names()))
def test_every_rule_runs_its_own_entry_function_and_has_help(rule, capsys):
    import importlib

    module = importlib.import_module(f"fewlabel.stages.{rule}")
    assert callable(getattr(module, rule, None)), f"stages/{rule}.py has no function {rule}"
    subparsers = next(
        a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    assert subparsers.choices[rule].get_default("handler") is getattr(module, rule)
    with pytest.raises(SystemExit) as exit_info:
        main([rule, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: fewlabel {rule}" in out
    assert module.__doc__.splitlines()[0] in out  # the module docstring is the description


def test_tools_are_subcommands_but_not_stages():
    subparsers = next(
        a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    assert "synth" in subparsers.choices and not (STAGES / "synth.py").exists()
    assert set(subparsers.choices) == rule_names() | {"synth"}


def test_building_the_parser_imports_no_library():
    """`python -m fewlabel <stage>` imports every stage module: numpy, zarr, torch... load only
    inside the entry function that needs them (fast --help; a rule's env has only its own)."""
    code = (
        "import sys; from fewlabel.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'zarr', 'pandas', 'scipy', 'skimage', "
        "'matplotlib', 'tifffile') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------- record_config, summarize_run
def tiny_run(workdir: Path) -> None:
    """A two-sample sheet, a config and the ingest/ROI summaries that summarize_run reads."""
    (workdir / "data").mkdir()
    (workdir / "data" / "a.tif").write_bytes(b"a")
    (workdir / "data" / "a.csv").write_text("z,y,x\n1,2,3\n")
    (workdir / "samples.tsv").write_text(
        "sample\timage\tvoxel_size\tsplit\tpoints\n"
        "a\tdata/a.tif\t0.3,0.1,0.1\ttrain\tdata/a.csv\n"
        "b\tdata/a.tif\t0.3,0.1,0.1\ttest\t\n"
    )
    (workdir / "config.yaml").write_text(
        yaml.safe_dump({"samples": "samples.tsv", "demo": {"enabled": False}})
    )
    for sample, top in (("a", 7), ("b", 9)):
        ingest = workdir / "results" / "ingest" / sample
        ingest.mkdir(parents=True)
        (ingest / "image.json").write_text(
            json.dumps(
                {
                    "sample": sample,
                    "shape": [8, 32, 32],
                    "voxel_size": [0.3, 0.1, 0.1],
                    "dtype": "uint16",
                    "min": 0,
                    "max": top,
                }
            )
        )
    for sample, warnings in (("a", ["few voxels"]), ("b", [])):
        roi = workdir / "results" / "roi" / sample
        roi.mkdir(parents=True)
        (roi / "roi.json").write_text(
            json.dumps({"roi_fraction": 0.25, "min_batch_size": 4, "warnings": warnings})
        )


def test_record_config_and_summarize_run_stages(tmp_path, monkeypatch):
    tiny_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["record_config", "--configfile", "config.yaml", "--output", "snap.yaml"]) == 0
    snapshot = yaml.safe_load(Path("snap.yaml").read_text())
    assert snapshot["demo"]["enabled"] is False
    assert snapshot["detection"]["predict"]["tile"]  # defaults filled in
    assert (
        main(
            [
                "summarize_run",
                "--sample-sheet",
                "samples.tsv",
                "--config",
                "snap.yaml",
                "--output",
                "summary.tsv",
                "--provenance",
                "provenance.json",
            ]
        )
        == 0
    )
    table = pd.read_csv("summary.tsv", sep="\t", keep_default_na=False).set_index("sample")
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "split"] == "train" and table.loc["b", "split"] == "test"
    assert table.loc["a", "shape_zyx"] == "8x32x32" and table.loc["b", "max"] == 9
    assert table.loc["a", "roi_fraction"] == 0.25 and table.loc["a", "roi_warnings"] == "few voxels"
    assert table.loc["b", "roi_warnings"] == ""
    record = json.loads(Path("provenance.json").read_text())
    assert set(record["inputs"]) == {"data/a.tif", "data/a.csv"}
    assert record["config"]["demo"]["enabled"] is False


def test_summarize_run_provenance_names_its_environment_and_the_models(tmp_path, monkeypatch):
    """Under --sdm conda summarize_run runs in the io env (no torch): its versions say so
    instead of "not installed", and each trained model's own training versions are recorded."""
    import importlib.metadata

    from fewlabel.runtime import NOT_IN_ENVIRONMENT

    tiny_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    trained = {
        "created": "2026-01-02T03:04:05+00:00",
        "git_commit": "abc123",
        "environment": {"python_executable": "/envs/torch/bin/python"},
        "versions": {"python": "3.11.9", "torch": "2.13.0", "snakemake": NOT_IN_ENVIRONMENT},
    }
    detector = tmp_path / "results" / "models" / "detector"
    detector.mkdir(parents=True)
    (detector / "training.json").write_text(
        json.dumps({"stage": "train_detector", "device": "cuda", "provenance": trained})
    )
    real_version = importlib.metadata.version

    def io_env_version(name):  # the io env: no torch, no snakemake, no matplotlib, no jinja2
        if name in ("torch", "snakemake", "matplotlib", "jinja2"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", io_env_version)
    main(["record_config", "--configfile", "config.yaml", "--output", "snap.yaml"])
    args = ["--sample-sheet", "samples.tsv", "--config", "snap.yaml", "--output", "s.tsv"]
    assert main(["summarize_run", *args, "--provenance", "provenance.json"]) == 0
    record = json.loads(Path("provenance.json").read_text())
    assert record["versions"]["torch"] == "not in this rule's environment"
    assert record["versions"]["snakemake"] == NOT_IN_ENVIRONMENT
    assert record["versions"]["numpy"] == real_version("numpy")
    assert "not installed" not in json.dumps(record)
    assert record["environment"]["python_executable"] == sys.executable
    assert record["environment"]["cpu"]  # the machine type a rerun must match, bit for bit
    model = record["models"]["detector"]
    assert model["folder"] == "results/models/detector" and model["stage"] == "train_detector"
    assert model["versions"]["torch"] == "2.13.0" and model["device"] == "cuda"
    assert model["git_commit"] == "abc123" and model["created"] == trained["created"]
    # the plan makes the model folder an input of summarize_run (its provenance reruns)
    from fewlabel.plan import Plan

    plan = Plan.from_files("samples.tsv", "snap.yaml")
    assert plan.summary_inputs()["models"] == ["results/models/detector"]


def test_record_config_stage_rejects_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"samples": "s.tsv", "seed": "x"}))
    assert (
        main(["record_config", "--configfile", str(bad), "--output", str(tmp_path / "snap.yaml")])
        == 2
    )
    assert "seed" in capsys.readouterr().err and not (tmp_path / "snap.yaml").exists()


def test_summary_table_joins_rois_and_splits():
    from fewlabel.summary import SUMMARY_COLUMNS, summary_table

    images = [
        {
            "sample": "b",
            "shape": [1, 2, 3],
            "voxel_size": [1.0, 0.5, 0.25],
            "dtype": "uint8",
            "min": 0,
            "max": 1,
        },
        {
            "sample": "a",
            "shape": [4, 5, 6],
            "voxel_size": [2, 1, 1],
            "dtype": "float32",
            "min": -1.5,
            "max": 2.5,
        },
    ]
    table = summary_table(
        images, {"a": {"roi_fraction": 0.5, "warnings": ["w1", "w2"]}}, {"a": "val"}
    )
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert list(table["sample"]) == ["b", "a"]  # the order of the ingest summaries
    b, a = table.iloc[0], table.iloc[1]
    assert b["split"] == "" and math.isnan(b["roi_fraction"]) and b["roi_warnings"] == ""
    assert b["voxel_size_um"] == "1,0.5,0.25" and a["shape_zyx"] == "4x5x6"
    assert a["split"] == "val" and a["roi_warnings"] == "w1; w2"
    assert np.isnan(a["min_batch_size"])
    assert list(summary_table([]).columns) == list(SUMMARY_COLUMNS)
