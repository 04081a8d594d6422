"""Atomic outputs: write to a temporary sibling path, rename to the final name on success.

Writers may register work to run when an output is complete (:func:`on_commit`; e.g. the
multiscale pyramid of an OME-Zarr, built from the finished full-resolution array): it runs
on the temporary path, after the ``with`` block succeeded and before the rename, so a
failure there also leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from fewlabel.errors import OutputError

log = logging.getLogger(__name__)

#: open atomic temporaries (absolute paths) -> callbacks to run when their block succeeds
_PENDING: dict[Path, list[Callable[[], None]]] = {}
_PENDING_LOCK = threading.Lock()


def on_commit(path: str | Path, callback: Callable[[], None]) -> bool:
    """Run ``callback()`` when the :func:`atomic_path` block whose temporary is ``path`` (or
    contains it) succeeds, before its rename; callbacks run in registration order.

    Returns False (and registers nothing) when ``path`` is not inside an open atomic
    temporary; the caller then does the work itself.
    """
    target = Path(path).absolute()
    with _PENDING_LOCK:
        for tmp, callbacks in _PENDING.items():
            if target == tmp or tmp in target.parents:
                callbacks.append(callback)
                return True
    return False


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
    the output and the fix instead of a raw storage traceback. Callbacks registered with
    :func:`on_commit` run after the block, before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in temporary_siblings(final):
        log.info("removing %s left by an interrupted earlier attempt", stale)
        _remove(stale)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    key = tmp.absolute()
    with _PENDING_LOCK:
        _PENDING[key] = []
    try:
        yield tmp
        with _PENDING_LOCK:
            callbacks = _PENDING.pop(key, [])
        for callback in callbacks:
            callback()
    except BaseException as exc:
        with _PENDING_LOCK:
            _PENDING.pop(key, None)
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
