"""Small-sample statistics for comparing policies over seeds: mean, std, Student-t CI, the
Bonferroni level that makes k such intervals hold together, and the power of the confirmation's
rule (a paired margin's corrected interval above 0) from a measured paired SD."""

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


POWER = 0.80


def power(margin: float, sd: float, n: int, k: int = 1, confidence: float = CONFIDENCE,
          image_sd: float = 0.0) -> float:
    """The probability that a true paired margin `margin` (SD `sd` of one pair's difference)
    over `n` pairs gets a lower bound above 0 in its interval at the Bonferroni level for `k`:
    the noncentral Student-t tail beyond the one-sided critical value. `image_sd`: the SD of
    the evaluation images' own term in the margin (a fixed image set's luck, which no number of
    pairs averages away; `two_way`), added to the standard error. It is the power of the
    confirmation's "beats the base" once the candidate is the one picked."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    from scipy.stats import nct, t

    crit = float(t.ppf(1 - (1 - confidence) / (2 * k), n - 1))
    se = math.sqrt(sd ** 2 / n + image_sd ** 2)
    return float(nct.sf(crit, n - 1, margin / se))


def detectable_margin(sd: float, n: int, k: int = 1, target: float = POWER,
                      confidence: float = CONFIDENCE, image_sd: float = 0.0) -> float:
    """The smallest true margin that `n` pairs with paired SD `sd` find with probability
    `target` under the rule above (NaN below 2 pairs or without a finite SD)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    from scipy.optimize import brentq

    def gap(m: float) -> float:
        return power(m, sd, n, k, confidence, image_sd) - target

    high = sd + image_sd
    while gap(high) < 0:
        high *= 2
    return float(brentq(gap, 0.0, high, xtol=1e-7))


def replicates_for(margin: float, sd: float, k: int = 1, target: float = POWER,
                   confidence: float = CONFIDENCE, image_sd: float = 0.0,
                   most: int = 200) -> int:
    """The fewest pairs that find `margin` with probability `target` (`most` + 1 if none up
    to `most` do: an image term as large as the margin is a floor no replicates lower)."""
    for n in range(2, most + 1):
        if power(margin, sd, n, k, confidence, image_sd) >= target:
            return n
    return most + 1


def two_way(d: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of `d` (seeds x images: a margin per seed and image) and its interval when both
    the seeds and the images are samples: a two-way random-effects variance of the mean,
    (MS_seed + MS_image - MS_residual) / (seeds x images), never below the seeds-only one,
    with the seeds' degrees of freedom (Student-t at seeds - 1). A fixed evaluation set's own
    luck (a policy that happens to suit these images) widens it; over the seeds alone it would
    not, however many seeds there were. `std` is the per-seed SD that gives this interval."""
    d = np.asarray(d, dtype=float)
    s, n = d.shape
    if s < 2 or n < 2:
        return estimate(d.mean(axis=1) if n else [], confidence)
    from scipy.stats import t

    rows, cols, grand = d.mean(axis=1), d.mean(axis=0), float(d.mean())
    ms_seed = n * float(rows.var(ddof=1))
    ms_image = s * float(cols.var(ddof=1))
    resid = d - rows[:, None] - cols[None, :] + grand
    ms_resid = float((resid ** 2).sum()) / ((s - 1) * (n - 1))
    var = max(ms_seed, ms_seed + ms_image - ms_resid) / (s * n)
    half = float(t.ppf(0.5 + confidence / 2, s - 1)) * math.sqrt(var)
    return Estimate(s, grand, math.sqrt(var * s), grand - half, grand + half, confidence)
