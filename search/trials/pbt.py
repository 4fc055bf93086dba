"""Population-based augmentation (PBA, Ho et al. 2019) for Tune's PBT scheduler.

Ray's own explore multiplies continuous values by 0.8 or 1.2 and never clips, which walks a
probability or magnitude out of its declared range. PBA's explore replaces it: each value is
resampled with probability 0.2, else shifted by 0, 1, 2 or 3 steps (a tenth of its range) up or
down and kept inside its range (a whole number, such as RandAugment's N, by at least 1 per step);
an op slot is resampled with probability 0.2, else kept.
Magnitudes are searched as a level in [0, 1] that `search.trials.compile.decode` rescales into
the op's own range, so no value is ever clamped.

The explore draws from a generator seeded by the search seed, so a PBT search explores the same
values in the same order of calls; which trial PBT clones, and when, depends on how the trials
are timed (Ray's exploit is asynchronous), so a PBT search is not bit-reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search.trials.compile import Dim, flat_dimensions
from search.trials.config import with_fields
from spaces.schema import Space

RESAMPLE_PROBABILITY = 0.2  # PBA
SHIFTS = (0, 1, 2, 3)  # PBA: steps of a tenth of the range, up or down with equal chance
STEPS = 10


class Explore:
    """PBA's explore as Tune's `custom_explore_fn` (a class so Tune can pickle it)."""

    def __init__(self, space: Space, seed: int) -> None:
        self.dims = flat_dimensions(space)
        self.rng = np.random.default_rng((seed, 0xBA))

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        out = dict(config)
        for dim in self.dims:
            if dim.name in out:
                out[dim.name] = self.value(dim, out[dim.name])
        return with_fields(out, reference="")  # an explored policy is no reference arm

    def value(self, dim: Dim, current: Any) -> Any:
        """The explored value of one dimension, always inside its declared range."""
        if self.rng.random() < RESAMPLE_PROBABILITY:
            return sample(dim, self.rng)
        if dim.categorical:
            return current
        step = (dim.high - dim.low) / STEPS
        shift = int(self.rng.choice(SHIFTS)) * (1 if self.rng.random() < 0.5 else -1)
        if dim.integer:
            return int(min(max(int(current) + shift * max(1, round(step)), dim.low), dim.high))
        return float(min(max(float(current) + shift * step, dim.low), dim.high))


def sample(dim: Dim, rng: np.random.Generator) -> Any:
    """A uniform draw from a dimension: a choice, a whole number or a float in [low, high]."""
    if dim.categorical:
        return dim.choices[int(rng.integers(len(dim.choices)))]
    if dim.integer:
        return int(rng.integers(int(dim.low), int(dim.high) + 1))
    return float(rng.uniform(dim.low, dim.high))


def initial_population(space: Space, size: int, seed: int) -> list[dict[str, Any]]:
    """PBT's starting configs, every value drawn inside its declared range from the seed."""
    rng = np.random.default_rng((seed, 0x5EED))
    dims = flat_dimensions(space)
    return [with_fields({dim.name: sample(dim, rng) for dim in dims}, reference="")
            for _ in range(size)]
