"""Provenance records shared by stages: versions, git commit, checksums, config snapshot,
JSON output."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


NOT_IN_ENVIRONMENT = "not in this rule's environment"
"""The version recorded for a package the writing process cannot import: under
``--sdm conda`` every rule runs in its own environment (``envs/*.yaml``), so e.g. the run
summary (io env) has no torch, while the training rules (torch env) have no snakemake."""

PROVENANCE_PACKAGES = (
    "fewlabel",
    "numpy",
    "scipy",
    "scikit-image",
    "tifffile",
    "zarr",
    "pandas",
    "torch",
    "snakemake",
    "matplotlib",
    "jinja2",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the scientific stack as importable by this process (for
    provenance); a package this environment lacks is recorded as :data:`NOT_IN_ENVIRONMENT`,
    not as absent from the run. fewlabel itself runs from the checkout (``PYTHONPATH``), so
    its version comes from the package, not from installed metadata."""
    from importlib.metadata import PackageNotFoundError, version

    import fewlabel

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PROVENANCE_PACKAGES:
        if name == "fewlabel":
            out[name] = fewlabel.__version__
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = NOT_IN_ENVIRONMENT
    return out


def environment() -> dict[str, Any]:
    """Which Python environment wrote a record: its interpreter and prefix (a conda env's
    folder under ``--sdm conda``), and the CPU it ran on (:func:`cpu`)."""
    return {
        "python_executable": sys.executable,
        "prefix": sys.prefix,
        "conda_env": os.environ.get("CONDA_PREFIX") or None,
        **cpu(),
    }


def cpu() -> dict[str, str | None]:
    """The CPU model and, where torch is loaded, the vector instructions its kernels use.

    A training run is bit-for-bit reproducible given its seed on one machine type; another
    CPU type runs other float kernels, and the weights drift apart over training (measured in
    ``benchmarks/real_spots``: the same commit and seed on two machine types), so a record
    names both."""
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    torch = sys.modules.get("torch")
    capability = torch.backends.cpu.get_cpu_capability() if torch is not None else None
    return {"cpu": model, "cpu_capability": capability}


def model_provenance(folder: str | Path) -> dict[str, Any]:
    """What a trained model folder's ``training.json`` says about the job that trained it:
    stage, device, time, git commit and that job's own environment and package versions."""
    folder = Path(folder)
    record: dict[str, Any] = {"folder": str(folder)}
    path = folder / "training.json"
    try:
        training = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        record["versions"] = f"not recorded (cannot read {path.name}: {type(exc).__name__})"
        return record
    if not isinstance(training, Mapping):
        record["versions"] = f"not recorded ({path.name} is not a JSON object)"
        return record
    trained = training.get("provenance") or {}
    record.update(
        {
            "stage": training.get("stage"),
            "device": training.get("device"),
            "created": trained.get("created"),
            "git_commit": trained.get("git_commit"),
            "environment": trained.get("environment"),
            "versions": trained.get("versions") or f"not recorded in {path.name}",
        }
    )
    return record


def git_commit(cwd: str | Path = ".") -> str:
    """The current git commit of the workflow checkout (or 'unknown')."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _files_in_order(path: Path) -> Iterator[Path]:
    """A directory's files, depth first, entries sorted by name (= ``sorted(path.rglob('*'))``
    order) without listing the whole tree first; symlinked folders are not followed."""
    with os.scandir(path) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_in_order(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def checksum_record(path: str | Path, *, max_files: int | None = None) -> dict[str, Any]:
    """SHA-256 of a file, or of a directory's files (relative names + contents, sorted), with
    what it covers: ``files`` and ``bytes`` hashed, ``files_total`` and ``truncated``.

    Everything is hashed, streaming, unless ``max_files`` is given; then the digest covers the
    first ``max_files`` files only, and the record says so (``truncated: true``, and the files
    left out are still counted in ``files_total``) with a logged warning, never silently.
    """
    path = Path(path)
    digest = hashlib.sha256()
    hashed = total = nbytes = 0
    files: Iterable[Path] = _files_in_order(path) if path.is_dir() else [path]
    for file in files:
        total += 1
        if max_files is not None and hashed >= max_files:
            continue  # counted, not hashed
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                nbytes += len(chunk)
        hashed += 1
    truncated = hashed < total
    if truncated:
        log.warning(
            "checksum of %s covers only the first %d of its %d files (max_files=%d); "
            "the record says truncated",
            path,
            hashed,
            total,
            max_files,
        )
    return {
        "sha256": digest.hexdigest(),
        "files": hashed,
        "bytes": nbytes,
        "files_total": total,
        "truncated": truncated,
    }


def checksum(path: str | Path, *, max_files: int | None = None) -> str:
    """SHA-256 of a file, or of a directory's files (names + contents, sorted); all files unless
    ``max_files`` (then a warning says the digest is partial; see :func:`checksum_record`)."""
    return str(checksum_record(path, max_files=max_files)["sha256"])


def provenance(
    config: dict[str, Any] | None = None,
    inputs: Iterable[str | Path] = (),
    *,
    models: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """A provenance record: time, versions, git commit, config, input checksums.

    ``versions`` are those of the process writing the record (``environment`` says which;
    packages it cannot import are :data:`NOT_IN_ENVIRONMENT`). ``inputs`` maps each
    existing input to the SHA-256 of all its bytes (every file of a folder);
    ``input_details`` says what each digest covers (files, bytes, truncated). ``models``
    (role -> trained model folder) adds each model's own training provenance
    (:func:`model_provenance`): the versions that trained it, from its ``training.json``.
    """
    records = {str(p): checksum_record(p) for p in inputs if Path(p).exists()}
    extra = {}
    if models is not None:
        extra["models"] = {role: model_provenance(folder) for role, folder in models.items()}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "environment": environment(),
        "git_commit": git_commit(),
        "config": config or {},
        "inputs": {p: r["sha256"] for p, r in records.items()},
        "input_details": {
            p: {k: v for k, v in r.items() if k != "sha256"} for p, r in records.items()
        },
        **extra,
    }


def write_config_snapshot(
    settings: Mapping[str, Any], output: str | Path, *, log_file: str | Path | None = None
) -> None:
    """Write the (validated) config ``settings`` as YAML atomically, keys in their order.

    Snakemake's config holds its own mapping/list types; they are written as plain YAML. When
    ``log_file`` is given, one line naming ``output`` is written there (rule record_config runs
    in Snakemake's own Python, without the stages' logging setup).
    """
    import yaml

    from fewlabel.io import atomic_path

    text = yaml.safe_dump(_plain(settings), sort_keys=False)
    with atomic_path(output) as tmp:
        Path(tmp).write_text(text)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        Path(log_file).write_text(f"config snapshot written to {output}\n")


def _plain(value: Any) -> Any:
    """Plain dicts/lists (YAML-safe) from any mappings/sequences of a config."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
