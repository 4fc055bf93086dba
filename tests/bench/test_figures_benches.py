"""The computed verdicts of bench/search_quality.py, bench/transfer.py and
bench/density_validity.py on figures whose answer is known, and bench/transfer.py's quick path
end to end (a real policy file, real digits, search.evaluate's training)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench.density_validity import bootstrap_ci, pick
from bench.free_baselines import FREE, baselines, paired, present
from bench.quality_verdicts import Agreement
from bench.transfer import verdict_text
from search.evaluate.statistics import Difference
from search.stats import Estimate
from tests.conftest import ROOT, python_path


def _est(mean: float, low: float, high: float, n: int = 6) -> Estimate:
    return Estimate(n, mean, 0.01, low, high)


def _agreement(margin: float, test: Estimate, exported: bool) -> Agreement:
    return Agreement("tpe seed 0", "tpe-0", exported, margin, (margin - 0.01, margin + 0.01),
                     0.0, (-0.01, 0.01), 3, 8, test)


def test_the_test_set_ci_contains_the_estimate_only_between_its_bounds() -> None:
    test = _est(0.01, -0.005, 0.025)
    assert _agreement(0.02, test, False).contains
    assert not _agreement(0.03, test, False).contains
    assert not _agreement(-0.01, test, False).contains


def test_the_export_decision_is_judged_by_the_test_set_interval() -> None:
    above, across, below = _est(0.02, 0.01, 0.03), _est(0.0, -0.01, 0.01), _est(-0.02, -0.03,
                                                                                   -0.01)
    assert _agreement(0.02, above, True).decision.startswith("agrees")
    assert _agreement(0.02, across, True).decision.startswith("not confirmed")
    assert _agreement(0.02, below, True).decision.startswith("does NOT agree")
    assert _agreement(0.02, above, False).decision.startswith("missed a gain")
    assert _agreement(0.02, across, False).decision.startswith("agrees")


def test_the_transfer_verdict_reads_each_interval() -> None:
    def diff(other: str, e: Estimate) -> Difference:
        return Difference("found", other, e, 3, e)

    text = verdict_text([diff("cropflip", _est(0.02, 0.01, 0.03)),
                         diff("trivialaugment", _est(-0.01, -0.02, 0.005))])
    assert text == ("better than crop/flip (CI above 0); not distinguishable from "
                    "TrivialAugment (CI contains 0)")
    text = verdict_text([diff("cropflip", _est(-0.02, -0.03, -0.01)),
                         diff("cutout", _est(-0.01, -0.02, -0.001)),
                         diff("randaugment", _est(0.02, 0.01, 0.03))])
    assert text == ("worse than crop/flip (CI below 0); worse than crop/flip + Cutout (CI below "
                    "0); better than RandAugment (CI above 0)")


def test_the_free_baselines_are_cutout_randaugment_and_trivialaugment() -> None:
    from search.evaluate.baselines import parse_baselines

    assert set(FREE) == {"cutout", "randaugment", "trivialaugment"}
    assert parse_baselines(baselines()) == ["cropflip", *FREE]  # all known to search.evaluate
    assert parse_baselines(baselines(none=True)) == ["none", "cropflip", *FREE]


def test_two_baselines_are_compared_paired_by_seed_over_the_seeds_both_ran() -> None:
    from types import SimpleNamespace

    from search.evaluate.statistics import RunResult

    def run(arm: str, seed: int, accuracy: float) -> RunResult:
        return RunResult(arm, seed, accuracy, float("nan"), 1.0, 0.1, 1.0)

    runs = [run("cropflip", 0, 0.60), run("cropflip", 1, 0.70), run("cropflip", 2, 0.65),
            run("cutout", 0, 0.58), run("cutout", 1, 0.66), run("cutout", 3, 0.90)]
    ev = SimpleNamespace(runs=runs, arms=[SimpleNamespace(name=n) for n in ("found", "cutout",
                                                                             "cropflip")])
    e = paired(ev, "cropflip", "cutout")  # seeds 0 and 1 only: +0.02, +0.04
    assert (e.n, e.mean) == (2, pytest.approx(0.03)) and e.ci_low < 0.03 < e.ci_high
    assert present(ev) == ["cropflip", "cutout"]  # in the given order, trained ones only


def test_search_quality_judges_the_found_policy_against_every_free_baseline() -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from bench.quality_verdicts import target_lines
    from bench.search_quality import SearchRun
    from search.evaluate.arms import Arm
    from search.evaluate.statistics import RunResult, summarize
    from spaces.schema import BaseAug, load_space

    offsets = {"tpe-0": 0.0, "cropflip": -0.02, "cutout": -0.01, "randaugment": 0.03,
               "trivialaugment": -0.005}  # randaugment beats the found policy on every seed
    noise = [0.001, -0.002, 0.0015, -0.001]
    runs = [RunResult(name, seed, 0.8 + offset + noise[seed] * (1 + k), float("nan"), 1.0, 0.1,
                      1.0) for k, (name, offset) in enumerate(offsets.items())
            for seed in range(4)]
    arms = [Arm(n, "policy" if n == "tpe-0" else "baseline", "", BaseAug()) for n in offsets]
    summaries, differences = summarize(arms, runs)
    ev = SimpleNamespace(arms=summaries, differences=differences, runs=runs)
    run = SearchRun("tpe", 0, Path("out"), [], "t1", 40, 1.0, "exported", {"tpe-0": Path("p")},
                    exported_arm="tpe-0", candidate_arm="tpe-0")
    [line] = target_lines(load_space("digits"), ev, [run], [])
    assert "(target ≥ cropflip with the CI: **met: the CI lies above 0**)" in line
    for name in ("cutout", "trivialaugment"):
        assert re.search(rf"vs {name} \+0\.0\d+ \[.*?\] \(target not worse: \*\*met\*\*\)",
                         line), name
    assert re.search(r"vs randaugment -0\.0\d+ \[.*?\] \(target not worse: \*\*NOT met: the CI "
                     r"lies below 0\*\*\)", line)


def test_policies_are_picked_over_the_whole_reward_range_once_each() -> None:
    rows = [{"status": "ok", "reward": float(k), "config": {"p": k}} for k in range(30)]
    rows.append({"status": "error", "reward": 99.0, "config": {"p": 99}})
    rows.append({"status": "ok", "reward": 40.0, "config": {"p": 0}})  # policy 0 again
    picked = pick(rows, 5)
    rewards = [r["reward"] for r in picked]
    assert rewards == [0.0, 7.0, 14.0, 22.0, 29.0]
    assert rewards == sorted(rewards) and 99.0 not in rewards
    assert len({r["config"]["p"] for r in picked}) == len(picked)


def test_the_bootstrap_interval_of_spearman_tells_order_from_noise() -> None:
    import numpy as np

    x = list(np.arange(12.0))
    low, high = bootstrap_ci(x, [2 * v + 1 for v in x])
    assert low > 0.95 and high == pytest.approx(1.0)
    noise = list(np.random.default_rng(3).permutation(12).astype(float))
    low, high = bootstrap_ci(x, noise)
    assert low < 0 < high


@pytest.mark.slow
def test_transfer_quick_runs_five_arms_per_child_and_writes_no_section(tmp_path) -> None:
    from search.trials.compile import sample_policies
    from spaces.policy import save_policy
    from spaces.schema import load_space

    policy = save_policy(sample_policies(load_space("digits"), 1, seed=3)[0],
                         tmp_path / "policy.yaml")
    before = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    done = subprocess.run([sys.executable, "bench/transfer.py", "--quick", "--spaces", "digits",
                           "--policy", f"digits={policy}", "--root", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": python_path()})
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "out" / "digits-quick.md").read_text()
    assert report.count("| found |") == 2
    for other in ("cropflip", *FREE):  # a row in each child's two tables
        assert report.count(f"| {other} |") == 4, other
    assert report.count("Target (≥ crop/flip with a paired CI above 0)") == 2
    assert "given (--policy)" in report
    assert (ROOT / "docs" / "BENCHMARKS.md").read_text() == before


def test_rank_intervals_leave_out_resamples_without_a_rank_correlation() -> None:
    """Six items, four tied on one side: many resamples hold one value there (no rho); the
    interval is read from the others, and NaN pairs are dropped first."""
    import math

    from bench.ranks import spearman, spearman_interval

    x, y = [0, 0, 0, 0, 1, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    rho, low, high = spearman_interval(x, y, resamples=2000)
    assert rho == pytest.approx(0.8281, abs=1e-4) and 0 < low < rho <= high <= 1
    assert spearman([*x, math.nan], [*y, 0.7]) == rho
    assert all(math.isnan(v) for v in spearman_interval([1, 2], [1, 2]))


def test_the_paired_interval_is_the_paired_t_test_s() -> None:
    from scipy.stats import ttest_rel

    from search.evaluate.statistics import paired

    a, b = [0.51, 0.55, 0.49, 0.60, 0.52], [0.50, 0.50, 0.50, 0.55, 0.47]
    e = paired(a, b)
    low, high = ttest_rel(a, b).confidence_interval(0.95)
    assert (e.n, e.ci_low, e.ci_high) == (5, low, high) and e.mean == pytest.approx(0.03)
    assert paired([*a, float("nan")], [*b, 0.5]) == e  # a pair with a missing run is left out
    with pytest.raises(ValueError, match="as many of each"):
        paired(a, b[:4])
