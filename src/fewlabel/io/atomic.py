"""Atomic outputs: write to a temporary sibling path, rename to the final name on success."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` only if the block succeeds.

    Works for files and directories (Zarr stores). On failure the temporary path is removed,
    so no half-written output ever carries the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.exists() or final.is_symlink():
        _remove(final)
    os.replace(tmp, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
