"""Cohorts in a search: K policies per Tune trial, K trials everywhere else."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.tune.search import Searcher

from search.api import search
from search.errors import SearchError
from search.trials import cohorts as cohort
from search.trials.cohorts import cohort_config
from search.trials.config import TrialConfig, decode, encode
from search.tune.searchers import _Cohorts
from tests.conftest import subpolicy_digits


class _Recorder(Searcher):
    """A searcher that numbers its suggestions and records what it is told."""

    def __init__(self) -> None:
        super().__init__(metric="reward", mode="max")
        self.suggested: list[str] = []
        self.results: dict[str, list[float]] = {}
        self.completed: dict[str, float | None] = {}

    def suggest(self, trial_id: str) -> dict:
        self.suggested.append(trial_id)
        return {"n": len(self.suggested)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.results.setdefault(trial_id, []).append(result["reward"])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.completed[trial_id] = None if error else result["reward"]


def test_each_member_is_a_trial_of_the_wrapped_searcher() -> None:
    inner = _Recorder()
    outer = _Cohorts(inner, size=3, total=5)
    first, second = outer.suggest("t1"), outer.suggest("t2")
    assert cohort.members(first) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert cohort.members(second) == [{"n": 4}, {"n": 5}]  # 5 trials in all
    assert outer.suggest("t3") is None
    assert inner.suggested == ["t1-0", "t1-1", "t1-2", "t2-0", "t2-1"]
    outer.on_trial_result("t1", cohort.cohort_result(
        [{"reward": 0.1, "epoch": 1}, {"reward": 0.3, "epoch": 1}, {"reward": math.nan}]))
    outer.on_trial_complete("t1", cohort.cohort_result(
        [{"reward": 0.2}, {"reward": 0.4}, {"reward": math.nan}]))
    outer.on_trial_complete("t2", None, error=True)
    assert inner.results["t1-1"] == [0.3]
    assert inner.completed["t1-0"] == 0.2 and inner.completed["t1-1"] == 0.4
    assert math.isnan(inner.completed["t1-2"])
    assert inner.completed["t2-0"] is None and inner.completed["t2-1"] is None


def test_expand_gives_members_their_configs_results_and_tunes_bookkeeping() -> None:
    config = cohort_config([{"a": 1}, {"a": 2}])
    result = {"time_total_s": 5.0, "node_id": "n", **cohort.cohort_result(
        [{"reward": 0.5, "epoch": 2}, {"reward": 0.7, "epoch": 2}])}
    members = cohort.expand("t", config, result)
    assert [m[0] for m in members] == ["t-0", "t-1"]
    assert [m[1] for m in members] == [{"a": 1}, {"a": 2}]
    assert members[1][2] == {"time_total_s": 5.0, "node_id": "n", "reward": 0.7, "epoch": 2}
    assert result["reward"] == 0.7
    assert cohort.expand("t", {"a": 1}, {"reward": 1}) == [("t", {"a": 1}, {"reward": 1})]


def test_fixed_runs_pack_by_replicate() -> None:
    runs = [{"c": c, **encode(TrialConfig(replicate=r))} for r in (1, 2) for c in "abc"]
    packed = [cohort.members(p) for p in cohort.pack(runs, 2)]
    assert [len(p) for p in packed] == [2, 1, 2, 1]
    for p in packed:
        assert len({decode(m).replicate for m in p}) == 1


@pytest.mark.parametrize("searcher, flags, why", [
    ("tpe", {"early_stop": "asha"}, "would stop single members"),
    ("pbt", {}, "pbt changes a member's policy"),
])
def test_a_cohort_refuses_what_it_cannot_train(tmp_path: Path, searcher: str, flags: dict,
                                               why: str) -> None:
    with pytest.raises(SearchError, match=f"--cohort 2 .*{why}"):
        search("digits", searcher, cohort=2, output=tmp_path / "out", **flags)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_cohort_search_shows_every_member_as_a_trial(ray_session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = search("digits", "tpe", smoke_test=True, trials=5, cohort=2, seed=0, output=out,
                    confirm=1, confirm_seeds=2)
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows), rows
    assert {r["reference"] for r in rows} >= {"base", "trivialaugment"}
    tune_trials = [d for d in (out / "ray" / "tune").iterdir() if d.name.startswith("trial_")]
    assert len(tune_trials) == 3  # cohorts of 2, 2 and 1
    assert len({r["policy"] for r in rows}) == 5
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("augsearch-digits").experiment_id])
    stages = [r.data.tags.get("stage") for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert stages.count("search") == 5
    assert stages.count("confirm") == 2 * 2  # the best policy and the base, 2 replicates
    assert result.confirmation is not None


# ---------------------------------------------------------------- a member that fails


class _Counting(_Recorder):
    """A recorder that also lists every completion it is told, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[tuple[str, bool]] = []

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.told.append((trial_id, error))
        super().on_trial_complete(trial_id, result, error)


