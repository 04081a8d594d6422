"""Atomic outputs: write to a temporary sibling path, rename to the final name on success."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fewlabel.errors import OutputError

log = logging.getLogger(__name__)


def temporary_siblings(final: Path) -> list[Path]:
    """Temporaries of ``final`` left by earlier attempts (``.<name>.tmp-xxxxxxxx``)."""
    return sorted(final.parent.glob(f".{final.name}.tmp-*"))


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` only if the block succeeds.

    Works for files and directories (Zarr stores). On failure the temporary path is removed,
    so no half-written output ever carries the final name; temporaries that a killed job
    (``kill -9``, node failure) could not remove are removed by the next attempt (one job owns
    an output at a time: Snakemake locks it). A full disk raises :class:`OutputError` naming
    the output and the fix instead of a raw storage traceback.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in temporary_siblings(final):
        log.info("removing %s left by an interrupted earlier attempt", stale)
        _remove(stale)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    except BaseException as exc:
        _remove(tmp)
        if _disk_full(exc):
            raise OutputError(
                f"no space left on the device while writing '{final}'.",
                path=final.parent,
                fix=f"free disk space where '{final.parent}' lives (df -h) or "
                "point the workflow's working directory at a larger disk, "
                "then rerun; nothing half-written was kept.",
            ) from exc
        raise
    if final.exists() or final.is_symlink():
        _remove(final)
    os.replace(tmp, final)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) is ENOSPC/EDQUOT."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _remove(path: Path, attempts: int = 3) -> None:
    """Remove a file or folder; retried because storage threads may still be finishing."""
    for attempt in range(attempts):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not (path.exists() or path.is_symlink()):
            return
        time.sleep(0.2 * (attempt + 1))
    log.warning("could not remove %s; the next attempt will", path)
