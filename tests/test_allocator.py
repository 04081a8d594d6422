"""The prediction process's allocator settings (runner.tune_allocator): large buffers are
reused from the heap instead of being mapped (and page-faulted) afresh on every batch."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys
import torch
from fewlabel.inference.runner import tune_allocator, _reserved
if sys.argv[1] == "tuned":
    tune_allocator()
    tune_allocator()  # the heap is reserved once per process
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(24):
    before = faults()
    x = torch.empty(40 << 18, dtype=torch.float32)  # 40 MiB: above glibc's mmap threshold
    x.fill_(1.0)
    del x
    counts.append(faults() - before)
print(json.dumps({"faults": counts, "reserved": list(_reserved)}))
"""


def run(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc allocator settings")
def test_large_buffers_are_reused_after_tune_allocator():
    plain, tuned = run("plain"), run("tuned")
    pages = (40 << 20) // 4096
    # without the settings every 40 MiB buffer is mapped afresh: one fault per 4 KiB page
    assert min(plain["faults"][1:]) > pages // 2
    # with them, the first buffers fault their pages in and later ones reuse them
    assert tuned["reserved"] == [512]
    assert sum(tuned["faults"][12:]) < pages // 2, tuned["faults"]
