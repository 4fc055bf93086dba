"""The confirmation stage's logic: candidates, fresh runs to train, what is recorded (failed runs
included), confirm.csv's rows, and what a confirmation that decided nothing says (the verdict's
rules are tests/search/test_verdict.py's)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from search.stages.confirm import (
    FAILED,
    Confirmation,
    Measurement,
    candidates,
    confirm_configs,
    measurements,
    record,
    search_margin,
    verdict,
)
from search.trials.config import TrialConfig, decode, encode
from search.trials.references import BASE


def row(trial: str, reward: float, audit: float, ref: str = "", status: str = "ok",
        **extra: Any) -> dict[str, Any]:
    config = {"sp0_op0": trial}
    if ref:
        config = encode(TrialConfig(reference=ref))
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


def test_the_search_trial_is_no_replicate_every_candidate_trains_fresh_ones():
    cands = candidates(ROWS, top=2, replay=False)
    measured = measurements(cands)
    assert all(not m.rewards for m in measured.values())  # the search's 0.95 is not reused
    configs = confirm_configs(cands, replicates=2)
    assert len(configs) == 3 * 2  # base, t1, t2 at replicates 1 and 2, none at 0
    trials = [decode(c) for c in configs]
    assert {(t.candidate, t.replicate) for t in trials} == {
        (k, r) for k in ("b", "t1", "t2") for r in (1, 2)}
    assert {t.stage for t in trials} == {"confirm"}
    assert all(t.reference == BASE for t in trials if t.candidate == "b")


def test_a_search_without_a_base_run_trains_the_base_at_the_same_fresh_replicates():
    rows = [r for r in ROWS if r["reference"] != BASE]
    cands = candidates(rows, top=1, replay=False)
    assert cands[0].key == BASE
    configs = confirm_configs(cands, 2)
    assert sorted(t.replicate for t in map(decode, configs) if t.candidate == BASE) == [1, 2]


def test_pbt_candidates_replay_their_schedule_from_scratch():
    schedule = {"entries": [{"epochs": [0, 3], "config": {"sp0_op0": "Rotate"}},
                            {"epochs": [3, 6], "config": {"sp0_op0": "Invert"}}]}
    rows = [row("p1", 0.9, 0.9, schedule=json.dumps(schedule)), row("b", 0.8, 0.8, BASE)]
    cands = candidates(rows, top=1, replay=True)
    configs = confirm_configs(cands, 2)
    replayed = [t for t in map(decode, configs) if t.candidate == "p1"]
    assert [t.replicate for t in replayed] == [1, 2]  # replicate 0 is not trained at all
    assert replayed[0].schedule == [[0, {"sp0_op0": "Rotate"}], [3, {"sp0_op0": "Invert"}]]


def _measure(values: dict[str, list[tuple[float, float]]]) -> dict[str, Measurement]:
    """Fresh replicates 1, 2, ... of each candidate."""
    out = {}
    for key, pairs in values.items():
        m = Measurement()
        for rep, (reward, audit) in enumerate(pairs, 1):
            m.add(rep, reward, audit)
        out[key] = m
    return out


def test_confirm_csv_rows_say_which_replicates_estimate_and_which_selected():
    cands = candidates(ROWS, top=1, replay=False)
    measured = _measure({"b": [(0.92, 0.9), (0.93, 0.9)], "t1": [(0.91, 0.9), (0.94, 0.9)]})
    rows = Confirmation(cands, measured, verdict(cands, measured)).rows()
    used = {(r["candidate"], r["replicate"]): (r["source"], r["used_for"]) for r in rows}
    assert used == {("b", 0): ("search", "none"), ("b", 1): ("confirm", "estimation"),
                    ("b", 2): ("confirm", "estimation"), ("t1", 0): ("search", "selection"),
                    ("t1", 1): ("confirm", "estimation"), ("t1", 2): ("confirm", "estimation")}
    assert next(r["reward"] for r in rows if r["candidate"] == "t1" and r["replicate"] == 0) \
        == 0.95
    # PBT and density matching: the search's reward is another kind of figure, left out
    replayed = Confirmation(cands, measured, None, replay=True).rows()
    assert {r["used_for"] for r in replayed} == {"estimation"} and len(replayed) == 4


def test_confirmation_results_are_recorded_by_candidate_and_replicate():
    cands = candidates(ROWS, top=1, replay=False)
    measured = measurements(cands)
    outcomes = [Outcome(encode(TrialConfig(candidate="t1", replicate=1)),
                        {"reward": 0.9, "audit_accuracy": 0.8}),
                Outcome(encode(TrialConfig(candidate="b", replicate=1)), {"reward": 0.7},
                        "error")]
    record(measured, outcomes)
    assert measured["t1"].rewards == {1: 0.9} and measured["t1"].audits[1] == 0.8
    assert math.isnan(measured["b"].rewards[1]) and measured["b"].statuses[1] == "error"
    assert measured["b"].failed(1) == [1] and measured["t1"].finished() == {1}


def test_a_diverged_run_stays_recorded_with_its_status_in_confirm_csv():
    cands = candidates(ROWS, top=1, replay=False)
    measured = measurements(cands)
    record(measured, [Outcome(encode(TrialConfig(candidate="t1", replicate=1)),
                              {"reward": math.nan, "status": "diverged"}, "diverged"),
                      Outcome(encode(TrialConfig(candidate="b", replicate=1)),
                              {"reward": 0.9, "audit_accuracy": 0.9})])
    rows = Confirmation(cands, measured, None).rows()
    fresh = {r["candidate"]: r["status"] for r in rows if r["replicate"] == 1}
    assert fresh == {"t1": "diverged", "b": "ok"}


def test_a_confirmation_whose_every_run_failed_decides_nothing_and_says_why():
    cands = candidates(ROWS, top=2, replay=False)
    measured = measurements(cands)
    record(measured, [Outcome(encode(TrialConfig(candidate=c.key, replicate=r)), {}, "error")
                      for c in cands for r in (1, 2)])
    conf = Confirmation.decide(cands, measured, replicates=2)
    assert conf.verdict is None and conf.status == FAILED
    assert "none of the confirmation's 6 trainings finished" in conf.reason


def test_without_confirmation_the_margin_is_one_seed_against_the_base_arm():
    margin = search_margin(ROWS, ROWS[0])
    assert margin == {"margin_reward": pytest.approx(0.03), "margin_audit": pytest.approx(-0.01),
                      "margin_seeds": 1}
