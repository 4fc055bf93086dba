"""Reward kinds are plug-ins: a new one is one class in one file, found by `reward.kind`.

The toy kind below lives in this test file only. Its reward is a pure function of the policy
(no child is trained per trial), it proposes a policy of its own after the search, exports a
file, adds an MLflow param and its lines to the dry run; a real search runs it end to end on
the shared local Ray, confirmation included (real children retrain its candidates).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from mlflow import MlflowClient

from search.api import search
from search.errors import SearchError
from search.rewards import (
    Proposal,
    RewardKind,
    get_reward_kind,
    register_reward_kind,
    reward_kind_names,
    unregister_reward_kind,
)
from search.run import main
from search.trials.references import policy_of
from spaces.policy import Op, Policy, SubPolicy
from spaces.schema import Space, load_space

TOY = "toy_rotation"


def rotation(policy: Policy) -> float:
    """The toy reward: how much a policy rotates, on average over its sub-policies."""
    subs = policy.sub_policies
    turned = sum(op.magnitude * op.probability for sub in subs for op in sub.ops
                 if op.name == "Rotate")
    return turned / len(subs) if subs else 0.0


def toy_trial(config: dict[str, Any], ctx: Any, splits: Any, report: Any,
              restored: Any = None) -> dict[str, Any]:
    """One trial of the toy kind: one report, no checkpoint, no child."""
    reward = rotation(policy_of(ctx.space, config))
    result = {"epoch": 1, "reward": reward, "val_accuracy": reward, "audit_accuracy": 0.5,
              "tags": {"toy": "yes"}}
    report(result, None)
    return result


class Rotation(RewardKind):
    """The toy plug-in: everything a reward kind can say, in one class."""

    name: ClassVar[str] = TOY
    summary: ClassVar[str] = "how much the policy rotates (a test's toy)"
    child_per_trial: ClassVar[bool] = False
    trial_words: ClassVar[str] = "one function call"
    trial = staticmethod(toy_trial)

    def prepare(self, plan: Any, tracker: Any, output: Path, resume: bool) -> Any:
        (output / "toy_prepared.txt").write_text("prepared once\n")
        return replace(super().prepare(plan, tracker, output, resume), epochs=1, cohort=1)

    def trial_epochs(self, space: Space) -> int:
        return 1

    def propose(self, space: Space, outcomes: list[Any]) -> Proposal | None:
        turn = SubPolicy((Op("Rotate", 0.5, 1.0),))
        return Proposal("spin", Policy((turn, turn)), chosen=True, text="the toy's own spin")

    def export(self, space: Space, proposal: Proposal | None, output: Path) -> dict[str, Path]:
        path = output / "toy_export.json"
        path.write_text(json.dumps({"proposed": proposal.key if proposal else None}))
        return {path.name: path}

    def proposal_text(self, space: Space) -> str:
        return "the toy's spin"

    def params(self, space: Space) -> dict[str, Any]:
        return {"toy_weight": 1.0}

    def accuracy_reward(self, space: Space) -> bool:
        return False


@pytest.fixture(scope="module")
def toy_kind():
    """The toy kind registered as its module's import would, removed after these tests."""
    kind = register_reward_kind(Rotation())
    yield kind
    unregister_reward_kind(TOY)


