"""Errors a user can fix, and how every command line reports them: one line, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from children.errors import DataError
from spaces.errors import SpaceError


class SearchError(ValueError):
    """A bad search request: unknown searcher, impossible resources, unreachable tracker..."""


class SearchFinished(Exception):
    """`--resume` of a search that already finished: nothing to do, and no error. The CLIs
    print its one line and exit 0; `search.search(resume=True)` raises it."""


USER_ERRORS: tuple[type[Exception], ...] = (SpaceError, SearchError, DataError)


def run_cli(command: Callable[[], int], interrupted: str) -> int:
    """Run a CLI body: a user error prints one line and returns 2, Ctrl-C prints `interrupted`
    and returns 130, a finished search asked to resume prints one line and returns 0; anything
    else is a bug and keeps its traceback."""
    try:
        return command()
    except SearchFinished as done:
        print(f"augsearch: {done}", flush=True)
        return 0
    except USER_ERRORS as err:
        print(f"augsearch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"augsearch: {interrupted}", file=sys.stderr)
        return 130
