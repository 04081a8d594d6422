"""Real SLURM: the tiny workflow (TINY_CONFIG of test_workflow) through `--executor slurm` on the
one-node test cluster of ../shared/cluster (SLURM 22.05, munge, one fake GPU), which .ci/run
starts before `make test` and stops after; skipped with the reason when no cluster answers.

One run of the shipped profiles/slurm with a test site block (the cluster's partition, no GPU
model, CPUs and memory within the node). A wrapper `sbatch` first on PATH records each
submission: the arguments the plugin passed and SLURM's own record of the job
(`scontrol show job`, taken right after submission, while the job is surely known). Checks:
every job succeeded, bookkeeping rules never went through sbatch, exactly the GPU rules got a
GPU, CPUs / memory / partition / time limit are what the profile says, and the points and
metric tables equal those of the session's local run (tests/conftest.py `finished_run`: the
same config and threads, run while the SLURM jobs wait on status polls); an unadapted site
block stops before any sbatch."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_thread_args
from slurm_profile import expected_request, gpu_rules, local_rules, render, with_site
from test_workflow import make_workdir

from fewlabel.slurm import SINFO, parse_sinfo

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO.parent / "shared" / "cluster"
RUN_LIMIT_S = 1500  # `timeout -k` around snakemake: the plugin can hang and ignores SIGTERM
# required on the test cluster (no slurmdbd: sacct fails; the default 40 s first poll is slow)
CI_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--retries",
    "0",
    "--latency-wait",
    "5",
]
COMPARED = ["results/points/**/*.csv", "results/evaluate/**/*.tsv", "results/evaluate/**/*.csv"]


def cluster_nodes():
    """(nodes, None) when a SLURM cluster with a GPU node answers, else (None, reason)."""
    start = f"start one with {CLUSTER / 'start_cluster.sh'} (as root; .ci/run does)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return None, "snakemake-executor-plugin-slurm is not installed (make setup)"
    for tool in ("sbatch", "sinfo", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            return None, f"no SLURM cluster ({tool} not found): {start}"
    try:
        result = subprocess.run(SINFO, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, f"no SLURM cluster answers (sinfo timed out): {start}"
    nodes = parse_sinfo(result.stdout) if result.returncode == 0 else []
    if not nodes:
        last = (result.stderr.strip().splitlines() or ["no nodes"])[-1][:150]
        return None, f"no SLURM cluster answers ({last}): {start}"
    if not any(node.gpus() for node in nodes):
        return None, "the SLURM cluster has no node with a GPU GRES"
    return nodes, None


NODES, SKIP_REASON = cluster_nodes()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.workflow,
    pytest.mark.skipif(NODES is None, reason=SKIP_REASON or ""),
]

SHIM = """#!{python}
# Test wrapper around sbatch: pass through, then record the arguments and scontrol's record.
import json, os, shutil, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
path = os.pathsep.join(
    p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p or ".") != here
)
result = subprocess.run(
    [shutil.which("sbatch", path=path), *sys.argv[1:]], stdin=sys.stdin,
    capture_output=True, text=True,
)
sys.stdout.write(result.stdout)
sys.stderr.write(result.stderr)
record = {{"argv": sys.argv[1:], "rc": result.returncode, "stdout": result.stdout}}
if result.returncode == 0:
    jobid = result.stdout.strip().split(";")[0]
    record["jobid"] = jobid
    record["scontrol"] = subprocess.run(
        ["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True
    ).stdout
with open({log!r}, "a") as handle:
    handle.write(json.dumps(record) + "\\n")
sys.exit(result.returncode)
"""


def site_for(nodes) -> dict:
    """The site block for this cluster: its (GPU) partition for both, no GPU model, at most 2
    CPUs (so the local reference run uses the same threads) and half a node's memory."""
    node = max((n for n in nodes if n.gpus()), key=lambda n: (n.default, n.mem_mb))
    return {
        "cpu_partition": node.partition,
        "gpu_partition": node.partition,
        "gpu_model": "",
        "account": "",
        "max_cpus": min(2, node.cpus),
        "max_mem_mb": min(12000, node.mem_mb // 2),
    }


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def start_on_slurm(workdir: Path, profile: Path) -> subprocess.Popen:
    """Start `snakemake --workflow-profile <profile> --executor slurm` under `timeout -k`, with
    the recording sbatch first on PATH (output to workdir/snakemake.out)."""
    shim_dir = workdir / "shim"
    shim_dir.mkdir()
    (shim_dir / "sbatch").write_text(
        SHIM.format(python=sys.executable, log=str(workdir / "sbatch.jsonl"))
    )
    (shim_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = snakemake_cmd(workdir, "--workflow-profile", str(profile), *CI_ARGS)
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(
            ["timeout", "-k", "30", str(RUN_LIMIT_S), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def finish_on_slurm(workdir: Path, process: subprocess.Popen) -> tuple[int, str, list]:
    """Wait for the run; its return code, output and sbatch records. On failure, cancel
    whatever it left queued."""
    try:
        returncode = process.wait(timeout=RUN_LIMIT_S + 120)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.wait()
    log = workdir / "sbatch.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    leftover = [r["jobid"] for r in records if r.get("jobid")]
    if returncode != 0 and leftover:  # never leave our jobs queued on the cluster
        subprocess.run(["scancel", *leftover], capture_output=True)
    return returncode, (workdir / "snakemake.out").read_text(), records


@pytest.fixture(scope="module")
def site() -> dict:
    return site_for(NODES)


@pytest.fixture(scope="module")
def profile(tmp_path_factory, site) -> Path:
    return with_site(site, tmp_path_factory.mktemp("profile"))


@pytest.fixture(scope="module")
def slurm_started(tmp_path_factory, profile):
    """The SLURM run, started first: the session's local default chain (`finished_run`, the
    reference, same config and threads) then runs while this one waits on its status polls."""
    workdir = make_workdir(tmp_path_factory.mktemp("slurm"))
    process = start_on_slurm(workdir, profile)
    yield workdir, process, time.monotonic()
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def slurm_run(slurm_started, finished_run):
    workdir, process, start = slurm_started
    returncode, output, records = finish_on_slurm(workdir, process)
    print(f"slurm run: {time.monotonic() - start:.0f} s, {len(records)} sbatch jobs")
    assert returncode == 0, f"rc {returncode}:\n{output[-6000:]}"
    return workdir, records, output


def submitted(records) -> list[tuple[str, list[str], str]]:
    """(rule, sbatch arguments, scontrol record) of every submission."""
    jobs = []
    for record in records:
        argv = record["argv"]
        comment = argv[argv.index("--comment") + 1]
        rule = re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))
        jobs.append((rule, argv, record.get("scontrol", "")))
    return jobs


def option(argv: list[str], name: str) -> str | None:
    """Value of `name VALUE` or `name=VALUE` in the sbatch arguments."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def field(record: str, name: str) -> str | None:
    found = re.search(rf"(?:^|\s){re.escape(name)}=(\S*)", record)
    return found.group(1) if found else None


def test_every_job_succeeded_and_bookkeeping_stayed_local(slurm_run):
    workdir, records, output = slurm_run
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", output)
    assert done and done[-1][0] == done[-1][1], output[-3000:]
    assert records and all(r["rc"] == 0 and r.get("scontrol") for r in records), records[:3]
    rules = {rule for rule, _, _ in submitted(records)}
    assert not rules & local_rules(), f"bookkeeping rules went through sbatch: {rules}"
    ran_locally = set(re.findall(r"^localrule (\w+):", output, re.MULTILINE))
    assert local_rules() <= ran_locally, ran_locally
    assert {"train_detector", "predict_volume_slab", "segment_roi", "build_report"} <= rules
    for rule, argv, scontrol in submitted(records):  # the planned job is the recorded job
        assert field(scontrol, "Comment") == option(argv, "--comment"), (rule, scontrol)
    assert (workdir / "results" / "report" / "report.html").exists()


def test_exactly_the_gpu_rules_requested_a_gpu(slurm_run):
    _, records, _ = slurm_run
    gpu = gpu_rules()
    jobs = submitted(records)
    assert {rule for rule, _, _ in jobs} & gpu and {rule for rule, _, _ in jobs} - gpu
    for rule, argv, scontrol in jobs:
        asked = option(argv, "--gpus")
        granted = field(scontrol, "TresPerJob")
        if rule in gpu:
            assert asked == "1" and granted == "gres:gpu:1", (rule, asked, scontrol)
        else:
            assert asked is None and granted is None, (rule, asked, scontrol)


def test_threads_memory_partition_and_time_reach_sbatch_as_the_profile_says(slurm_run, profile):
    workdir, records, _ = slurm_run
    rendered = render(profile)
    seen = set()
    detection = yaml.safe_load((workdir / "config.yaml").read_text()).get("detection")
    for rule, argv, scontrol in submitted(records):
        want = expected_request(rendered, rule, detection)
        asked = {
            "partition": option(argv, "-p"),
            "cpus": int(option(argv, "--cpus-per-task")),
            "mem_mb": int(option(argv, "--mem")),
            "runtime": int(option(argv, "-t")),
        }
        assert asked == {k: want[k] for k in asked}, (rule, asked, want)
        recorded = {
            "partition": field(scontrol, "Partition"),
            "cpus": int(field(scontrol, "CPUs/Task")),
            "mem_mb": int(field(scontrol, "MinMemoryNode").rstrip("M")),
            "runtime": minutes(field(scontrol, "TimeLimit")),
        }
        assert recorded == asked, (rule, recorded, scontrol)
        seen.add((rule, asked["cpus"], asked["mem_mb"]))
    # set-threads took effect (train_detector declares threads: 1), capped by max_cpus
    detector = expected_request(rendered, "train_detector")
    assert detector["cpus"] == rendered["max-threads"] > 1
    assert ("train_detector", detector["cpus"], detector["mem_mb"]) in seen
    assert len({mem for _, _, mem in seen}) > 1, "every job got the same memory"


def minutes(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + mins


def test_outputs_equal_a_local_run(slurm_run, finished_run, profile):
    """The session's local run used the threads this profile gives each cluster job."""
    rendered = render(profile)
    local = run_thread_args(rendered["max-threads"])
    assert local == run_thread_args(), (
        f"the local reference ran with {run_thread_args()}, this site gives {local}"
    )
    workdir, local_run = slurm_run[0], finished_run
    compared = sorted(
        {p.relative_to(local_run) for pattern in COMPARED for p in local_run.glob(pattern)}
    )
    assert any("points.csv" in str(p) for p in compared) and any(
        "summary.tsv" in str(p) for p in compared
    ), compared
    for relative in compared:
        assert (workdir / relative).read_bytes() == (local_run / relative).read_bytes(), (
            f"{relative} differs between the SLURM run and the local run"
        )


def test_unadapted_site_stops_before_any_sbatch(tmp_path, site):
    """A CPU partition, a GPU model and (on nodes under 32 GB) memory this cluster does not
    have: stopped by the site check (real sinfo), naming the site values; nothing submitted."""
    node_mem = max(n.mem_mb for n in NODES if n.partition == site["gpu_partition"])
    wrong = with_site(
        {**site, "cpu_partition": "nope", "gpu_model": "a100", "max_mem_mb": node_mem + 1000},
        tmp_path / "profile",
    )
    workdir = make_workdir(tmp_path / "w")
    returncode, output, records = finish_on_slurm(workdir, start_on_slurm(workdir, wrong))
    assert returncode not in (0, 124, 137), output[-4000:]
    assert "the SLURM profile does not fit this cluster (nothing was submitted)" in output
    assert "partition 'nope' does not exist" in output and "set cpu_partition" in output
    assert "GPU model 'a100'" in output and "set gpu_model" in output
    if node_mem + 1000 < 32000:  # the GPU rules ask for min(32000, max_mem_mb)
        assert f"{node_mem + 1000} MB of memory asked for" in output, output[-3000:]
        assert "set max_mem_mb" in output
    assert records == [], [shlex.join(r["argv"][:12]) for r in records]
