"""The confirmation's decision: does the best candidate beat the base, on images and seeds that
selected nothing?

The search selected its top-k on the validation pool at its common seed. The confirmation
retrains them and the base at fresh replicates 1..r, and decides on the **audit** images: no
selection ever read them, so a policy that fits the pool's particular images (a policy x image
term that no number of replicates averages away: bench/confirm_noise.py measures it) gains
nothing there. The pool's margin is reported beside it. A reward kind whose children have no
audit accuracy is decided on its reward, and says so.

The audit images are a sample too: a policy may happen to suit these particular images, and
that luck is the same at every replicate, so no number of replicates averages it away. Where the
trainings report each audit image's correctness, the margin's interval counts both samples, the
seeds and the images (`search.stats.two_way`); where they do not (`images_counted` false), it
counts the seeds alone and says so.

The best of the k is the one with the best paired margin over the base; its margin gets a
Bonferroni-adjusted paired Student-t interval (each of the k at 1 - 0.05/k, so the picked one is
covered at 95% whatever the pick). It "beats the base" only when that interval lies above 0.

Failure paths decide too: a candidate's replicate that failed or diverged where the base's
finished is counted as a loss, at accuracy 0 (`LOSS`); a replicate the base did not finish
pairs nothing, and with fewer than r - 1 base replicates there is no verdict. The smallest
margin this confirmation could have found with 80% power, from its own measured paired SD, is
part of the verdict (`detectable`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from search.stats import (
    CONFIDENCE,
    POWER,
    Estimate,
    bonferroni,
    detectable_margin,
    estimate,
    two_way,
)

CORRECTION = "bonferroni"
LOSS = 0.0  # a failed or diverged replicate's accuracy: counted against its candidate
AUDIT, REWARD = "audit", "reward"  # what the decision was made on


class Decision(str, Enum):
    """The one outcome of a confirmation (its value is provenance's `verdict`)."""

    BEATS_BASE = "beats_base"  # the best candidate's corrected interval lies above 0
    KEPT_BASE = "kept_base"  # the base's mean was at least the best candidate's
    WITHIN_NOISE = "within_noise"  # a better mean whose interval contains 0, or no interval
    NO_VERDICT = "no_verdict"  # too few base replicates finished to pair


@dataclass(frozen=True)
class Verdict:
    """The best candidate on fresh replicates, its margin over the base on the decision's
    images, the same margin on the validation pool beside it, and the exported candidate."""

    decision: Decision
    exported: Any  # the Candidate exported: the best one when it beats the base, else the base
    best: Any  # the non-base candidate with the best paired margin
    base: Any
    basis: str  # AUDIT or REWARD: what the decision was made on
    margin: Estimate  # best - base on the basis, paired by replicate, at the Bonferroni level
    other: Estimate  # the same pairs on the other measure (the pool's reward beside the audit)
    means: dict[str, tuple[float, float]]  # (reward, audit) means, losses counted, by key
    replicates: int  # fresh replicates asked for
    pairs: tuple[int, ...]  # the replicates the base finished: the margin's pairs
    losses: dict[str, tuple[int, ...]]  # a candidate's failed replicates, counted as losses
    k: int  # candidates the best was picked from: the Bonferroni correction's k
    paired_sd: float  # pooled over the k candidates' finished pairs, on the basis
    confidence: float = CONFIDENCE
    images_counted: bool = False  # the interval counts the audit images as a sample too

    @property
    def beats_base(self) -> bool:
        return self.decision is Decision.BEATS_BASE

    @property
    def level(self) -> float:
        """Each interval's two-sided level: 1 - (1 - confidence) / k."""
        return bonferroni(self.confidence, self.k)

    @property
    def detectable(self) -> float:
        """The smallest true margin this confirmation finds with 80% power, from its measured
        paired SD, pairs and k (NaN without an SD)."""
        return detectable_margin(self.paired_sd, len(self.pairs), self.k, POWER, self.confidence)

    def text(self, base_name: str = "crop/flip") -> str:
        """One plain sentence for the user."""
        n, on = len(self.pairs), _basis_words(self.basis)
        if self.decision is Decision.NO_VERDICT:
            return (f"the base finished only {n} of {self.replicates} fresh replicates: too few "
                    f"pairs for a verdict; keep the base")
        if self.decision is Decision.KEPT_BASE:
            return (f"no policy beat {base_name}; keep the base (over {n} fresh seeds the base's "
                    f"mean {on} was at least the best of the {self.k} confirmed policies')")
        margin = self._margin_text()
        if self.beats_base:
            return f"the best policy beats {base_name} by {margin} {on} over {n} fresh seeds"
        if not math.isfinite(self.margin.ci_low):
            return (f"the best policy's margin over {base_name} is {margin}; keep the base "
                    f"until more seeds show it")
        return (f"the best policy's margin over {base_name} is {margin} {on} over {n} fresh "
                f"seeds: the interval contains 0, so it is not distinguishable from the base; "
                f"keep the base")

    def _margin_text(self) -> str:
        e = self.margin
        if not math.isfinite(e.ci_low):
            return f"{e.mean:+.4f} (no interval: fewer than 2 paired fresh seeds)"
        return (f"{e.mean:+.4f} (simultaneous {self.confidence:.0%} CI [{e.ci_low:+.4f}, "
                f"{e.ci_high:+.4f}], {CORRECTION.capitalize()} over {self.k})")

    def provenance(self) -> dict[str, Any]:
        """JSON-ready figures for best_policy.yaml, candidate_policy.yaml, schedule.json and
        MLflow: the margin on both measures, how its interval was corrected, what the decision
        was made on, the failures counted, the detectable margin, the verdict and the export."""
        reward, audit = (self.margin, self.other) if self.basis == REWARD else (self.other,
                                                                               self.margin)
        best, base = self.means.get(self.best.key, _NAN2), self.means.get(self.base.key, _NAN2)
        return {
            "verdict": self.decision.value,
            "exported": "candidate" if self.beats_base else "base",
            "candidate": self.best.key, "decided_on": self.basis,
            "confirmed_over_seeds": len(self.pairs),
            "estimation_replicates": list(self.pairs),
            "failed_replicates": {k: list(v) for k, v in self.losses.items() if v},
            "mean_reward": _round(best[0]), "base_mean_reward": _round(base[0]),
            "mean_audit": _round(best[1]), "base_mean_audit": _round(base[1]),
            **_estimate_fields("margin_reward", reward),
            **_estimate_fields("margin_audit", audit),
            "paired_sd": _round(self.paired_sd), "detectable_margin": _round(self.detectable),
            "interval_counts": "seeds and images" if self.images_counted else "seeds",
            "detectable_power": POWER,
            "correction": CORRECTION, "correction_k": self.k,
            "confidence": self.confidence, "interval_level": _round(self.level),
        }


_NAN2 = (math.nan, math.nan)


def _basis_words(basis: str) -> str:
    return "audit accuracy" if basis == AUDIT else "reward"


def verdict(cands: list[Any], measured: dict[str, Any], replicates: int | None = None,
            confidence: float = CONFIDENCE) -> Verdict | None:
    """Decide a confirmation (`cands[0]` is the base; `measured` maps a key to its
    `confirm.Measurement`); `replicates`: the fresh replicates asked for (default: the highest
    one measured). None when nothing finished or there is no candidate besides the base."""
    base, others = cands[0], cands[1:]
    runs = [measured[c.key] for c in cands]
    if not others or not any(m.finished() for m in runs):
        return None
    r = replicates or max((rep for m in runs for rep in m.rewards), default=0)
    basis = AUDIT if all(m.audit_known() for m in runs) else REWARD
    pairs = tuple(rep for rep in range(1, r + 1) if rep in measured[base.key].finished())
    level = bonferroni(confidence, len(others))
    margins = {c.key: _margin(measured[c.key], measured[base.key], pairs, basis, level)
               for c in others}
    best = max(others, key=lambda c: _mean(margins[c.key][0]))  # ties: the better search rank
    margin, images = margins[best.key][1:]
    other = estimate(_diffs(measured[best.key], measured[base.key], pairs, _flip(basis)), level)
    means = {c.key: (measured[c.key].mean(REWARD, r), measured[c.key].mean(AUDIT, r))
             for c in cands}
    losses = {c.key: tuple(measured[c.key].failed(r)) for c in cands}
    sd = _pooled_sd(measured, base.key, margins, pairs, basis)
    decision = _decide(margin, means, best.key, base.key, basis, len(pairs), r)
    exported = best if decision is Decision.BEATS_BASE else base
    return Verdict(decision, exported, best, base, basis, margin, other, means, r, pairs,
                   losses, len(others), sd, confidence, images)


def _margin(cand: Any, base: Any, pairs: tuple[int, ...], basis: str,
            level: float) -> tuple[list[float], Estimate, bool]:
    """A candidate's per-replicate margins, their interval at `level`, and whether it counts
    the audit images as a sample (every pair reported its images) or the seeds alone."""
    diffs = _diffs(cand, base, pairs, basis)
    grid = _image_grid(cand, base, pairs) if basis == AUDIT else None
    if grid is None:
        return diffs, estimate(diffs, level), False
    return diffs, two_way(grid, level), True


def _image_grid(cand: Any, base: Any, pairs: tuple[int, ...]) -> np.ndarray | None:
    """Replicates x audit images: the candidate's correctness minus the base's (a candidate's
    failed run counts every image wrong); None unless every pair reported its images."""
    sizes = {len(h) for m in (cand, base) for h in m.hits.values()}
    if len(pairs) < 2 or len(sizes) != 1:
        return None
    n = sizes.pop()
    rows = []
    for rep in pairs:
        a, b = cand.images(rep, n), base.images(rep, n)
        if a is None or b is None:
            return None
        rows.append(a - b)
    return np.array(rows)


def _decide(margin: Estimate, means: dict[str, tuple[float, float]], best: str, base: str,
            basis: str, pairs: int, replicates: int) -> Decision:
    if pairs < replicates - 1 or pairs == 0:
        return Decision.NO_VERDICT
    if math.isfinite(margin.ci_low) and margin.ci_low > 0:
        return Decision.BEATS_BASE
    i = 1 if basis == AUDIT else 0
    if math.isfinite(means[best][i]) and math.isfinite(means[base][i]) and \
            means[base][i] >= means[best][i]:
        return Decision.KEPT_BASE
    return Decision.WITHIN_NOISE


def _flip(basis: str) -> str:
    return REWARD if basis == AUDIT else AUDIT


def _diffs(cand: Any, base: Any, pairs: Iterable[int], basis: str) -> list[float]:
    """The candidate minus the base at each paired replicate, a failed candidate run counted
    at `LOSS`."""
    return [cand.value(rep, basis) - base.value(rep, basis) for rep in pairs]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else -math.inf


def _pooled_sd(measured: dict[str, Any], base: str,
               margins: dict[str, tuple[list[float], Estimate, bool]], pairs: tuple[int, ...],
               basis: str) -> float:
    """The SD of one replicate's margin over the base, pooled over the candidates' finished
    pairs (a loss counted at 0 is no measurement of noise); with the audit images counted, the
    per-seed SD that gives the two-way interval (`search.stats.two_way`)."""
    total, dof = 0.0, 0
    for key, (_, e, _) in margins.items():
        done = tuple(rep for rep in pairs if rep in measured[key].finished())
        if len(done) < 2:
            continue
        if done != pairs:  # its losses are left out
            e = _margin(measured[key], measured[base], done, basis, CONFIDENCE)[1]
        total += e.std ** 2 * (len(done) - 1)
        dof += len(done) - 1
    return math.sqrt(total / dof) if dof else math.nan


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _estimate_fields(prefix: str, e: Estimate) -> dict[str, Any]:
    """`<prefix>_ci95` is the simultaneous 95% interval (each of the k at `interval_level`)."""
    return {prefix: _round(e.mean), f"{prefix}_ci95": [_round(e.ci_low), _round(e.ci_high)],
            f"{prefix}_seeds": e.n}


__all__ = ["AUDIT", "CORRECTION", "LOSS", "REWARD", "Decision", "Verdict", "verdict"]
