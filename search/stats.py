"""Small-sample statistics for comparing policies over seeds: mean, std, Student-t CI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean, sample std and Student-t confidence interval of the mean (NaN below 2 values)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean ± t(n-1) · s / sqrt(n): the confidence interval of the mean over seeds."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    from scipy.stats import t

    std = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)
