"""Logging setup and a log-friendly progress reporter (no extra dependency)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to ``log_file`` when given (rule logs), else to stderr."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(stream)
    else:  # rules also send stderr to the same file (2>> log): one handler avoids duplicates
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="a")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(file_handler)


def progress(
    items: Iterable[T],
    total: int | None = None,
    desc: str = "",
    logger: logging.Logger | None = None,
    every_s: float = 5.0,
) -> Iterator[T]:
    """Yield ``items``, logging ``desc: i/total (pct) elapsed, eta`` at most every ``every_s`` s.

    Log lines (not carriage-return bars) so that per-rule log files stay readable.
    """
    log = logger or logging.getLogger("fewlabel.progress")
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = last = time.monotonic()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= every_s or (total is not None and count == total):
            last = now
            elapsed = now - start
            if total:
                eta = elapsed / count * (total - count)
                log.info(
                    "%s %d/%d (%.0f%%) %.1fs elapsed, eta %.1fs",
                    desc,
                    count,
                    total,
                    100.0 * count / total,
                    elapsed,
                    eta,
                )
            else:
                log.info("%s %d done, %.1fs elapsed", desc, count, elapsed)
