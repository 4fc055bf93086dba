"""User-facing errors raised by spaces/."""

from __future__ import annotations


class SpaceError(ValueError):
    """A malformed space or policy file: the message names the file, the key and the fix."""
