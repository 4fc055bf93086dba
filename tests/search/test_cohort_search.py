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
from search.trials import cohort
from search.trials.config import TrialConfig, cohort_config, decode, encode
from search.tune.searchers import _Cohorts


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
