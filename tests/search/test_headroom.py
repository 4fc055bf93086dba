"""The headroom check (search.stages.headroom): the reference arms under fresh seeds before the
search; what it says shown, absent or unknown; and a real search that measures it, reports it
everywhere, and stops when told to."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from search.api import search
from search.stages.confirm import Measurement
from search.stages.headroom import NONE, NOT_SHOWN, SHOWN, arms, decide, headroom_configs
from search.trials.config import decode
from search.trials.references import BASE, RANDAUGMENT, TRIVIAL
from spaces.schema import load_space


def measured(margins: dict[str, list[float]]) -> dict[str, Measurement]:
    """The base at 0.80 + 0.01 s at replicate s; each arm that plus its margin (audit and
    reward alike)."""
    out = {BASE: Measurement()}
    reps = len(next(iter(margins.values())))
    for s in range(1, reps + 1):
        out[BASE].add(s, 0.80 + 0.01 * s, 0.80 + 0.01 * s)
    for key, values in margins.items():
        out[key] = Measurement()
        for s, m in enumerate(values, 1):
            out[key].add(s, 0.80 + 0.01 * s + m, 0.80 + 0.01 * s + m)
    return out


def test_the_arms_are_the_base_trivialaugment_and_a_light_randaugment_at_fresh_seeds():
    space = load_space("cifar10")
    cands = arms(space)
    assert [c.key for c in cands] == [BASE, TRIVIAL, RANDAUGMENT]
    configs = headroom_configs(cands, 3)
    trials = [decode(c) for c in configs]
    assert {(t.reference, t.replicate) for t in trials} == {
        (a, r) for a in (BASE, TRIVIAL, RANDAUGMENT) for r in (1, 2, 3)}
    assert {t.stage for t in trials} == {"headroom"}


@pytest.mark.parametrize(("margins", "state", "words"), [
    ({TRIVIAL: [0.03, 0.031, 0.029, 0.03], RANDAUGMENT: [0.0] * 4}, SHOWN, "pays"),
    ({TRIVIAL: [-0.03, -0.031, -0.029, -0.03], RANDAUGMENT: [-0.05] * 4}, NONE,
     "a wider or longer child"),
    ({TRIVIAL: [0.03, -0.02, 0.01, -0.01], RANDAUGMENT: [-0.01, 0.0, 0.01, -0.02]}, NOT_SHOWN,
     "--headroom-seeds")])
def test_the_headroom_says_what_it_found_and_what_to_change(margins, state, words):
    cands = arms(load_space("cifar10"))
    room = decide(cands, measured(margins), 4)
    assert room.state == state and words in room.text()
    prov = room.provenance()
    assert prov["state"] == state and prov["seeds"] == 4 and prov["arms"] == 3
    assert prov["margin"] == pytest.approx(np.mean(margins[prov["arm"]]), abs=1e-6)


def test_no_arm_beyond_the_base_finished_is_no_headroom_figure():
    cands = arms(load_space("cifar10"))
    runs = {c.key: Measurement() for c in cands}
    for c in cands:
        runs[c.key].add(1, math.nan, math.nan, status="error")
    assert decide(cands, runs, 1) is None


@pytest.fixture(scope="module")
def checked(ray_session, tmp_path_factory: pytest.TempPathFactory):
    """A real headroom check and search on digits: 2 seeds, tiny children."""
    out = tmp_path_factory.mktemp("headroom") / "out"
    space = load_space("digits").replace(**{"child.epochs": 3, "reward.last_epochs": 1})
    result = search(space, "random", trials=3, seed=0, output=out, confirm=0,
                    headroom_seeds=2)
    return out, result


@pytest.mark.slow
def test_a_search_measures_its_headroom_first_and_reports_it_everywhere(checked):
    out, result = checked
    assert result.headroom is not None and result.headroom.seeds == 2
    assert result.summary().startswith("headroom (before the search): ")
    prov = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]["headroom"]
    assert prov == json.loads((out / "headroom.json").read_text())
    assert prov["arms"] == 3 and prov["seeds"] == 2
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("augsearch-digits").experiment_id])
    stages = [r.data.tags.get("stage") for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert stages.count("headroom") == 6 and stages.count("search") == 3
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["headroom"] == prov["state"]
    assert parent.data.metrics["headroom_margin"] == pytest.approx(prov["margin"], abs=1e-6)


@pytest.mark.slow
def test_headroom_only_stops_before_the_search_and_exits_cleanly(ray_session, tmp_path: Path):
    space = load_space("digits").replace(**{"child.epochs": 3, "reward.last_epochs": 1})
    out = tmp_path / "out"
    result = search(space, "tpe", trials=4, seed=0, output=out, headroom_seeds=2,
                    headroom_only=True)
    assert result.stopped.startswith("--headroom-only") and result.complete
    assert result.leaderboard == [] and result.best_policy is None
    assert not (out / "leaderboard.csv").exists() and (out / "headroom.json").exists()
    assert not (out / "ray" / "tune").exists()  # the search's experiment never ran
    summary = result.summary()
    assert "headroom (before the search)" in summary and "stopped: --headroom-only" in summary
