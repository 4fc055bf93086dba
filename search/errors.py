"""Errors a user can fix; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from children.errors import DataError
from spaces.errors import SpaceError


class SearchError(ValueError):
    """A bad search request: unknown searcher, impossible resources, unreachable tracker..."""


USER_ERRORS: tuple[type[Exception], ...] = (SpaceError, SearchError, DataError)
