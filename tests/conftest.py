"""Shared fixtures: tiny synthetic volumes on disk, repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("OMP_NUM_THREADS", "1")

# The tiny default chain runs once per session (tests/test_workflow.py and others read it;
# tests/test_slurm.py compares its SLURM run with it), with the threads profiles/slurm gives a
# cluster job on a 2-CPU site: each rule's set-threads, capped at RUN_MAX_THREADS.
RUN_MAX_THREADS = 2


def run_thread_args(max_threads: int = RUN_MAX_THREADS) -> list[str]:
    """``--max-threads N --set-threads rule=n ...`` as in profiles/slurm (last on a command
    line: ``--set-threads`` takes every word after it)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    threads = [f"{rule}={n}" for rule, n in profile["set-threads"].items()]
    return ["--max-threads", str(max_threads), "--set-threads", *threads]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep torch single-threaded in tests (2-core CI, parallel helpers)."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One real `snakemake --cores 2` run of the default chain on tiny demo data (TINY_CONFIG),
    shared by the session. Tests that change it restore it or run last (test_workflow.py)."""
    from test_workflow import make_workdir, snakemake

    workdir = make_workdir(tmp_path_factory.mktemp("run"))
    # a hang guard only (about 2 min on 2 idle cores; much longer on a loaded machine)
    result = snakemake(workdir, "--cores", "2", *run_thread_args(), timeout=3600)
    (workdir / "snakemake.out").write_text(result.stdout + result.stderr)  # what the user saw
    return workdir
