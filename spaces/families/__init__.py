"""The policy-family registry, keyed by a space's `policy.family` (see `spaces.families.base`).

Built-ins: `subpolicies` (the default), `randaugment`, `trivialaugment`. A new family is one
module defining a `Family` and calling `register_family`; tests/spaces/test_family_contract.py
runs every registered family through one contract. The space's schema checks `policy.family`
against this registry when a space is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.errors import SpaceError
from spaces.families.base import Dim, Family
from spaces.families.randaugment import RandAugment
from spaces.families.subpolicies import SubPolicies
from spaces.families.trivialaugment import TrivialAugment

if TYPE_CHECKING:
    from spaces.schema import Space

__all__ = ["DEFAULT_FAMILY", "Dim", "Family", "family_names", "family_of", "get_family",
           "register_family", "unregister_family", "with_family"]

DEFAULT_FAMILY = SubPolicies.name
_FAMILIES: dict[str, Family] = {f.name: f for f in (SubPolicies(), RandAugment(),
                                                    TrivialAugment())}


def register_family(family: Family) -> None:
    """Add a family under its `name`; a taken name is refused."""
    if family.name in _FAMILIES:
        raise ValueError(f"a policy family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family


def unregister_family(name: str) -> None:
    """Remove a family (tests register toy ones); the default cannot be removed."""
    if name == DEFAULT_FAMILY:
        raise ValueError(f"the default family {DEFAULT_FAMILY!r} cannot be unregistered")
    _FAMILIES.pop(name, None)


def family_names() -> list[str]:
    """The registered families' names, built-ins first."""
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    """The family called `name`; an unknown one is one line listing the registered ones."""
    found = _FAMILIES.get(name)
    if found is None:
        raise SpaceError(f"unknown policy family {name!r}; registered families: "
                         f"{', '.join(_FAMILIES)}")
    return found


def family_of(space: Space) -> Family:
    """The family a space searches."""
    return get_family(space.policy.family)


def with_family(space: Space, family: str, **changes: Any) -> Space:
    """`space` searched in another policy family, with `changes` (`Space.replace` keys): the
    other families' sections dropped, the sub-policy settings at their defaults when leaving
    sub-policies (another family refuses them otherwise)."""
    moved: dict[str, Any] = {}
    if family != space.policy.family:
        moved = {"policy.family": family, "policy.randaugment": None,
                 "policy.trivialaugment": None}
        if space.policy.family == DEFAULT_FAMILY:
            moved.update({"policy.sub_policies": 5, "policy.ops_per_sub_policy": 2,
                          "policy.search_probability": True, "policy.probability": [0.0, 1.0]})
    return space.replace(**{**moved, **changes}) if moved or changes else space
