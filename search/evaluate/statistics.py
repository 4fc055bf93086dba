"""Statistics over seeds: each arm's mean with a Student-t interval, paired differences (scipy's
paired t-test and its interval, `paired`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from search.evaluate.arms import Arm
from search.stats import CONFIDENCE, Estimate, estimate


@dataclass(frozen=True)
class RunResult:
    """One child trained under one arm with one seed."""

    arm: str
    seed: int
    accuracy: float  # plain test accuracy
    tta_accuracy: float  # NaN without test-time augmentation
    train_accuracy: float
    train_loss: float  # last epoch's: tells arms apart where accuracies tie on tiny data
    seconds: float  # training, test and TTA



@dataclass(frozen=True)
class ArmSummary:
    """An arm's test accuracy over the seeds (and with TTA), and what it cost."""

    name: str
    kind: str
    description: str
    accuracies: list[float]
    accuracy: Estimate
    tta: Estimate
    seconds_per_run: float
    seconds_total: float


@dataclass(frozen=True)
class Difference:
    """A found policy minus another arm, paired by seed."""

    arm: str
    other: str
    diff: Estimate
    wins: int  # seeds where the policy is more accurate
    tta_diff: Estimate


def summarize(arms: Sequence[Arm], runs: Sequence[RunResult]
              ) -> tuple[list[ArmSummary], list[Difference]]:
    """Per-arm estimates, and each found policy against every baseline and later policy."""
    by_arm = {arm.name: [r for r in runs if r.arm == arm.name] for arm in arms}
    summaries = []
    for arm in arms:
        rs = by_arm[arm.name]
        seconds = [r.seconds for r in rs]
        summaries.append(ArmSummary(
            arm.name, arm.kind, arm.description, [r.accuracy for r in rs],
            estimate([r.accuracy for r in rs]), estimate([r.tta_accuracy for r in rs]),
            float(np.mean(seconds)) if seconds else math.nan, float(np.sum(seconds))))
    differences = []
    for i, arm in enumerate(arms):
        if not arm.found:
            continue
        for other in arms:
            if other is arm or (other.found and arms.index(other) < i):
                continue
            pairs = _paired(by_arm[arm.name], by_arm[other.name])
            mine, theirs = [a for a, _ in pairs], [b for _, b in pairs]
            wins = sum(a.accuracy > b.accuracy for a, b in pairs)
            differences.append(Difference(
                arm.name, other.name,
                paired([r.accuracy for r in mine], [r.accuracy for r in theirs]), wins,
                paired([r.tta_accuracy for r in mine], [r.tta_accuracy for r in theirs])))
    return summaries, differences


def paired(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """a − b paired by position (seed): the mean difference, its sample std and the paired
    Student-t interval at `confidence` (`scipy.stats.ttest_rel`); pairs with a non-finite value
    are left out, and below 2 pairs the interval is NaN."""
    if len(a) != len(b):
        raise ValueError(f"paired values need as many of each, got {len(a)} and {len(b)}")
    kept = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    d = np.array([x - y for x, y in kept], dtype=float)
    if len(d) < 2:
        return estimate(list(d), confidence)
    import warnings

    from scipy.stats import ttest_rel

    with warnings.catch_warnings():  # equal differences: scipy warns of its cancellation
        warnings.simplefilter("ignore", RuntimeWarning)
        test = ttest_rel([x for x, _ in kept], [y for _, y in kept])
        low, high = test.confidence_interval(confidence)
    return Estimate(len(d), float(d.mean()), float(d.std(ddof=1)), float(low), float(high),
                    confidence)


def _paired(a: list[RunResult], b: list[RunResult]) -> list[tuple[RunResult, RunResult]]:
    seeds = {r.seed: r for r in b}
    return [(r, seeds[r.seed]) for r in a if r.seed in seeds]
