"""Provenance records shared by stages: versions, git commit, checksums, JSON output."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


def package_versions() -> dict[str, str]:
    """Versions of Python and the scientific stack (for provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("fewlabel", "numpy", "scipy", "scikit-image", "tifffile", "zarr", "pandas",
                 "torch", "snakemake", "matplotlib", "jinja2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(cwd: str | Path = ".") -> str:
    """The current git commit of the workflow checkout (or 'unknown')."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def checksum(path: str | Path, *, max_files: int = 10000) -> str:
    """SHA-256 of a file, or of a directory's files (names + contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files: Iterable[Path] = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for index, file in enumerate(files):
        if index >= max_files:
            break
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def provenance(config: dict[str, Any] | None = None, inputs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """A provenance record: time, versions, git commit, config, input checksums."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "config": config or {},
        "inputs": {str(p): checksum(p) for p in inputs if Path(p).exists()},
    }


def write_json(data: Any, path: str | Path) -> None:
    """Write JSON atomically (pretty, sorted keys)."""
    from fewlabel.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
