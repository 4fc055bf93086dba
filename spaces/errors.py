"""User-facing errors raised by spaces/."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class SpaceError(ValueError):
    """A malformed space or policy file: the message names the file, the key and the fix."""


def symlink_loop(path: str | Path) -> bool:
    """Whether `path` cannot be resolved because its symlinks lead back to themselves.

    `Path.exists()` says False for such a path, as for a missing one; a message that calls it
    missing sends the user looking for the wrong problem.
    """
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def loop_message(path: str | Path, what: str) -> str:
    """One line for a `what` (e.g. "policy file") given as a symlink loop."""
    return (f"{path}: a symlink loop (its links lead back to themselves), so the {what} cannot "
            f"be read; point the link at the real file, or pass the file's own path")
