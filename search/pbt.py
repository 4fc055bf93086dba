"""Population-based augmentation (PBA-style) dimensions for Tune's PBT scheduler.

PBT perturbs continuous values by multiplying them, so categorical op choices are given as
lists (PBT moves to a neighbouring choice or resamples), never as `tune.choice`.
"""

from __future__ import annotations

from typing import Any

from search.compile import flat_dimensions
from spaces.schema import Space


def mutations(space: Space, tune: Any) -> dict[str, Any]:
    """`hyperparam_mutations`: op slots as lists, magnitudes/probabilities as uniform domains."""
    out: dict[str, Any] = {}
    for dim in flat_dimensions(space):
        out[dim.name] = list(dim.choices) if dim.categorical else tune.uniform(dim.low, dim.high)
    return out


def initial_space(space: Space, tune: Any) -> dict[str, Any]:
    """The starting population: every dimension sampled at random (PBA starts from random)."""
    out: dict[str, Any] = {}
    for dim in flat_dimensions(space):
        out[dim.name] = (tune.choice(list(dim.choices)) if dim.categorical
                         else tune.uniform(dim.low, dim.high))
    return out
