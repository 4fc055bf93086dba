"""A registry of named plug-ins: what `search.strategies` (searchers) and `search.rewards`
(reward kinds) keep their entries in, as Ray Tune's searcher registry and timm's model registry
do. A plug-in registers itself when imported; an unknown name is a user error listing the names.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from search.errors import SearchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; `what` names an entry in messages ("reward kind"), `field` the setting
    a user writes it in ("reward.kind")."""

    def __init__(self, what: str, field: str) -> None:
        self.what, self.field = what, field
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name`; a name already taken is refused unless `replace`."""
        if not name:
            raise ValueError(f"{type(entry).__name__} has no name")
        if name in self._entries and not replace:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy one clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: Any) -> T:
        """The entry called `name`; an unknown name is a user error listing the valid ones."""
        found = self._entries.get(name) if isinstance(name, str) else None
        if found is None:
            raise SearchError(f"unknown {self.field} {name!r}; choose one of: "
                              f"{', '.join(self.names())}")
        return found
