"""Errors raised by children/: user data problems and diverging training runs."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset that cannot be used: one line naming the problem and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the search turns this into a failed trial."""