def _failing(epoch: int) -> dict:
    return {"reward": math.nan, "epoch": epoch, "status": "error",
            "error": "RuntimeError: member 1's augmentation broke"}


def test_a_failed_member_is_told_to_the_searcher_alone_and_once() -> None:
    inner = _Counting()
    outer = _Cohorts(inner, size=3, total=3)
    outer.suggest("t1")
    outer.on_trial_result("t1", cohort.cohort_result(
        [{"reward": 0.1, "epoch": 1}, _failing(1), {"reward": 0.2, "epoch": 1}]))
    assert inner.told == [("t1-1", True)]  # at once: its Optuna trial fails, not at the end
    outer.on_trial_result("t1", cohort.cohort_result(
        [{"reward": 0.3, "epoch": 2}, _failing(2), {"reward": 0.4, "epoch": 2}]))
    outer.on_trial_complete("t1", cohort.cohort_result(
        [{"reward": 0.3, "epoch": 2}, _failing(2), {"reward": 0.4, "epoch": 2}]))
    assert inner.told == [("t1-1", True), ("t1-0", False), ("t1-2", False)]
    assert inner.results == {"t1-0": [0.1, 0.3], "t1-2": [0.2, 0.4]}  # never t1-1's NaN
    assert inner.completed == {"t1-1": None, "t1-0": 0.3, "t1-2": 0.4}


def test_a_failed_member_is_its_own_outcome() -> None:
    from search.tune.experiment import _status

    done = {"epoch": 3}
    assert _status("TERMINATED", {**done, "status": "error"}, None, 3) == "error"
    assert _status("TERMINATED", {**done, "status": "diverged"}, None, 3) == "diverged"
    assert _status("TERMINATED", done, None, 3) == "ok"
    assert _status("PENDING", done, None, 3) == "interrupted"
    assert _status("TERMINATED", {"epoch": 2}, None, 3) == "interrupted"  # stopped by Ctrl-C
    assert _status("TERMINATED", done, RuntimeError("the worker died"), 3) == "error"
    assert _status("ERROR", done, None, 3) == "error"


def _cohort_space():
    return subpolicy_digits(**{
        "dataset.train_size": 64, "dataset.val_pool_size": 100, "dataset.audit_size": 60,
        "child.epochs": 3, "child.batch_size": 16, "reward.last_epochs": 1,
        "reward.val_sample_size": 50})


def break_member(aug_seeds: set[int], epoch: int = 1):
    """Feed.batches, with the members of `aug_seeds` raising in their own batches at `epoch`
    (after one good batch); returns the original to put back."""
    from children.feed import Feed

    original = Feed.batches

    def batches(self, e, policy, aug_seed, order=None):
        path, stream = original(self, e, policy, aug_seed, order)
        if aug_seed not in aug_seeds or e != epoch:
            return path, stream

        def failing():
            for i, batch in enumerate(stream):
                if i == 1:
                    raise RuntimeError(f"the augmentation of seed {aug_seed} broke")
                yield batch

        return path, failing()

    Feed.batches = batches
    return original


