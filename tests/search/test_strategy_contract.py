"""The contract every registered strategy must pass (in the manner of Optuna's sampler tests).

Each strategy runs a few trials through the real Tune adapter on a real local Ray, with a cheap
deterministic objective in place of child training, so the contract is about the strategy:
NaN and inf rewards are survived, the same seed gives the same suggestions, and every suggested
config decodes into a policy that lies inside the space. The suite runs over every registered
strategy and over a toy one that this module registers as a plug-in would (Optuna's
quasi-Monte Carlo sampler), so a new searcher is held to the same contract.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from search.events import SearchListener
from search.strategies import (
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)
from search.trials.compile import flat_dimensions, slot
from search.trials.config import TrialConfig, decode, dimensions
from search.trials.context import Checkpointed, TrialContext
from search.trials.references import policy_of
from search.tune import Resources, TunePlan, load_checkpoint, report_epoch, run_search
from tests.conftest import subpolicy_digits

pytestmark = pytest.mark.slow
EPOCHS = 4
TRIALS = 5
TOY = "toy-qmc"


def qmc_sampler(seed: int) -> Any:
    """The toy plug-in's sampler: scrambled Sobol points where the space allows, random draws for
    conditional dimensions (a magnitude exists only for the op drawn)."""
    import optuna

    return optuna.samplers.QMCSampler(
        seed=seed, scramble=True, warn_independent_sampling=False,
        independent_sampler=optuna.samplers.RandomSampler(seed=seed))


TOY_STRATEGY = Strategy(TOY, "a toy plug-in: Optuna's QMC sampler", qmc_sampler)
NAMES = [*strategy_names(), TOY]  # every registered strategy, and the toy plug-in


def objective(config: dict[str, Any], ctx: TrialContext, splits: Any) -> None:
    """Scores a policy without training: NaN when it holds Invert, inf when it holds Equalize."""
    policy = policy_of(ctx.space, config)
    names = {op.name for sub in policy.sub_policies for op in sub.ops}
    restored = load_checkpoint()
    start = restored.state["epoch"] if restored else 0
    for epoch in range(start, EPOCHS):
        if "Invert" in names:
            value = float("nan")
        elif "Equalize" in names:
            value = float("inf")
        else:
            value = sum(op.magnitude * op.probability for s in policy.sub_policies for op in s.ops)
        report_epoch({"reward": value * (epoch + 1) / EPOCHS, "epoch": epoch + 1},
                     Checkpointed({"epoch": epoch + 1}))


def contract_space():
    space = subpolicy_digits()
    return space.replace(**{"child.epochs": EPOCHS, "reward.last_epochs": 1,
                            "policy.ops": ["Invert", "Equalize", "Rotate", "Cutout", "ShearX",
                                           "Identity"]})


class SeenConfigs(SearchListener):
    """Records the config each trial started with and every config it ran with (PBT's explore
    changes them), exactly as the strategy emitted them: nothing decoded or clamped."""

    def __init__(self) -> None:
        self.configs: dict[str, dict[str, Any]] = {}
        self.every: list[dict[str, Any]] = []

    def trial_result(self, trial_id: str, config: dict, result: dict) -> None:
        self.configs.setdefault(trial_id, dict(config))
        self.every.append(dict(config))

    def trial_complete(self, trial_id: str, config: dict, result: dict) -> None:
        self.configs.setdefault(trial_id, dict(config))
        self.every.append(dict(config))

    def trial_error(self, trial_id: str, config: dict, error: str) -> None:
        self.configs.setdefault(trial_id, dict(config))


def run_contract(name: str, seed: int, tmp: Path) -> tuple[list[Any], list[str], SeenConfigs]:
    space = contract_space()
    strategy = get_strategy(name)
    plan = TunePlan(
        ctx=TrialContext(space, seed), splits=None, strategy=strategy,
        resources=Resources(1, 0), trials=TRIALS, concurrency=2, storage=tmp, seed=seed,
        trainable=objective)
    seen = SeenConfigs()
    outcomes = run_search(plan, listeners=[seen])
    return outcomes, sorted(repr(sorted(c.items())) for c in seen.configs.values()), seen


@pytest.fixture(scope="module")
def toy_registered():
    """The toy strategy in the registry while this module runs, as a plug-in's import would put
    it there; removed afterwards, so other tests see the built-ins only."""
    register_strategy(TOY_STRATEGY)
    yield TOY_STRATEGY
    unregister_strategy(TOY)


@pytest.fixture(scope="module")
def runs(ray_session, toy_registered, tmp_path_factory) -> dict[tuple[str, int], list[Any]]:
    """Each strategy three times: seed 0 twice, seed 1 once."""
    # Ray workers cannot import this test module: ship `objective` by value.
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert strategy_names() == NAMES
    out = {}
    for name in NAMES:
        for seed in (0, 0, 1):
            tmp = tmp_path_factory.mktemp(f"{name}-{seed}")
            out.setdefault((name, seed), []).append(run_contract(name, seed, tmp))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_runs_every_trial_and_survives_nan_and_inf(runs, name: str) -> None:
    outcomes = runs[(name, 0)][0][0]
    assert len(outcomes) == TRIALS
    assert all(o.status == "ok" for o in outcomes), [(o.status, o.error) for o in outcomes]
    rewards = [o.result["reward"] for o in outcomes]
    assert any(math.isfinite(r) for r in rewards)
    assert any(not math.isfinite(r) for r in rewards), "the contract needs a NaN/inf trial"


def out_of_space(space: Any, config: dict[str, Any]) -> list[str]:
    """Every raw config value outside its declared domain (before any decode or clamp)."""
    ops = {o.name: o.magnitude for o in space.policy.ops}
    domains: dict[str, Any] = {d.name: d.choices or (d.low, d.high)
                               for d in flat_dimensions(space)}
    p = space.policy
    for i in range(p.sub_policies):
        for j in range(p.ops_per_sub_policy):
            domains.update({f"{slot(i, j)}_{op}_mag": rng for op, rng in ops.items()})
    bad = []
    if decode(config) not in (TrialConfig(), TrialConfig(reference=decode(config).reference)):
        bad.append(f"more than a reference arm besides the dimensions: {decode(config)}")
    for key, value in dimensions(config).items():
        domain = domains.get(key)
        if domain is None:
            bad.append(f"{key}: not a dimension of the space")
        elif isinstance(domain[0], str):
            if value not in domain:
                bad.append(f"{key}={value!r} not in {domain}")
        elif not domain[0] <= value <= domain[1]:
            bad.append(f"{key}={value!r} outside [{domain[0]}, {domain[1]}]")
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_every_suggested_config_lies_in_the_space(runs, name: str) -> None:
    """Checked on what the strategy emits, every config each trial ran with (PBT's explored
    ones included), before decode: decode clamps, so a check after it could not fail."""
    space = contract_space()
    checked = 0
    for seed in (0, 1):
        seen = runs[(name, seed)][0][2]
        for config in seen.every:
            assert out_of_space(space, config) == [], config
            checked += 1
            if not decode(config).reference:
                policy = policy_of(space, config)
                assert len(policy.sub_policies) == space.policy.sub_policies
    assert checked >= 2 * TRIALS


@pytest.mark.parametrize("name", NAMES)
def test_the_first_trials_are_the_reference_arms(runs, name: str) -> None:
    """tpe and random open with the base arm (every slot Identity, so the sampler learns from
    it) and TrivialAugment; PBT's population holds the base arm as its first member."""
    outcomes = runs[(name, 0)][0][0]
    expected = ["base"] if name == "pbt" else ["base", "trivialaugment"]
    opening = [decode(o.config).reference for o in outcomes[:len(expected)]]
    if name == "pbt":  # PBT's explore turns an exploited reference into a searched policy
        assert sum(bool(decode(o.config).reference) for o in outcomes) <= 1
    else:
        assert opening == expected
        assert all(not decode(o.config).reference for o in outcomes[len(expected):])
    seen = runs[(name, 0)][0][2]
    base = next(c for c in seen.every if decode(c).reference == "base")
    assert {v for k, v in base.items() if k.count("_") == 1 and "_op" in k} == {"Identity"}


@pytest.mark.parametrize("name", NAMES)
def test_reproducible_under_a_seed(runs, name: str) -> None:
    """Same seed, same suggested configs; another seed, other configs. For PBT the seed fixes
    the initial population (the explore's draws too, but which trial Tune clones, and when,
    depends on trial timing)."""
    (_, first, _), (_, second, _) = runs[(name, 0)]
    _, other, _ = runs[(name, 1)][0]
    assert len(first) == TRIALS
    assert first == second
    assert first != other
