"""The confirmation stage's logic: candidates, runs to train, the winner by mean, paired CIs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from search.confirm import (
    CANDIDATE_KEY,
    Measurement,
    candidates,
    confirm_configs,
    measured_in_search,
    record,
    search_margin,
    verdict,
)
from search.references import BASE, REFERENCE_KEY
from search.trial import REPLICATE_KEY, SCHEDULE_KEY


def row(trial: str, reward: float, audit: float, ref: str = "", status: str = "ok",
        **extra: Any) -> dict[str, Any]:
    config = {"sp0_op0": trial}
    if ref:
        config = {REFERENCE_KEY: ref}
    return {"trial_id": trial, "reference": ref, "status": status, "reward": reward,
            "audit_accuracy": audit, "config": config, **extra}


ROWS = [row("t1", 0.95, 0.90), row("t2", 0.94, 0.93), row("ta", 0.93, 0.92, "trivialaugment"),
        row("b", 0.92, 0.91, BASE), row("t3", 0.91, 0.89), row("bad", math.nan, math.nan,
                                                                  status="failed")]


@dataclass
class Outcome:
    config: dict[str, Any]
    result: dict[str, Any]
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


def test_candidates_are_the_base_then_the_top_k_others():
    cands = candidates(ROWS, top=3, replay=False)
    assert [c.key for c in cands] == ["b", "t1", "t2", "ta"]
    assert cands[0].is_base and cands[3].reference == "trivialaugment"


def test_the_search_trial_is_replicate_zero_and_only_missing_replicates_are_trained():
    cands = candidates(ROWS, top=2, replay=False)
    measured = measured_in_search(cands, replay=False)
    assert measured["t1"].rewards == {0: 0.95}
    configs = confirm_configs(cands, replicates=2, measured=measured)
    assert len(configs) == 3 * 2  # base, t1, t2 at replicates 1 and 2
    assert {(c[CANDIDATE_KEY], c[REPLICATE_KEY]) for c in configs} == {
        (k, r) for k in ("b", "t1", "t2") for r in (1, 2)}
    base_runs = [c for c in configs if c[CANDIDATE_KEY] == "b"]
    assert all(c[REFERENCE_KEY] == BASE for c in base_runs)


def test_a_search_without_a_base_run_trains_the_base_at_every_replicate():
    rows = [r for r in ROWS if r["reference"] != BASE]
    cands = candidates(rows, top=1, replay=False)
    assert cands[0].key == BASE
    configs = confirm_configs(cands, 2, measured_in_search(cands, replay=False))
    assert sorted(c[REPLICATE_KEY] for c in configs if c[CANDIDATE_KEY] == BASE) == [0, 1, 2]


def test_pbt_candidates_replay_their_schedule_from_scratch():
    schedule = {"entries": [{"epochs": [0, 3], "config": {"sp0_op0": "Rotate"}},
                            {"epochs": [3, 6], "config": {"sp0_op0": "Invert"}}]}
    rows = [row("p1", 0.9, 0.9, schedule=json.dumps(schedule)), row("b", 0.8, 0.8, BASE)]
    cands = candidates(rows, top=1, replay=True)
    measured = measured_in_search(cands, replay=True)
    assert all(not m.rewards for m in measured.values())  # nothing reused: exploits differ
    configs = confirm_configs(cands, 1, measured)
    replayed = [c for c in configs if c[CANDIDATE_KEY] == "p1"]
    assert [c[REPLICATE_KEY] for c in replayed] == [0, 1]
    assert replayed[0][SCHEDULE_KEY] == [[0, {"sp0_op0": "Rotate"}], [3, {"sp0_op0": "Invert"}]]


def _measure(values: dict[str, list[tuple[float, float]]]) -> dict[str, Measurement]:
    out = {}
    for key, pairs in values.items():
        m = Measurement()
        for rep, (reward, audit) in enumerate(pairs):
            m.add(rep, reward, audit)
        out[key] = m
    return out


def test_the_winner_is_the_best_mean_not_the_best_search_reward():
    cands = candidates(ROWS, top=2, replay=False)
    measured = _measure({"b": [(0.92, 0.91), (0.93, 0.92), (0.92, 0.91)],
                         "t1": [(0.95, 0.90), (0.92, 0.90), (0.91, 0.90)],  # lucky draw
                         "t2": [(0.94, 0.93), (0.95, 0.94), (0.95, 0.94)]})
    v = verdict(cands, measured)
    assert v.winner.key == "t2"
    assert v.reward_margin.mean == pytest.approx((0.02 + 0.02 + 0.03) / 3)
    assert v.reward_margin.n == 3 and v.reward_margin.ci_low > 0
    assert v.audit_margin.mean == pytest.approx(0.02 + 0.01 / 3)
    assert v.significant and "beats crop/flip" in v.text()
    assert v.provenance()["verdict"] == "beats_base"


def test_noise_sized_margins_are_reported_as_such():
    cands = candidates(ROWS, top=1, replay=False)
    measured = _measure({"b": [(0.92, 0.9), (0.93, 0.9), (0.90, 0.9)],
                         "t1": [(0.95, 0.9), (0.91, 0.9), (0.90, 0.9)]})
    v = verdict(cands, measured)
    assert v.winner.key == "t1" and not v.significant
    assert v.reward_margin.ci_low < 0 < v.reward_margin.ci_high
    assert "not distinguishable from the base" in v.text()
    assert v.provenance()["verdict"] == "within_noise"


def test_when_the_base_has_the_best_mean_the_verdict_is_keep_the_base():
    cands = candidates(ROWS, top=2, replay=False)
    measured = _measure({"b": [(0.95, 0.9), (0.95, 0.9)], "t1": [(0.95, 0.9), (0.94, 0.9)],
                         "t2": [(0.90, 0.9), (0.91, 0.9)]})
    v = verdict(cands, measured)
    assert v.base_wins and v.text().startswith("no policy beat crop/flip; keep the base")
    assert v.provenance()["verdict"] == "base"


def test_confirmation_results_are_recorded_by_candidate_and_replicate():
    cands = candidates(ROWS, top=1, replay=False)
    measured = measured_in_search(cands, replay=False)
    outcomes = [Outcome({CANDIDATE_KEY: "t1", REPLICATE_KEY: 1}, {"reward": 0.9,
                                                                 "audit_accuracy": 0.8}),
                Outcome({CANDIDATE_KEY: "b", REPLICATE_KEY: 1}, {"reward": 0.7}, "error")]
    record(measured, outcomes)
    assert measured["t1"].rewards == {0: 0.95, 1: 0.9} and measured["t1"].audits[1] == 0.8
    assert math.isnan(measured["b"].rewards[1])


def test_without_confirmation_the_margin_is_one_seed_against_the_base_arm():
    margin = search_margin(ROWS, ROWS[0])
    assert margin == {"margin_reward": pytest.approx(0.03), "margin_audit": pytest.approx(-0.01),
                      "margin_seeds": 1}
