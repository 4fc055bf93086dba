"""bench/ssl_quality.py's computed figures on results whose answer is known: paired
differences by seed, the verdict on found vs SimCLR, the rotation score's Spearman."""

from __future__ import annotations

import math

from bench.ssl_quality import paired, spearman_ci, verdict
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


def test_spearman_with_a_bootstrap_interval() -> None:
    x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    rho, low, high = spearman_ci(x, [v * 2 for v in x])
    assert rho == 1.0 and math.isclose(low, 1.0) and math.isclose(high, 1.0)
    rho, low, high = spearman_ci(x, [0.3, 0.1, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5])
    assert low < rho < high
    assert all(math.isnan(v) for v in spearman_ci([0.1, 0.2], [0.3, math.nan]))
