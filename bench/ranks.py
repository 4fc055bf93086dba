"""Rank correlation for the benches: Spearman's rho (`scipy.stats.spearmanr`) over the pairs
where both values are finite, and its percentile bootstrap interval resampling the pairs
(`scipy.stats.bootstrap`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

BOOTSTRAP = 10_000  # resamples


def finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a[i], b[i]) where both are finite, as two arrays."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    x, y = np.array(pairs, dtype=float).T
    return x, y


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho of the finite pairs; NaN below 3 pairs or where one side is constant."""
    from scipy.stats import spearmanr

    x, y = finite_pairs(a, b)
    if len(x) < 3:
        return math.nan
    with warnings.catch_warnings():  # constant input: rho is undefined, NaN says so
        warnings.simplefilter("ignore")
        value = float(spearmanr(x, y).statistic)
    return value if math.isfinite(value) else math.nan


def spearman_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                      resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho of the finite pairs and its percentile bootstrap interval at
    `confidence`, resampling the pairs; NaN below 3 pairs. A resample whose ranks are constant
    on one side has no rho and is left out of the percentiles (the bootstrap conditional on a
    defined statistic)."""
    from scipy.stats import bootstrap, spearmanr

    x, y = finite_pairs(a, b)
    rho = spearman(x, y)
    if len(x) < 3:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():  # constant resamples (rho undefined): handled below
        warnings.simplefilter("ignore")
        result = bootstrap((x, y), lambda u, v: spearmanr(u, v).statistic, paired=True,
                           vectorized=False, n_resamples=resamples, method="percentile",
                           confidence_level=confidence, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        values = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
        tail = 50 * (1 - confidence)
        low, high = (np.percentile(values, [tail, 100 - tail]) if len(values)
                     else (math.nan, math.nan))
    return rho, float(low), float(high)
