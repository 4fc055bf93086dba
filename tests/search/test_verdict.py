"""The confirmation's decision (search.stages.verdict): the best of k by its paired margin on the
audit images, a Bonferroni-corrected paired interval, the pool's margin beside it, failed runs
counted as losses, no verdict on too few base pairs, and the smallest margin it could find."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from children.reward import pack_hits, unpack_hits
from search.stages.confirm import Measurement, candidates
from search.stages.verdict import AUDIT, REWARD, Decision, verdict
from search.stats import detectable_margin
from search.trials.config import TrialConfig, encode
from search.trials.references import BASE


def row(trial: str, reward: float, ref: str = "") -> dict[str, Any]:
    config = encode(TrialConfig(reference=ref)) if ref else {"sp0_op0": trial}
    return {"trial_id": trial, "reference": ref, "status": "ok", "reward": reward,
            "audit_accuracy": reward, "config": config}


ROWS = [row("t1", 0.95), row("t2", 0.94), row("ta", 0.93, "trivialaugment"), row("b", 0.92, BASE),
        row("t3", 0.91)]


def measure(values: dict[str, list[tuple[float, float] | str]]) -> dict[str, Measurement]:
    """Fresh replicates 1, 2, ... of each candidate: (reward, audit), or a status string for a
    run that did not finish ("diverged", "error")."""
    out = {}
    for key, runs in values.items():
        m = Measurement()
        for rep, run in enumerate(runs, 1):
            if isinstance(run, str):
                m.add(rep, math.nan, math.nan, status=run)
            else:
                m.add(rep, *run)
        out[key] = m
    return out


def t_interval(diffs: list[float], k: int) -> tuple[float, float]:
    """The paired Student-t interval at the Bonferroni level for k margins (95% together)."""
    n = len(diffs)
    half = stats.t.ppf(1 - 0.025 / k, n - 1) * stats.tstd(diffs) / math.sqrt(n)
    mean = sum(diffs) / n
    return mean - half, mean + half


def test_the_best_is_the_best_paired_audit_margin_with_a_bonferroni_interval():
    cands = candidates(ROWS, top=2, replay=False)  # t1 won the search with 0.95
    v = verdict(cands, measure({
        "b": [(0.92, 0.91), (0.93, 0.92), (0.92, 0.91), (0.91, 0.90)],
        "t1": [(0.96, 0.90), (0.97, 0.91), (0.96, 0.90), (0.95, 0.90)],
        "t2": [(0.93, 0.94), (0.93, 0.945), (0.925, 0.935), (0.91, 0.93)]}))
    assert v.best.key == "t2" and v.k == 2 and v.basis == AUDIT
    diffs = [0.03, 0.025, 0.025, 0.03]
    assert v.margin.mean == pytest.approx(sum(diffs) / 4)
    assert (v.margin.ci_low, v.margin.ci_high) == pytest.approx(t_interval(diffs, k=2))
    assert v.other.mean == pytest.approx((0.01 + 0.0 + 0.005 + 0.0) / 4)  # the pool's, beside
    assert v.decision is Decision.BEATS_BASE and v.exported.key == "t2"
    assert "beats crop/flip" in v.text() and "audit accuracy" in v.text()
    prov = v.provenance()
    assert prov["verdict"] == "beats_base" and prov["exported"] == "candidate"
    assert prov["decided_on"] == "audit" and prov["correction_k"] == 2
    assert prov["margin_audit_ci95"] == pytest.approx(list(t_interval(diffs, 2)), abs=1e-6)
    assert prov["interval_level"] == pytest.approx(0.975) and prov["confidence"] == 0.95
    assert prov["estimation_replicates"] == [1, 2, 3, 4] and prov["confirmed_over_seeds"] == 4


def test_a_margin_on_the_pool_alone_does_not_beat_the_base():
    """t1 fits the validation pool's images (the search selected it there): its pool margin is
    large and steady, its audit margin nothing. Deciding on the pool, as before, exported it."""
    pool_fit = [(0.95, 0.91), (0.955, 0.92), (0.95, 0.905), (0.945, 0.91)]
    base = [(0.92, 0.91), (0.925, 0.915), (0.92, 0.91), (0.915, 0.905)]
    v = verdict(candidates(ROWS, top=1, replay=False), measure({"b": base, "t1": pool_fit}))
    assert v.other.ci_low > 0  # on the pool it "beats the base"
    assert v.decision is not Decision.BEATS_BASE and v.exported.key == "b"
    assert v.margin.ci_low < 0 < v.margin.ci_high


def test_without_audit_accuracies_the_reward_decides_and_says_so():
    base = [(0.90, math.nan), (0.91, math.nan), (0.90, math.nan)]
    best = [(0.95, math.nan), (0.955, math.nan), (0.95, math.nan)]
    v = verdict(candidates(ROWS, top=1, replay=False), measure({"b": base, "t1": best}))
    assert v.basis == REWARD and v.decision is Decision.BEATS_BASE
    assert v.provenance()["decided_on"] == "reward" and "reward" in v.text()


def test_a_diverged_replicate_counts_as_a_loss_not_as_a_missing_pair():
    """On its 5 finished replicates t1 beats the base clearly; it diverged on 3 of 8. Judged on
    survivors (the old rule) it was exported."""
    base = [(0.90, 0.90)] * 8
    good = (0.95, 0.95)
    t1 = [good, "diverged", good, good, "error", good, "diverged", good]
    v = verdict(candidates(ROWS, top=1, replay=False), measure({"b": base, "t1": t1}), 8)
    assert v.decision is not Decision.BEATS_BASE and v.exported.key == "b"
    assert v.margin.n == 8 and v.pairs == tuple(range(1, 9))
    assert v.margin.mean == pytest.approx((5 * 0.05 - 3 * 0.90) / 8)
    assert v.losses["t1"] == (2, 5, 7) and v.provenance()["failed_replicates"] == {"t1": [2, 5, 7]}
    assert v.means["t1"][1] == pytest.approx(5 * 0.95 / 8)
    survivors = verdict(candidates(ROWS, top=1, replay=False),
                        measure({"b": [base[i] for i in (0, 2, 3, 5, 7)], "t1": [good] * 5}))
    assert survivors.decision is Decision.BEATS_BASE  # what the 5 survivors alone would say


def test_the_base_missing_one_replicate_pairs_the_rest_two_leave_no_verdict():
    good = [(0.95, 0.95 + 0.001 * i) for i in range(6)]
    one = [(0.9, 0.9), "error", (0.9, 0.9), (0.9, 0.9), (0.9, 0.9), (0.9, 0.9)]
    v = verdict(candidates(ROWS, top=1, replay=False), measure({"b": one, "t1": good}), 6)
    assert v.pairs == (1, 3, 4, 5, 6) and v.decision is Decision.BEATS_BASE
    two = [(0.9, 0.9), "error", (0.9, 0.9), "diverged", (0.9, 0.9), (0.9, 0.9)]
    v = verdict(candidates(ROWS, top=1, replay=False), measure({"b": two, "t1": good}), 6)
    assert v.decision is Decision.NO_VERDICT and v.exported.key == "b"
    assert "finished only 4 of 6 fresh replicates" in v.text()


def test_the_detectable_margin_comes_from_the_measured_paired_sd():
    base = [(0.90, 0.90), (0.91, 0.92), (0.90, 0.89), (0.92, 0.91), (0.90, 0.90)]
    t1 = [(0.91, 0.92), (0.91, 0.91), (0.92, 0.90), (0.92, 0.93), (0.91, 0.90)]
    t2 = [(0.89, 0.89), (0.90, 0.93), (0.90, 0.88), "diverged", (0.90, 0.91)]
    v = verdict(candidates(ROWS, top=2, replay=False), measure({"b": base, "t1": t1, "t2": t2}))
    d1 = [0.02, -0.01, 0.01, 0.02, 0.0]
    d2 = [-0.01, 0.01, -0.01, 0.01]  # its loss at replicate 4 is no measurement of noise
    ss = sum((x - sum(d) / len(d)) ** 2 for d in (d1, d2) for x in d)
    sd = math.sqrt(ss / (4 + 3))
    assert v.paired_sd == pytest.approx(sd)
    assert v.detectable == pytest.approx(detectable_margin(sd, 5, 2))
    assert v.provenance()["detectable_margin"] == pytest.approx(v.detectable, abs=1e-6)


def test_the_interval_widens_with_the_candidates_the_best_was_picked_from():
    """The same margins: beats the base when the best is the only candidate, not when it is the
    best of three (each interval then at 1 - 0.05/3)."""
    base = [(0.9, 0.90), (0.9, 0.91), (0.9, 0.92), (0.9, 0.90)]
    best = [(0.9, 0.915), (0.9, 0.915), (0.9, 0.94), (0.9, 0.91)]  # +0.015 +0.005 +0.02 +0.01
    low = [(0.8, 0.80)] * 4
    one = verdict(candidates(ROWS, top=1, replay=False), measure({"b": base, "t1": best}))
    three = verdict(candidates(ROWS, top=3, replay=False),
                    measure({"b": base, "t1": best, "t2": low, "ta": low}))
    diffs = [0.015, 0.005, 0.02, 0.01]
    assert one.margin.ci_low == pytest.approx(t_interval(diffs, 1)[0])
    assert three.margin.ci_low == pytest.approx(t_interval(diffs, 3)[0])
    assert t_interval(diffs, 1)[0] > 0 > t_interval(diffs, 3)[0]
    assert one.decision is Decision.BEATS_BASE and one.exported.key == "t1"
    assert three.decision is Decision.WITHIN_NOISE and three.exported.key == "b"


def test_noise_sized_margins_are_reported_as_such_and_keep_the_base():
    v = verdict(candidates(ROWS, top=1, replay=False),
                measure({"b": [(0.9, 0.92), (0.9, 0.93), (0.9, 0.90)],
                         "t1": [(0.9, 0.95), (0.9, 0.91), (0.9, 0.90)]}))
    assert v.decision is Decision.WITHIN_NOISE and v.exported.key == "b"
    assert "not distinguishable from the base" in v.text()
    assert v.provenance()["exported"] == "base" and v.provenance()["candidate"] == "t1"


def test_one_fresh_replicate_gives_no_interval_and_keeps_the_base():
    v = verdict(candidates(ROWS, top=1, replay=False),
                measure({"b": [(0.90, 0.9)], "t1": [(0.99, 0.99)]}))
    assert math.isnan(v.margin.ci_low) and v.decision is Decision.WITHIN_NOISE
    assert v.exported.key == "b" and "no interval" in v.text() and math.isnan(v.detectable)


def test_when_the_base_has_the_best_mean_the_verdict_is_keep_the_base():
    v = verdict(candidates(ROWS, top=2, replay=False),
                measure({"b": [(0.9, 0.95), (0.9, 0.95)], "t1": [(0.9, 0.95), (0.9, 0.94)],
                         "t2": [(0.9, 0.90), (0.9, 0.91)]}))
    assert v.decision is Decision.KEPT_BASE and v.best.key == "t1" and v.exported.key == "b"
    assert v.text().startswith("no policy beat crop/flip; keep the base")
    assert v.provenance()["verdict"] == "kept_base"


def test_nothing_finished_is_no_verdict_at_all():
    assert verdict(candidates(ROWS, top=1, replay=False),
                   measure({"b": ["error"], "t1": ["diverged"]})) is None


def with_images(values: dict[str, list[np.ndarray]]) -> dict[str, Measurement]:
    """Fresh replicates given as per-audit-image correctness: the audit accuracy is its mean,
    the reward the same (the pool is not what this is about)."""
    out = {}
    for key, runs in values.items():
        m = Measurement()
        for rep, hits in enumerate(runs, 1):
            m.add(rep, float(hits.mean()), float(hits.mean()), hits=hits)
        out[key] = m
    return out


def test_a_candidate_that_suits_these_audit_images_is_not_a_win_over_images_in_general():
    """t1 beats the base by the same 2 of 100 audit images at every replicate, and nowhere else:
    over the seeds alone its margin is certain (+0.02 every time); over images it rests on two.
    The interval that counts the images as a sample contains 0; the seeds-only one did not."""
    rng = np.random.default_rng(0)
    base_runs, cand_runs = [], []
    for _ in range(6):
        hits = rng.random(100) < 0.8
        hits[:2] = False
        lucky = hits.copy()
        lucky[:2] = True  # the two images it suits
        base_runs.append(hits)
        cand_runs.append(lucky)
    cands = candidates(ROWS, top=1, replay=False)
    v = verdict(cands, with_images({"b": base_runs, "t1": cand_runs}))
    assert v.images_counted and v.margin.mean == pytest.approx(0.02)
    assert v.margin.ci_low < 0 and v.decision is not Decision.BEATS_BASE
    assert v.provenance()["interval_counts"] == "seeds and images"
    seeds_only = verdict(cands, measure({"b": [(h.mean(), h.mean()) for h in base_runs],
                                         "t1": [(h.mean(), h.mean()) for h in cand_runs]}))
    assert not seeds_only.images_counted and seeds_only.margin.ci_low > 0
    assert seeds_only.provenance()["interval_counts"] == "seeds"


def test_a_margin_spread_over_many_images_still_beats_the_base_with_images_counted():
    rng = np.random.default_rng(1)
    base_runs = [rng.random(400) < 0.80 for _ in range(6)]
    cand_runs = [rng.random(400) < 0.88 for _ in range(6)]
    v = verdict(candidates(ROWS, top=1, replay=False),
                with_images({"b": base_runs, "t1": cand_runs}))
    assert v.images_counted and v.decision is Decision.BEATS_BASE


def test_a_pair_without_its_images_falls_back_to_the_seeds_and_says_so():
    rng = np.random.default_rng(2)
    measured = with_images({"b": [rng.random(50) < 0.8 for _ in range(4)],
                            "t1": [rng.random(50) < 0.8 for _ in range(4)]})
    del measured["t1"].hits[3]
    v = verdict(candidates(ROWS, top=1, replay=False), measured)
    assert not v.images_counted and v.provenance()["interval_counts"] == "seeds"


def test_record_reads_each_audit_image_a_trial_reported():
    from search.stages.confirm import measurements, record
    from tests.search.test_confirm import Outcome

    hits = np.array([True, False, True, True, False])
    cands = candidates(ROWS, top=1, replay=False)
    measured = measurements(cands)
    record(measured, [Outcome(encode(TrialConfig(candidate="t1", replicate=1)),
                              {"reward": 0.9, "audit_accuracy": 0.6,
                               "audit_hits": pack_hits(hits)})])
    assert measured["t1"].hits[1].tolist() == hits.astype(float).tolist()
    assert unpack_hits("garbage") is None and unpack_hits("") is None
