"""PBA's explore and PBT's starting population stay inside the declared ranges, before decode."""

from __future__ import annotations

import numpy as np
import pytest

from search.compile import decode, flat_dimensions
from search.pbt import Explore, initial_population
from search.references import REFERENCE_KEY
from spaces.schema import load_space


@pytest.fixture(scope="module")
def space():
    return load_space("digits").replace(**{"policy.probability": [0.2, 0.9]})


def _inside(space, config) -> list[str]:
    bad = []
    for dim in flat_dimensions(space):
        value = config[dim.name]
        if dim.categorical and value not in dim.choices:
            bad.append(f"{dim.name}={value}")
        if not dim.categorical and not dim.low <= value <= dim.high:
            bad.append(f"{dim.name}={value} outside [{dim.low}, {dim.high}]")
    return bad


def test_explore_never_leaves_the_declared_ranges(space):
    explore = Explore(space, seed=0)
    config = initial_population(space, 1, seed=0)[0]
    for _ in range(500):  # a long chain of explores drifts to every bound
        config = explore(config)
        assert _inside(space, config) == []
    probs = [d for d in flat_dimensions(space) if d.name.endswith("_prob")]
    assert probs and all((d.low, d.high) == (0.2, 0.9) for d in probs)


def test_explore_moves_values_by_steps_or_resamples(space):
    explore = Explore(space, seed=1)
    start = initial_population(space, 1, seed=1)[0]
    changed = [explore(dict(start)) for _ in range(50)]
    moved = [c["sp0_op0_prob"] - start["sp0_op0_prob"] for c in changed]
    step = (0.9 - 0.2) / 10
    on_grid = [abs(m / step - round(m / step)) < 1e-9 for m in moved]
    assert 0.5 < np.mean(on_grid) < 1.0  # mostly shifted by whole steps, sometimes resampled
    assert len({c["sp0_op0"] for c in changed}) > 1  # op slots are resampled at times


def test_explore_is_seeded_and_clears_the_reference_mark(space):
    config = {**initial_population(space, 1, seed=2)[0], REFERENCE_KEY: "base"}
    first = [Explore(space, seed=7)(dict(config)) for _ in range(1)]
    again = [Explore(space, seed=7)(dict(config)) for _ in range(1)]
    other = [Explore(space, seed=8)(dict(config)) for _ in range(1)]
    assert first == again and first != other
    assert first[0][REFERENCE_KEY] == ""


def test_initial_magnitudes_are_rescaled_into_the_op_range_not_clamped(space):
    population = initial_population(space, 400, seed=0)
    rotations = [decode(space, c).sub_policies[0].ops[0].magnitude for c in population
                 if c["sp0_op0"] == "Rotate"]
    assert rotations and max(rotations) <= 0.5
    assert sum(m == 0.5 for m in rotations) == 0  # clamping put half of them at exactly 0.5
    assert np.mean(rotations) == pytest.approx(0.25, abs=0.08)
    assert all(_inside(space, c) == [] for c in population)
