"""The SLURM site check (fewlabel.slurm): sinfo parsing, the problems it names, and the
workflow's onstart hook stopping a run before any sbatch (fake sinfo/sbatch, no cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewlabel.slurm import Node, Request, job_request, parse_sinfo, site_problems

REPO = Path(__file__).resolve().parents[1]

SINFO = """\
cpu*|64|256000|(null)
cpu*|32|128000|(null)
gpu|32|512000|gpu:a100:4(S:0-1)
gpu|16|192000|gpu:v100:2,shard:8
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


@pytest.mark.workflow
def test_unadapted_profile_stops_before_any_sbatch(tmp_path):
    """The shipped profile (partitions cpu/gpu) on a cluster whose sinfo lists only `main`:
    the run stops at onstart naming the site block; sbatch is never called."""
    from test_workflow import make_workdir

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    for tool, body in {
        "sinfo": "printf 'main*|2|20000|gpu:1\\n'",
        "sbatch": f'echo "$@" >> {calls}; exit 1',
        "squeue": "exit 0",
        "sacct": "exit 1",
        "scontrol": "exit 1",
    }.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    workdir = make_workdir(tmp_path / "w")
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
            str(REPO / "profiles" / "slurm"),
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
    assert not (workdir / "demo_data").exists()
