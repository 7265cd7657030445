"""Errors that reach the user as one line and exit code 2 (see `plmkit.cli`)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or arguments: shown as one line, exit code 2.

    Name the file, the line (when there is one) and the problem, e.g.
    ``UserError("corpus.txt:12: invalid UTF-8")``.
    """


def where(path: object, line: int | None = None) -> str:
    """Format a location as ``path`` or ``path:line`` for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint; the CLI exits with `exit_code`
    (128 + the signal number: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
