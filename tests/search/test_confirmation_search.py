"""Common random numbers and the confirmation stage, in real searches on a real local Ray."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from statistics import mean

import pytest
import yaml
from mlflow import MlflowClient
from scipy import stats

from search.api import search
from spaces.schema import load_space

pytestmark = pytest.mark.slow


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_trials_share_common_seeds_and_the_same_policy_gives_the_same_reward(ray_session,
                                                                            tmp_path: Path):
    """Every searched policy is the same here (one op, fixed probability): under common random
    numbers each trial trains it identically; all trials share the common seed."""
    space = load_space("digits").replace(**{
        "policy.ops": ["Identity"], "policy.search_probability": False,
        "policy.batch_ops": {}, "search.confirm": 0})
    result = search(space, "tpe", smoke_test=True, trials=4, seed=3, output=tmp_path / "out",
                    confirm=0)
    rows = [r for r in result.leaderboard if r["status"] == "ok"]
    assert len(rows) == 4
    searched = [r for r in rows if not r["reference"]]
    assert len(searched) == 3 and [r["reference"] for r in rows if r["reference"]] == ["base"]
    assert len({r["reward"] for r in searched}) == 1
    assert len({r["audit_accuracy"] for r in searched}) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("augsearch-digits").experiment_id])
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    seeds = {r.data.tags["common_seed"] for r in nested}
    assert len(nested) == 4 and len(seeds) == 1  # the base arm too: same weights, same order
    aug = {r.data.tags.get("reference", ""): r.data.tags["aug_seed"] for r in nested}
    assert aug["base"] != aug[""]  # the augmentation's own draws stay per policy


def test_confirmation_picks_the_best_mean_and_reports_a_paired_ci(ray_session, tmp_path: Path):
    out = tmp_path / "out"
    result = search("digits", "tpe", smoke_test=True, trials=5, epochs=3, seed=1, output=out,
                    confirm=2, confirm_seeds=2)
    runs = read_csv(out / "confirm.csv")
    by: dict[str, dict[int, float]] = {}
    for row in runs:
        by.setdefault(row["candidate"], {})[int(row["replicate"])] = float(row["reward"])
    assert len(by) == 3 and all(sorted(v) == [0, 1, 2] for v in by.values())
    base = next(r["candidate"] for r in runs if r["reference"] == "base")
    # replicate 0 is the search's own trial, except where it must be trained (never here)
    assert {r["source"] for r in runs if r["replicate"] == "0"} == {"search"}
    means = {k: mean(v.values()) for k, v in by.items()}
    best = max(means.values())
    winner = base if means[base] == best else max(means, key=means.get)
    verdict = result.confirmation.verdict
    assert verdict.winner.key == winner
    diffs = [by[winner][r] - by[base][r] for r in range(3)]
    prov = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]
    assert prov["confirmed_over_seeds"] == 3
    assert prov["margin_reward"] == pytest.approx(mean(diffs), abs=1e-6)
    if winner != base and len(set(diffs)) > 1:
        half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / math.sqrt(3)
        assert prov["margin_reward_ci95"] == pytest.approx([mean(diffs) - half,
                                                           mean(diffs) + half], abs=1e-6)
        assert "95% CI" in result.summary()
    expected = "base" if winner == base else (
        "beats_base" if prov["margin_reward_ci95"][0] > 0 else "within_noise")
    assert prov["verdict"] == expected
    if winner == base:
        assert "no policy beat crop/flip; keep the base" in result.summary()
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("augsearch-digits")
    nested = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get("stage") == "confirm"]
    assert len(nested) == sum(r["source"] == "confirm" for r in runs) == 6
    parent = [r for r in client.search_runs([experiment.experiment_id])
              if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.data.tags["verdict"] == expected
    assert parent.data.metrics["margin_reward"] == pytest.approx(mean(diffs), abs=1e-6)