def toy_space() -> Space:
    return load_space("digits").replace(**{"reward.kind": TOY})


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_real_search_runs_the_toy_kind_end_to_end(ray_session, toy_kind, tmp_path: Path,
                                                    ) -> None:
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = tmp_path / "out"
    result = search(toy_space(), "random", smoke_test=True, trials=6, confirm=2,
                    confirm_seeds=2, seed=0, output=out)
    assert result.complete and (out / "toy_prepared.txt").exists()
    space = load_space(out / "space.yaml")
    assert space.reward.kind == TOY
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert {r["epochs"] for r in rows} == {"1"}  # one report each: no child trained per trial
    for r in rows:  # every reward is the toy's function of that trial's policy
        assert float(r["reward"]) == pytest.approx(
            rotation(policy_of(space, json.loads(r["config"]))))
    # the confirmation retrained the base, the toy's chosen proposal and the best trial with
    # real children; the toy's reward is no child's, so no search trial is a replicate
    confirmed = read_csv(out / "confirm.csv")
    assert [r["candidate"] for r in confirmed][::2] == ["base", "spin", rows[0]["trial_id"]]
    assert {r["used_for"] for r in confirmed} == {"estimation"}
    assert all(0.0 <= float(r["reward"]) <= 1.0 for r in confirmed)
    assert json.loads((out / "toy_export.json").read_text()) == {"proposed": "spin"}
    assert result.files["toy_export.json"] == out / "toy_export.json"
    exported = yaml.safe_load((out / "best_policy.yaml").read_text())
    assert exported["provenance"]["reward_kind"] == TOY
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    [parent] = [r for r in client.search_runs(
        [client.get_experiment_by_name("augsearch-digits").experiment_id], max_results=100)
        if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.params["reward_kind"] == TOY
    assert parent.data.params["toy_weight"] == "1.0"
    assert "selection_gap" not in parent.data.metrics  # the toy's reward is no accuracy


def test_the_dry_run_asks_the_toy_kind(toy_kind, tmp_path: Path, capsys) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_space().model_dump(mode="json"), sort_keys=False))
    assert main(["--space", str(path), "--dry-run", "--output", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert f"  reward    {TOY}: how much the policy rotates (a test's toy)" in text
    assert "the base, the toy's spin and the next best policies" in text
    assert not (tmp_path / "out").exists()


def test_what_the_toy_kind_cannot_search_with_is_one_line(toy_kind, tmp_path: Path) -> None:
    with pytest.raises(SearchError, match=f"^--searcher pbt cannot search with reward.kind: "
                                          f"{TOY} \\(space digits\\).*use --searcher tpe or "
                                          f"random"):
        search(toy_space(), "pbt", output=tmp_path / "a")
    with pytest.raises(SearchError, match=f"^--early-stop asha has nothing to stop with "
                                          f"reward.kind: {TOY} \\(a trial is one function call"):
        search(toy_space(), "tpe", early_stop="asha", output=tmp_path / "b")
    with pytest.raises(SearchError, match=f"reward.kind: {TOY} trains no child per trial"):
        search(toy_space(), "tpe", cohort=2, output=tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_an_unknown_reward_kind_is_one_line_listing_the_kinds(tmp_path: Path, capsys) -> None:
    space = load_space("digits").replace(**{"reward.kind": "telepathy"})
    with pytest.raises(SearchError) as err:
        search(space, "tpe", output=tmp_path / "out")
    assert str(err.value) == ("unknown reward.kind 'telepathy' (space digits); choose one of: "
                              f"{', '.join(reward_kind_names())}")
    assert "child_training, density_matching" in str(err.value)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    assert main(["--space", str(path), "--dry-run", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"augsearch: error: {err.value}"
    assert not (tmp_path / "out").exists()


def test_the_registry_holds_the_built_ins_and_refuses_a_second_of_a_name() -> None:
    assert reward_kind_names()[:2] == ["child_training", "density_matching"]
    assert not get_reward_kind("density_matching").child_per_trial
    with pytest.raises(ValueError, match="already registered"):
        register_reward_kind(get_reward_kind("density_matching"))

    class Nameless(RewardKind):
        pass

    with pytest.raises(ValueError, match="Nameless has no name"):
        register_reward_kind(Nameless())


BROKEN = "toy_broken_confirmation"


def broken_trial(config: dict[str, Any], ctx: Any, splits: Any, report: Any,
                 restored: Any = None) -> None:
    raise RuntimeError("the confirmation's child could not train")


class BrokenConfirmation(Rotation):
    """The toy kind whose every confirmation run fails (a full disk, a broken worker)."""

    name: ClassVar[str] = BROKEN

    def confirmation(self, plan: Any) -> Any:
        return replace(plan, trial=broken_trial)


def test_a_confirmation_whose_every_run_fails_exports_the_base_and_says_why(
        ray_session, tmp_path: Path) -> None:
    """Before, a confirmation that measured nothing exported the search's choice unconfirmed
    (here the toy's proposal) and blamed --confirm 0."""
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register_reward_kind(BrokenConfirmation())
    try:
        out = tmp_path / "out"
        result = search(load_space("digits").replace(**{"reward.kind": BROKEN}), "random",
                        smoke_test=True, trials=3, confirm=1, confirm_seeds=2, seed=0,
                        output=out, max_failures=0)
    finally:
        unregister_reward_kind(BROKEN)
    assert result.confirmation.verdict is None and result.confirmation.status == "failed"
    exported = yaml.safe_load((out / "best_policy.yaml").read_text())
    assert exported["sub_policies"] == [] and exported["provenance"]["exported"] == "base"
    assert exported["provenance"]["verdict"] == "unconfirmed_failed"
    summary = result.summary()
    assert "unconfirmed: none of the confirmation's 4 trainings finished" in summary
    assert "--confirm 0" not in summary
    assert {r["status"] for r in read_csv(out / "confirm.csv")} == {"error"}
