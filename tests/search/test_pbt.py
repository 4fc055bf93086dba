"""PBA's explore and PBT's starting population stay inside the declared ranges, before decode;
after an explore, a PBT trial's reward reads only the epochs of its new policy."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from children.datasets import load_dataset, make_splits
from search.trials.compile import decode, flat_dimensions, sample_configs
from search.trials.config import decode as decode_trial
from search.trials.config import with_fields
from search.trials.context import Checkpointed, TrialContext
from search.trials.pbt import Explore, initial_population
from search.trials.trial import run_trial
from tests.conftest import subpolicy_digits


@pytest.fixture(scope="module")
def space():
    return subpolicy_digits(**{"policy.probability": [0.2, 0.9]})


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
    config = with_fields(initial_population(space, 1, seed=2)[0], reference="base")
    first = [Explore(space, seed=7)(dict(config)) for _ in range(1)]
    again = [Explore(space, seed=7)(dict(config)) for _ in range(1)]
    other = [Explore(space, seed=8)(dict(config)) for _ in range(1)]
    assert first == again and first != other
    assert decode_trial(first[0]).reference == ""
    assert first[0] != {k: v for k, v in first[0].items() if k != "_reference"}  # written


def test_initial_magnitudes_are_rescaled_into_the_op_range_not_clamped(space):
    population = initial_population(space, 400, seed=0)
    rotations = [decode(space, c).sub_policies[0].ops[0].magnitude for c in population
                 if c["sp0_op0"] == "Rotate"]
    assert rotations and max(rotations) <= 0.5
    assert sum(m == 0.5 for m in rotations) == 0  # clamping put half of them at exactly 0.5
    assert np.mean(rotations) == pytest.approx(0.25, abs=0.08)
    assert all(_inside(space, c) == [] for c in population)


class _Exploit(Exception):
    """Stops the donor where PBT would copy its checkpoint."""


DONOR_VAL = 5.0  # an impossible accuracy: any reward that reads a donor's epoch shows it


@pytest.mark.parametrize(("eval_every", "expected"), [
    (1, {4: [4], 5: [4, 5], 6: [5, 6]}),  # every epoch scored: the last 2 since the explore
    (3, {4: [], 5: [5], 6: [5, 6]}),  # epoch 4 unscored: nothing since the explore, NaN
])
def test_after_an_explore_the_reward_averages_only_the_new_policys_epochs(
        eval_every: int, expected: dict[int, list[int]]) -> None:
    """A donor trains 3 epochs (its scored epochs marked with an impossible accuracy); a trial
    that exploits it resumes from its checkpoint under an explored policy: the reward it reports
    at epochs 4-6 averages only its own scored epochs since epoch 3, never the donor's."""
    space = subpolicy_digits(**{
        "child.epochs": 6, "dataset.train_size": 40, "reward.last_epochs": 2,
        "reward.eval_every": eval_every, "policy.batch_ops": {}})
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    ctx = TrialContext(space, 0, threads=1, record_schedule=True)
    donor, explored = sample_configs(space, 2, seed=4)
    copied: list[Checkpointed] = []

    def stop_at_3(metrics: dict[str, Any], checkpoint: Checkpointed) -> None:
        if metrics["epoch"] == 3:
            copied.append(checkpoint)
            raise _Exploit

    with pytest.raises(_Exploit):
        run_trial(donor, ctx, splits, stop_at_3)
    ckpt = copied[0]
    ckpt.state.history = [replace(h, val_accuracy=DONOR_VAL) if math.isfinite(h.val_accuracy)
                          else h for h in ckpt.state.history]
    assert any(h.val_accuracy == DONOR_VAL for h in ckpt.state.history)
    reports: dict[int, dict[str, Any]] = {}
    run_trial(explored, ctx, splits, lambda m, _c: reports.__setitem__(m["epoch"], m),
              restored=ckpt)
    assert sorted(reports) == [4, 5, 6]
    for epoch, used in expected.items():
        values = [reports[e]["val_accuracy"] for e in used]
        assert all(0 <= v <= 1 for v in values)
        if used:
            assert reports[epoch]["reward"] == pytest.approx(float(np.mean(values)))
        else:
            assert math.isnan(reports[epoch]["reward"]), reports[epoch]["reward"]
