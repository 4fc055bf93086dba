"""bench/ssl_quality.py's computed figures on results whose answer is known: paired
differences by seed, the verdict on found vs SimCLR, the floor's verdicts (found and SimCLR vs
the untrained trunk), the rotation score's Spearman."""

from __future__ import annotations

import math

from bench.ssl_quality import (
    ARMS,
    RANDOM_INIT,
    difference_lines,
    floor_verdict,
    paired,
    spearman_ci,
    verdict,
)
from search.stats import Estimate


def _results(found: list[float], simclr: list[float]) -> list[dict]:
    rows = [{"arm": "found", "seed": s, "probe": v} for s, v in enumerate(found)]
    return rows + [{"arm": "simclr", "seed": s, "probe": v} for s, v in enumerate(simclr)]


def test_differences_pair_by_seed() -> None:
    # seeds differ by 0.1 between them, the arms by exactly +0.02 within each: no spread
    e = paired(_results([0.32, 0.42, 0.52], [0.30, 0.40, 0.50]), "found", "simclr")
    assert e.n == 3 and math.isclose(e.mean, 0.02) and e.ci_high - e.ci_low < 1e-9
    missing = paired(_results([0.32, 0.42], [0.30]), "found", "simclr")
    assert missing.n == 1  # only the seeds both arms have


def test_the_verdict_follows_the_interval() -> None:
    assert verdict(Estimate(5, 0.02, 0.01, 0.01, 0.03)).startswith("**met**")
    assert verdict(Estimate(5, -0.02, 0.01, -0.03, -0.01)).startswith("**missed**")
    across = verdict(Estimate(5, 0.005, 0.01, -0.01, 0.02))
    assert across.startswith("**not shown**") and "at or above" in across
    assert verdict(Estimate(1, 0.02, math.nan, math.nan, math.nan)).startswith("unresolved")


def test_the_floor_is_an_arm_whose_index_leaves_the_others_views_alone() -> None:
    # an arm's index in ARMS seeds its views: the three pre-trained arms keep theirs
    assert ARMS[:3] == ("cropflip", "simclr", "found") and ARMS[3] == RANDOM_INIT


def test_the_floor_verdict_follows_the_interval() -> None:
    assert floor_verdict(Estimate(5, 0.1, 0.01, 0.08, 0.12), "found").startswith(
        "**above the floor**: found beats")
    assert floor_verdict(Estimate(5, -0.02, 0.01, -0.03, -0.01), "simclr").startswith(
        "**below the floor**: the untrained trunk beats simclr")
    across = floor_verdict(Estimate(5, -0.005, 0.01, -0.02, 0.01), "found")
    assert across.startswith("**not shown**") and "below 0" in across
    assert floor_verdict(Estimate(1, 0.1, math.nan, math.nan, math.nan), "found").startswith(
        "unresolved")


def test_the_difference_lines_read_every_arm_against_the_floor() -> None:
    """found beats SimCLR by 2 points and the floor by 12; SimCLR beats the floor by 10;
    crop/flip only sits on it (1 point either way), paired by seed."""
    probes = {"found": [0.32, 0.42, 0.52], "simclr": [0.30, 0.40, 0.50],
              "cropflip": [0.21, 0.29, 0.41], RANDOM_INIT: [0.20, 0.30, 0.40]}
    results = [{"arm": arm, "seed": s, "probe": v} for arm, values in probes.items()
               for s, v in enumerate(values)]
    lines = difference_lines(results)
    by = {line.split(":")[0]: line for line in lines if line.startswith("- ")}
    assert by["- found − random init"] == "- found − random init: +12.0 [+12.0, +12.0]"
    assert by["- simclr − random init"] == "- simclr − random init: +10.0 [+10.0, +10.0]"
    assert "+0.3" in by["- crop/flip − random init"]  # mean of +1, -1, +1 points
    assert by["- found − simclr"] == "- found − simclr: +2.0 [+2.0, +2.0]"
    target = next(line for line in lines if line.startswith("Target"))
    floor = next(line for line in lines if line.startswith("Floor"))
    assert "**met**" in target
    assert "found: **above the floor**" in floor and "SimCLR: **above the floor**" in floor
    without = difference_lines([r for r in results if r["arm"] != RANDOM_INIT])
    assert "- found − random init: n/a" in without
    assert "found: unresolved" in next(line for line in without if line.startswith("Floor"))


def test_spearman_with_a_bootstrap_interval() -> None:
    x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    rho, low, high = spearman_ci(x, [v * 2 for v in x])
    assert rho == 1.0 and math.isclose(low, 1.0) and math.isclose(high, 1.0)
    rho, low, high = spearman_ci(x, [0.3, 0.1, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])
    assert low < rho < high
    assert all(math.isnan(v) for v in spearman_ci([0.1, 0.2], [0.3, math.nan]))
