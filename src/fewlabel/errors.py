"""Project exceptions: user errors carry the sample, the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class FewlabelError(Exception):
    """An error caused by user input or configuration (not a bug).

    The message always names what is wrong and, where known, the sample, the file and how to fix it.
    """

    def __init__(
        self,
        problem: str,
        *,
        sample: str | None = None,
        path: str | Path | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.sample = sample
        self.path = None if path is None else str(path)
        self.fix = fix
        parts = []
        if sample is not None:
            parts.append(f"sample '{sample}'")
        if path is not None:
            parts.append(f"file '{path}'")
        where = (", ".join(parts) + ": ") if parts else ""
        message = where + problem
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class InputDataError(FewlabelError):
    """An input image, points file or mask is unreadable or invalid."""


class ConfigError(FewlabelError):
    """The configuration or the sample sheet is invalid."""


class ModelError(FewlabelError):
    """A model folder is missing, incomplete or incompatible."""


class OutputError(FewlabelError):
    """An output cannot be written (disk full, permissions)."""
