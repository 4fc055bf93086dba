"""The policy-family contract: a few searched numbers in, one `Policy` out.

A family (`policy.family` in a space) decides what a search searches and what one point of it
means. `subpolicies` searches every op, magnitude and probability of S sub-policies of K ops
(AutoAugment, DeepAugment); `randaugment` searches N, M and p (RandAugment); `trivialaugment` a
magnitude ceiling (TrivialAugment). A family gives:

- `dimensions(space)`: its unconditional search dimensions (PBT's flat dimensions, Tune's param
  space, the contract tests), each a `Dim` inside the space's declared ranges;
- `suggest(space, trial)`: the same numbers asked of an Optuna trial (define-by-run; by default
  one suggestion per dimension, in order);
- `decode(space, config)`: a flat config's numbers as a `Policy` (batch ops are the compiler's,
  `search.trials.compile`, shared by every family);
- `identity_config(space)`: a config that decodes to the base policy, when one exists (the base
  arm then teaches the searcher its reward);
- `describe(space)`: one line for the dry run.

Families never import torch or Ray; a family's settings (if any) are a section of the space's
`policy` named after it, validated by its own pydantic model (`settings_model`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import optuna
    from pydantic import BaseModel

    from spaces.policy import Policy
    from spaces.schema import Space


@dataclass(frozen=True)
class Dim:
    """One search dimension: a categorical over `choices`, an integer in [low, high]
    (`integer`), or a float in [low, high]."""

    name: str
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0
    integer: bool = False

    @property
    def categorical(self) -> bool:
        return bool(self.choices)

    def suggest(self, trial: optuna.Trial) -> Any:
        """This dimension asked of an Optuna trial."""
        if self.categorical:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high)


class Family(ABC):
    """A policy family: see the module docstring. Subclasses set `name` and `summary`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    settings_model: ClassVar[type[BaseModel] | None] = None

    def settings(self, space: Space) -> Any:
        """The family's settings: the space's `policy.<name>` section, or its defaults."""
        given = getattr(space.policy, self.name, None)
        if given is not None or self.settings_model is None:
            return given
        return self.settings_model()

    @abstractmethod
    def dimensions(self, space: Space) -> list[Dim]:
        """The family's search dimensions, unconditional (PBT perturbs them all)."""

    def suggest(self, space: Space, trial: optuna.Trial) -> None:
        """Ask an Optuna trial for the family's numbers (define-by-run)."""
        for dim in self.dimensions(space):
            dim.suggest(trial)

    def count_dimensions(self, space: Space) -> int:
        """Numbers searched at their most."""
        return len(self.dimensions(space))

    @abstractmethod
    def decode(self, space: Space, config: dict[str, Any]) -> Policy:
        """The policy a flat config's numbers mean (without batch ops); unknown keys ignored."""

    def identity_config(self, space: Space) -> dict[str, Any] | None:
        """A config decoding to the base policy (nothing added to crop/flip), if one exists."""
        return None

    @abstractmethod
    def describe(self, space: Space) -> str:
        """What the family searches in this space, in one line (the dry run)."""


def searched(value: tuple[float, float]) -> bool:
    """Whether a range is searched (low < high) or a fixed value (low == high)."""
    return value[0] < value[1]


def number(config: dict[str, Any], key: str, bounds: tuple[float, float]) -> float:
    """A searched number from a config, kept inside its range; the fixed value (the range's
    low end) when the range is one point or the config lacks it."""
    low, high = bounds
    value = config.get(key)
    if value is None or not searched(bounds):
        return float(low)
    return min(max(float(value), low), high)


def ranged(name: str, bounds: tuple[float, float], *, integer: bool = False) -> list[Dim]:
    """One dimension for a searched range, none for a fixed one."""
    if not searched(bounds):
        return []
    return [Dim(name, low=bounds[0], high=bounds[1], integer=integer)]


def text(bounds: tuple[float, float], fmt: str = "g") -> str:
    """A range for the dry run: `[0.1, 1] (searched)` or `0.5 (fixed)`."""
    if searched(bounds):
        return f"[{bounds[0]:{fmt}}, {bounds[1]:{fmt}}] (searched)"
    return f"{bounds[0]:{fmt}} (fixed)"
