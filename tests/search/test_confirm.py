"""The confirmation stage's logic: candidates, fresh runs to train, the best by fresh mean, its
paired margin with a Bonferroni-corrected interval, and the base unless that interval is above 0."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from scipy import stats

from search.stages.confirm import (
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


def _t_interval(diffs: list[float], k: int) -> tuple[float, float]:
    """The paired Student-t interval at the Bonferroni level for k margins (95% together)."""
    n = len(diffs)
    half = stats.t.ppf(1 - 0.025 / k, n - 1) * stats.tstd(diffs) / math.sqrt(n)
    mean = sum(diffs) / n
    return mean - half, mean + half


def test_the_best_is_the_best_fresh_mean_not_the_best_search_reward():
    cands = candidates(ROWS, top=2, replay=False)  # t1 won the search with 0.95
    measured = _measure({"b": [(0.92, 0.91), (0.93, 0.92), (0.92, 0.91), (0.91, 0.90)],
                         "t1": [(0.92, 0.90), (0.91, 0.90), (0.93, 0.90), (0.90, 0.90)],
                         "t2": [(0.95, 0.93), (0.955, 0.94), (0.945, 0.94), (0.94, 0.93)]})
    v = verdict(cands, measured)
    assert v.best.key == "t2" and v.k == 2
    diffs = [0.03, 0.025, 0.025, 0.03]
    assert v.reward_margin.mean == pytest.approx(sum(diffs) / 4)
    assert (v.reward_margin.ci_low, v.reward_margin.ci_high) == pytest.approx(
        _t_interval(diffs, k=2))
    assert v.reward_margin.n == 4 and v.reward_margin.ci_low > 0
    assert v.audit_margin.mean == pytest.approx((0.02 + 0.02 + 0.03 + 0.03) / 4)
    assert v.significant and v.winner.key == "t2" and v.exported == "candidate"
    assert "beats crop/flip" in v.text() and "Bonferroni over 2" in v.text()
    prov = v.provenance()
    assert prov["verdict"] == "beats_base" and prov["exported"] == "candidate"
    assert prov["correction"] == "bonferroni" and prov["correction_k"] == 2
    assert prov["interval_level"] == pytest.approx(0.975) and prov["confidence"] == 0.95
    assert prov["estimation_replicates"] == [1, 2, 3, 4] and prov["confirmed_over_seeds"] == 4


def test_the_search_reward_that_selected_a_candidate_never_enters_its_margin():
    """t1's search reward (0.95, replicate 0) is far above the base's (0.92): with it, the
    margin would be positive; on fresh replicates alone the two are equal."""
    cands = candidates(ROWS, top=1, replay=False)
    fresh = [(0.92, 0.9), (0.93, 0.9), (0.91, 0.9)]
    v = verdict(cands, _measure({"b": fresh, "t1": fresh}))
    assert v.reward_margin.mean == 0 and v.means["t1"] == pytest.approx(0.92)
    assert not v.significant and v.winner.key == "b" and v.kind == "base"


def test_the_interval_widens_with_the_candidates_the_best_was_picked_from():
    """The same margins: significant when the best is the only candidate, not when it is the
    best of three (each interval then at 1 - 0.05/3)."""
    base = [(0.90, 0.9), (0.91, 0.9), (0.92, 0.9), (0.90, 0.9)]
    best = [(0.915, 0.9), (0.915, 0.9), (0.94, 0.9), (0.91, 0.9)]  # +0.015 +0.005 +0.02 +0.01
    low = [(0.80, 0.8)] * 4
    one = verdict(candidates(ROWS, top=1, replay=False), _measure({"b": base, "t1": best}))
    three = verdict(candidates(ROWS, top=3, replay=False),
                    _measure({"b": base, "t1": best, "t2": low, "ta": low}))
    diffs = [0.015, 0.005, 0.02, 0.01]
    assert one.k == 1 and three.k == 3 and one.best.key == three.best.key == "t1"
    assert one.reward_margin.mean == pytest.approx(three.reward_margin.mean)
    assert one.reward_margin.ci_low == pytest.approx(_t_interval(diffs, 1)[0])
    assert three.reward_margin.ci_low == pytest.approx(_t_interval(diffs, 3)[0])
    assert _t_interval(diffs, 1)[0] > 0 > _t_interval(diffs, 3)[0]
    assert one.significant and one.winner.key == "t1"
    assert not three.significant and three.winner.key == "b" and three.kind == "within_noise"


def test_noise_sized_margins_are_reported_as_such_and_keep_the_base():
    cands = candidates(ROWS, top=1, replay=False)
    measured = _measure({"b": [(0.92, 0.9), (0.93, 0.9), (0.90, 0.9)],
                         "t1": [(0.95, 0.9), (0.91, 0.9), (0.90, 0.9)]})
    v = verdict(cands, measured)
    assert v.best.key == "t1" and not v.significant and v.winner.key == "b"
    assert v.reward_margin.ci_low < 0 < v.reward_margin.ci_high
    assert "not distinguishable from the base" in v.text() and "keep the base" in v.text()
    assert v.provenance()["verdict"] == "within_noise"
    assert v.provenance()["exported"] == "base" and v.provenance()["candidate"] == "t1"


def test_one_fresh_replicate_gives_no_interval_and_keeps_the_base():
    cands = candidates(ROWS, top=1, replay=False)
    v = verdict(cands, _measure({"b": [(0.90, 0.9)], "t1": [(0.99, 0.9)]}))
    assert v.reward_margin.mean == pytest.approx(0.09) and math.isnan(v.reward_margin.ci_low)
    assert not v.significant and v.winner.key == "b" and v.kind == "within_noise"
    assert "no interval" in v.text()


def test_when_the_base_has_the_best_mean_the_verdict_is_keep_the_base():
    cands = candidates(ROWS, top=2, replay=False)
    measured = _measure({"b": [(0.95, 0.9), (0.95, 0.9)], "t1": [(0.95, 0.9), (0.94, 0.9)],
                         "t2": [(0.90, 0.9), (0.91, 0.9)]})
    v = verdict(cands, measured)
    assert v.base_wins and v.text().startswith("no policy beat crop/flip; keep the base")
    assert v.best.key == "t1" and v.winner.key == "b"
    assert v.provenance()["verdict"] == "base" and v.provenance()["exported"] == "base"


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
    assert math.isnan(measured["b"].rewards[1])


def test_without_confirmation_the_margin_is_one_seed_against_the_base_arm():
    margin = search_margin(ROWS, ROWS[0])
    assert margin == {"margin_reward": pytest.approx(0.03), "margin_audit": pytest.approx(-0.01),
                      "margin_seeds": 1}