def test_run_cohort_reports_a_failed_member_alone() -> None:
    """Member 1's own batches raise in epoch 2: each report holds its error and status from
    then on, members 0 and 2 report every epoch as they would without it."""
    from children.datasets import load_dataset, make_splits
    from children.feed import Feed
    from search.trials.cohorts import run_cohort
    from search.trials.context import TrialContext
    from search.trials.references import identity_config
    from search.trials.seeds import trial_seeds

    space = _cohort_space()
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    ctx = TrialContext(space, 0, threads=1)
    configs = [identity_config(space), {**identity_config(space), "extra": 1},
               {**identity_config(space), "extra": 2}]
    reports: list[dict] = []
    original = break_member({trial_seeds(ctx, configs[1])[1]})
    try:
        run_cohort(configs, ctx, splits, lambda result, _saved: reports.append(result))
    finally:
        Feed.batches = original
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    first, *later = [r[cohort.MEMBERS] for r in reports]
    assert "status" not in first[1]
    for members in later:
        assert members[1]["status"] == "error" and math.isnan(members[1]["reward"])
        assert members[1]["error"].startswith("RuntimeError: the augmentation of seed ")
        assert all("status" not in members[k] and math.isfinite(members[k]["reward"])
                   for k in (0, 2))
    unbroken: list[dict] = []
    run_cohort(configs, ctx, splits, lambda result, _saved: unbroken.append(result))
    for k in (0, 2):  # as without the failure, bit for bit
        assert [r[cohort.MEMBERS][k]["reward"] for r in unbroken] == \
            [r[cohort.MEMBERS][k]["reward"] for r in reports]
        assert [r[cohort.MEMBERS][k]["train_loss"] for r in unbroken] == \
            [r[cohort.MEMBERS][k]["train_loss"] for r in reports]


def breaking_trial(config, ctx, splits, report, restored=None):
    """The default trial (`run_child`) in a worker where the base arm's batches raise in its
    second epoch."""
    from children.feed import Feed
    from search.trials.config import decode
    from search.trials.seeds import trial_seeds
    from search.trials.trial import run_child

    base = {trial_seeds(ctx, c)[1] for c in cohort.members(config) or []
            if decode(c).reference == "base"}
    original = break_member(base)
    try:
        return run_child(config, ctx, splits, report, restored)
    finally:  # the worker is reused by other tests' trials
        Feed.batches = original


@pytest.mark.slow
def test_a_member_that_fails_in_a_search_fails_alone(ray_session, tmp_path: Path) -> None:
    """A Tune trial of 3 members whose base arm raises: the base is an error outcome with its
    message, the other two finish ok; Tune's trial itself did not fail."""
    import sys

    from children.datasets import load_dataset, make_splits
    from search.events import SearchListener
    from search.strategies import get_strategy
    from search.trials.context import TrialContext
    from search.tune import Resources, TunePlan, run_search

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space = _cohort_space()
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    plan = TunePlan(ctx=TrialContext(space, 0, threads=1), splits=splits,
                    strategy=get_strategy("random"), resources=Resources(1, 0), trials=3,
                    concurrency=1, storage=tmp_path, seed=0, trial=breaking_trial, cohort=3)
    outcomes = run_search(plan, [SearchListener()])
    by_reference = {decode(o.config).reference: o for o in outcomes}
    assert len(outcomes) == 3 and set(by_reference) >= {"base", "trivialaugment"}
    failed = by_reference["base"]
    assert failed.status == "error" and "augmentation of seed" in failed.error
    assert [o.status for o in outcomes if o is not failed] == ["ok", "ok"]
    assert all(o.result["epoch"] == 3 and math.isfinite(o.result["reward"])
               for o in outcomes if o is not failed)
