"""Where a run writes: the default output directory, and whether a path can be created.

Both commands (`search.run`, `search.evaluate`) use these, so their defaults and their refusals
read the same.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from search.errors import SearchError

DEFAULT_RUNS = Path("augsearch-runs")


def default_output(name: str) -> Path:
    """A new output directory when none is given: `./augsearch-runs/<name>-<time>` (absolute)."""
    return (DEFAULT_RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()


def check_creatable(path: Path, what: str, fix: str) -> None:
    """`path` can be created: its nearest existing ancestor is a directory that takes a new one.

    Nothing is left behind; `what` names the path in the message, `fix` says what to pass
    instead.
    """
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SearchError(f"cannot create {what}: {parent} is a file; {fix}")
    why = cannot_write(parent)
    if why:
        raise SearchError(f"cannot create {what}: {parent} is not writable ({why}); {fix}")


def cannot_write(directory: Path) -> str | None:
    """Why nothing can be created in `directory`, or None when something can.

    Tried by creating an empty folder there and removing it: `os.access` answers yes to root
    wherever the permission bits allow, also where the file system itself refuses (sysfs,
    procfs: "Operation not permitted").
    """
    if not os.access(directory, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        probe = tempfile.mkdtemp(prefix=".augsearch-probe-", dir=directory)
    except OSError as err:
        return (err.strerror or type(err).__name__).lower()
    os.rmdir(probe)
    return None
