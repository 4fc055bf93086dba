"""Small-sample statistics for comparing policies over seeds: mean, std, Student-t CI, and the
Bonferroni level that makes k such intervals hold together."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean, sample std and Student-t confidence interval of the mean (NaN below 2 values) at
    the two-sided level `confidence`."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean ± t(n-1) · s / sqrt(n): the two-sided `confidence` interval of the mean over seeds
    (non-finite values are left out). Its lower bound alone is a one-sided test at
    (1 - confidence) / 2."""
    if not 0 < confidence < 1:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence}")
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan, confidence)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan, confidence)
    from scipy.stats import t

    std = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half, confidence)


def bonferroni(confidence: float, k: int) -> float:
    """The level of each of `k` intervals so that all k hold together with probability at least
    `confidence` (Bonferroni): 1 - (1 - confidence) / k. An interval picked from the k after
    looking at the data (the best of k candidates) is then still covered at `confidence`."""
    if k < 1:
        raise ValueError(f"`k >= 1` must hold, but got k={k}")
    return 1 - (1 - confidence) / k
