"""Errors a user can fix; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from spaces.errors import SpaceError


class SearchError(ValueError):
    """A bad search request: unknown searcher, impossible resources, unreachable tracker..."""


def _user_errors() -> tuple[type[Exception], ...]:
    from children.errors import DataError

    return (SpaceError, SearchError, DataError)


try:
    USER_ERRORS = _user_errors()
except ImportError:  # children not importable (should not happen in an install)
    USER_ERRORS = (SpaceError, SearchError)
