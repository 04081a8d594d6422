"""Torch run-time setup for the training and inference stages: threads, seeds, device."""

from __future__ import annotations

import os


def configure_torch(threads: int, seed: int, *, deterministic: bool = True) -> str:
    """Set torch threads and seeds; return the device name ('cuda' if available, else 'cpu')."""
    import torch

    from fewlabel.training import set_seed

    torch.set_num_threads(max(1, int(threads)))
    set_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return "cuda" if torch.cuda.is_available() else "cpu"
