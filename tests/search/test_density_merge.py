"""Density matching after the search, without Ray: the merged policy, what is exported and what
the confirmation retrains."""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import yaml

from search.rewards import get_reward_kind
from search.rewards.density_matching import merged_policy
from search.stages import confirm
from search.stages.outputs import leaderboard_rows, write_outputs
from search.trials.compile import decode, sample_configs
from search.trials.config import TrialConfig, encode, policy_config
from search.trials.config import decode as decode_trial
from search.trials.context import TrialContext
from search.trials.references import BASE, policy_of
from search.trials.seeds import trial_seeds
from search.tune import TrialOutcome
from spaces.policy import policy_from_dict
from spaces.schema import Space
from tests.conftest import subpolicy_digits

KIND = get_reward_kind("density_matching")


@pytest.fixture(scope="module")
def space() -> Space:
    return subpolicy_digits(**{
        "reward.kind": "density_matching", "policy.batch_ops": {},
        "reward.density": {"folds": 3, "top": 2}})


def outcome(trial_id: str, config: dict, folds: list[float], status: str = "ok") -> TrialOutcome:
    result = {"reward": float(np.mean(folds)), "fold_rewards": folds, "epoch": 1,
              "val_accuracy": 0.5, "audit_accuracy": 0.4}
    return TrialOutcome(trial_id, config, result, status)


@pytest.fixture(scope="module")
def outcomes(space: Space) -> list[TrialOutcome]:
    configs = sample_configs(space, 5, seed=1)
    return [
        # a reference: never merged
        outcome("base", encode(TrialConfig(reference=BASE)), [0.99, 0.99, 0.99]),
        outcome("a", configs[0], [0.90, 0.10, 0.10]),  # the best of fold 0 only
        outcome("b", configs[1], [0.80, 0.80, 0.20]),
        outcome("c", configs[2], [0.10, 0.70, 0.90]),
        outcome("d", configs[3], [0.20, 0.20, 0.80]),
        outcome("e", configs[4], [0.95, 0.95, 0.95], status="error"),  # failed: never merged
    ]


def test_the_merge_takes_the_top_of_each_fold_once_best_mean_first(space, outcomes) -> None:
    merged = merged_policy(space, outcomes)
    # fold 0: a, b; fold 1: b, c; fold 2: c, d -> a, b, c, d ordered by mean reward
    by_id = {o.trial_id: o for o in outcomes}
    order = sorted("abcd", key=lambda t: -by_id[t].result["reward"])
    assert merged.provenance["merged_from"] == order
    expected = [s for t in order for s in decode(space, by_id[t].config).sub_policies]
    assert list(merged.sub_policies) == expected
    assert len(merged.sub_policies) == 4 * space.policy.sub_policies


def test_top_one_per_fold_merges_each_folds_winner(space, outcomes) -> None:
    one = space.replace(**{"reward.density.top": 1})
    assert set(merged_policy(one, outcomes).provenance["merged_from"]) == {"a", "b", "c"}


def test_nothing_to_merge_without_a_scored_searched_trial(space, outcomes) -> None:
    assert merged_policy(space, outcomes[:1]) is None
    broken = [outcome("x", outcomes[1].config, [0.5, math.nan, 0.5])]
    assert merged_policy(space, broken) is None


def test_an_explicit_policy_config_names_its_policy_and_its_seed(space, outcomes) -> None:
    merged = merged_policy(space, outcomes)
    config = KIND.propose(space, outcomes).config()
    assert policy_of(space, config) == merged
    ctx = TrialContext(space, 0)
    kept = policy_config({**config, **encode(TrialConfig(replicate=1, candidate="merged"))})
    assert kept == config
    other = KIND.propose(space.replace(**{"reward.density.top": 1}), outcomes).config()
    assert trial_seeds(ctx, config)[1] != trial_seeds(ctx, other)[1]  # its own augmentation
    assert trial_seeds(ctx, config)[0] == trial_seeds(ctx, other)[0]  # common random numbers


def test_the_merged_policy_is_a_confirmation_candidate_that_survives_a_resume(
        space, outcomes, tmp_path: Path) -> None:
    merged, proposal = merged_policy(space, outcomes), KIND.propose(space, outcomes)
    rows = leaderboard_rows(space, outcomes)
    cands = confirm.with_proposal(confirm.candidates(rows, 3, True), proposal, 3)
    assert [c.key for c in cands] == ["base", "merged", "b", "c"]  # 3 besides the base
    assert cands[0].is_base and cands[1].config == proposal.config()
    assert policy_of(space, proposal.config()) == merged
    confirm.save_candidates(cands, tmp_path / "c.json")
    again = confirm.load_candidates(tmp_path / "c.json")
    assert policy_of(space, again[1].config) == merged
    runs = confirm.confirm_configs(again, 2)
    # every candidate at the fresh replicates 1..2, as for child training (replicate 0 never)
    assert len(runs) == 4 * 2 and {decode_trial(r).replicate for r in runs} == {1, 2}
    assert {policy_of(space, r) for r in runs if decode_trial(r).candidate == "merged"} == {merged}
    single = space.replace(**{"reward.density.final": "single"})
    unchosen = KIND.propose(single, outcomes)
    assert not unchosen.chosen and unchosen.policy == merged
    assert [c.key for c in confirm.with_proposal(confirm.candidates(rows, 3, True), unchosen,
                                                 3)] == ["base", "b", "c", "d"]


def test_unconfirmed_the_merged_policy_is_exported_and_loads_with_albumentations(
        space, outcomes, tmp_path: Path) -> None:
    merged, proposal = merged_policy(space, outcomes), KIND.propose(space, outcomes)
    rows = leaderboard_rows(space, outcomes)
    result = write_outputs(space, "tpe", rows, tmp_path, 6, None, proposal)
    result.files.update(KIND.export(space, proposal, tmp_path))
    exported = policy_from_dict(yaml.safe_load((tmp_path / "best_policy.yaml").read_text()))
    assert exported == merged and result.best_trial == "merged"
    assert exported.provenance["merged_from"] == merged.provenance["merged_from"]
    assert exported.provenance["reward_kind"] == "density_matching"
    assert "merged policy of trials" in result.summary()
    for name in ("best_policy.json", "merged_policy.json"):
        pipeline = A.load(str(tmp_path / name), data_format="json")
        shape = (16, 16, 1)
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        assert pipeline(image=image)["image"].shape == shape
    single = space.replace(**{"reward.density.final": "single"})
    other = write_outputs(single, "tpe", rows, tmp_path / "single", 6, None,
                          KIND.propose(single, outcomes))
    assert other.best_trial == rows[0]["trial_id"] and "merged policy" not in other.summary()
    assert set(KIND.export(single, KIND.propose(single, outcomes), tmp_path / "single")) == {
        "merged_policy.json", "merged_policy.yaml"}  # written whatever `final` says
    assert decode_trial(rows[0]["config"]).policy is None
