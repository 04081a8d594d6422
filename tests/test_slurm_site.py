"""The SLURM site check (fewlabel.slurm): sinfo parsing, the problems it names, and the
workflow's onstart hook stopping a run before any sbatch (fake sinfo/sbatch, no cluster)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewlabel.slurm import (
    PREDICT_MINUTES,
    TRAIN_MINUTES,
    Node,
    Request,
    detection_minutes,
    detection_passes,
    job_request,
    parse_sinfo,
    parse_time_limit,
    site_problems,
)

REPO = Path(__file__).resolve().parents[1]

SINFO = """\
cpu*|64|256000|(null)|infinite
cpu*|32|128000|(null)|infinite
gpu|32|512000|gpu:a100:4(S:0-1)|2-00:00:00
gpu|16|192000|gpu:v100:2,shard:8|1-00:00:00
"""


def test_parse_sinfo_reads_partitions_cpus_memory_and_gpus():
    nodes = parse_sinfo(SINFO + "\n")
    assert [n.partition for n in nodes] == ["cpu", "cpu", "gpu", "gpu"]
    assert nodes[0].default and not nodes[2].default
    assert (nodes[0].cpus, nodes[0].mem_mb, nodes[0].gpus()) == (64, 256000, 0)
    assert nodes[2].gpus() == 4 and nodes[2].gpus("a100") == 4 and nodes[2].gpus("v100") == 0
    assert nodes[3].gres == ("gpu:v100:2", "shard:8") and nodes[3].gpu_models() == {"v100"}
    assert Node("main", 2, 100, ("gpu:1",)).gpus() == 1
    assert Node("main", 2, 100, ("gpu",)).gpus() == 1
    assert [n.max_minutes for n in nodes] == [None, None, 2880, 1440]
    assert parse_sinfo("main*|2|100|(null)")[0].max_minutes is None  # no %l column


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("30", 30),
        ("30:00", 30),
        ("30:01", 31),  # seconds round up: a job may use the whole limit
        ("12:00:00", 720),
        ("1-00:00:00", 1440),
        ("2-06", 3240),
        ("1-01:30", 1530),
    ],
)
def test_time_limits_in_every_slurm_format(text, minutes):
    assert parse_time_limit(text) == minutes


def test_detection_time_limits_scale_with_ensemble_and_mirroring(tmp_path):
    plain = {"train": {"ensemble": 1, "mirror": False}}
    assert detection_passes(plain) == (1, 1)
    assert detection_minutes(plain, "train_detector") == TRAIN_MINUTES
    assert detection_minutes(plain, "predict_volume_slab") == PREDICT_MINUTES
    careful = {"train": {"ensemble": 3, "mirror": True, "flip_z": False}}
    assert detection_passes(careful) == (3, 12)  # 3 networks x 4 y/x flips
    assert detection_minutes(careful, "train_detector", attempt=2) == 2 * 3 * TRAIN_MINUTES
    assert detection_minutes(careful, "predict_volume") == 12 * PREDICT_MINUTES
    assert detection_passes({"train": {"ensemble": 2, "mirror": True, "flip_z": True}}) == (2, 16)
    # a reused model folder predicts with its own composition, whatever the train section says
    (tmp_path / "model.json").write_text(
        '{"format": 1, "name": "dm_detnet3d", "kwargs": {}, '
        '"inference": {"members": 2, "mirror_axes": ["z", "y", "x"]}}'
    )
    reused = {**careful, "model": str(tmp_path)}
    assert detection_minutes(reused, "predict_volume") == 16 * PREDICT_MINUTES
    (tmp_path / "model.json").write_text('{"format": 1, "name": "dm_detnet3d", "kwargs": {}}')
    assert detection_minutes(reused, "predict_volume") == PREDICT_MINUTES  # one network
    (tmp_path / "model.json").write_text("{not json")  # the prediction job names that error
    assert detection_minutes(reused, "predict_volume") == 12 * PREDICT_MINUTES
    with pytest.raises(ValueError, match="segment_roi"):
        detection_minutes(plain, "segment_roi")


def test_requests_that_fit_have_no_problems():
    nodes = parse_sinfo(SINFO)
    requests = [
        Request("segment_roi", "cpu", 64, 200000),
        Request("ingest_volume", None, 1, 8000),  # default partition
        Request("train_detector", "gpu", 8, 32000, gpus=1),
        Request("predict_volume", "gpu", 32, 500000, gpus=4, gpu_model="a100"),
    ]
    assert site_problems(requests, nodes) == []


def test_each_problem_names_the_site_value_to_change():
    nodes = parse_sinfo(SINFO)
    problems = site_problems(
        [
            Request("train_detector", "gpus", 8, 1000, gpus=1),
            Request("predict_volume", "gpus", 8, 1000, gpus=1),
            Request("pretrain_isl", "cpu", 8, 1000, gpus=1),
            Request("train_segmenter", "gpu", 8, 1000, gpus=1, gpu_model="h100"),
            Request("predict_isl", "gpu", 8, 600000, gpus=1, gpu_model="h100"),
            Request("segment_roi", "cpu", 128, 300000),
        ],
        nodes,
    )
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert (
        "partition 'gpus' does not exist on this cluster (partitions: cpu, gpu): set "
        "gpu_partition in" in text
    )
    assert "(rules: predict_volume, train_detector)" in text  # grouped, one line
    assert "no node of partition 'cpu' has 1 GPU(s)" in text and "gpu_partition" in text
    assert "GPU model 'h100' (models there: a100, v100): set gpu_model" in text
    assert "128 CPUs asked for" in text and "set max_cpus in" in text and "to 64 or less" in text
    assert "300000 MB" in text and "set max_mem_mb in" in text and "256000 or less" in text
    assert "600000 MB" in text and "'gpu' have at most 512000 MB" in text  # model unknown too
    assert "(rules: predict_isl, train_segmenter)" in text
    assert all("profiles/slurm/config.yaml" in line for line in problems)


def test_a_job_longer_than_its_partition_allows_is_named():
    nodes = parse_sinfo(SINFO)
    fits = [Request("train_detector", "gpu", 8, 1000, gpus=1, minutes=2880)]  # the a100 node
    assert site_problems(fits, nodes) == []
    assert site_problems([Request("segment_roi", "cpu", 8, 1000, minutes=10**6)], nodes) == []
    (problem,) = site_problems(
        [
            Request("train_detector", "gpu", 8, 1000, gpus=1, minutes=4320),
            Request("predict_volume", "gpu", 8, 1000, gpus=1, minutes=4320),
        ],
        nodes,
    )
    assert "4320 min asked for, but partition 'gpu' allows at most 2880 min" in problem
    assert "runtime: 2880 (or less) under set-resources in profiles/slurm" in problem
    assert "a partition with a longer limit" in problem
    assert "(rules: predict_volume, train_detector)" in problem
    # only the nodes with the asked-for GPU model count: the v100 node allows one day
    (problem,) = site_problems(
        [Request("train_detector", "gpu", 8, 1000, gpus=1, gpu_model="v100", minutes=2000)],
        nodes,
    )
    assert "2000 min asked for, but partition 'gpu' allows at most 1440 min" in problem
    assert "detection.train.ensemble" in problem and "train_detector" in problem


def test_partition_lists_and_unevaluated_resources():
    nodes = parse_sinfo(SINFO)
    assert site_problems([Request("x", "cpu,gpu", 32, 500000)], nodes) == []
    (problem,) = site_problems([Request("x", "cpu,big", 1, 10)], nodes)
    assert "partition 'big' does not exist" in problem

    class Job:  # a Snakemake job whose memory is not known yet (TBD) and a partition list
        threads = 3
        rule = type("Rule", (), {"name": "r"})
        resources = {"mem_mb": "<TBD>", "slurm_partition": "cpu,gpu", "gpu": 0}

    assert job_request(Job()) == Request("r", "cpu,gpu", 3, None)


def test_no_default_partition_and_no_partition_requested():
    nodes = [Node("a", 4, 1000), Node("b", 4, 1000)]
    (problem,) = site_problems([Request("x", None, 1, 10)], nodes)
    assert "no default partition" in problem and "partitions: a, b" in problem


def run_with_fake_slurm(
    tmp_path: Path, sinfo: str, profile: Path, config: dict | None = None
) -> tuple[str, Path]:
    """The workflow under ``--executor slurm`` with fake SLURM tools (sinfo prints ``sinfo``,
    sbatch records its calls and fails): (output, sbatch call log); the run must fail."""
    from test_workflow import make_workdir

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    for tool, body in {
        "sinfo": f"printf '{sinfo}\\n'",
        "sbatch": f'echo "$@" >> {calls}; exit 1',
        "squeue": "exit 0",
        "sacct": "exit 1",
        "scontrol": "exit 1",
    }.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    workdir = make_workdir(tmp_path / "w", config)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    result = subprocess.run(
        [
            "timeout",
            "-k",
            "10",
            "300",
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "--workflow-profile",
            str(profile),
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    output = result.stdout + result.stderr
    assert result.returncode not in (0, 124, 137), output[-4000:]
    assert not (workdir / "demo_data").exists()
    return output, calls


@pytest.mark.workflow
def test_unadapted_profile_stops_before_any_sbatch(tmp_path):
    """The shipped profile (partitions cpu/gpu) on a cluster whose sinfo lists only `main`:
    the run stops at onstart naming the site block; sbatch is never called."""
    output, calls = run_with_fake_slurm(
        tmp_path, "main*|2|20000|gpu:1|infinite", REPO / "profiles" / "slurm"
    )
    assert "the SLURM profile does not fit this cluster (nothing was submitted)" in output
    assert (
        "partition 'cpu' does not exist on this cluster (partitions: main): set cpu_partition"
        in output
    )
    assert (
        "partition 'gpu' does not exist on this cluster (partitions: main): set gpu_partition"
        in output
    )
    assert "train_detector" in output
    assert not calls.exists(), calls.read_text()


@pytest.mark.workflow
def test_an_ensemble_longer_than_the_partition_limit_stops_before_any_sbatch(tmp_path):
    """A 3-network ensemble asks train_detector for 3 x 720 min (the rule's own runtime,
    through Snakemake's job resources); a one-day partition stops it at onstart, naming the
    rule and the profile line; the 3-network prediction (3 x 240 min) fits and is not named."""
    from slurm_profile import with_site
    from test_workflow import TINY_CONFIG

    site = {"cpu_partition": "main", "gpu_partition": "main", "max_cpus": 2, "max_mem_mb": 16000}
    profile = with_site(site, tmp_path / "profile")
    config = copy.deepcopy(TINY_CONFIG)
    config.setdefault("detection", {}).setdefault("train", {})["ensemble"] = 3
    output, calls = run_with_fake_slurm(tmp_path, "main*|2|20000|gpu:1|1-00:00:00", profile, config)
    assert "the SLURM profile does not fit this cluster (nothing was submitted)" in output
    expected = f"{3 * TRAIN_MINUTES} min asked for, but partition 'main' allows at most 1440 min"
    assert expected in output, output[-4000:]
    assert "(rules: train_detector)" in output
    assert "predict_volume" not in output.split(expected)[1].split("\n")[0]
    assert not calls.exists(), calls.read_text()
