"""Headroom, measured before the search spends its budget: can any policy beyond the base beat
the base under this search's own child?

A search can only find what its proxy affords: a child too small or too short for augmentation
to pay makes it answer "keep the base" by construction (RandAugment: the right strength grows
with the model and the data). So the reference arms run first, each under `headroom_seeds`
fresh replicates: the base (crop/flip), TrivialAugment written in the space's ops and a light
RandAugment (search.trials.references; a self-supervised space's SimCLR views in their place).
The headroom is the best of them beyond the base against the base, decided as the confirmation
decides (search.stages.verdict: on the audit images, paired by replicate, a Bonferroni interval
over the arms that counts the seeds and the images). It is reported in the console, the summary,
MLflow and best_policy.yaml; where it is negative beyond noise, or not shown, the text says what
to change; `--headroom-only` and `--stop-without-headroom` stop there.

Pure functions; the session runs the configs as one more Tune experiment (`headroom`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from search.stages.confirm import Candidate, Measurement
from search.stages.verdict import Verdict, verdict
from search.trials.config import TrialConfig, encode, updated
from search.trials.references import BASE, arm_policies

HEADROOM = "headroom"  # the stage's Tune experiment, MLflow stage tag and provenance key
SHOWN, NONE, NOT_SHOWN = "shown", "none", "not_shown"
ADVICE = ("give the child more to gain from augmentation: a wider or longer child "
          "(child.model, child.width, child.epochs) or fewer training images per class "
          "(dataset.train_size); bench/headroom.py measures a grid of such proxies")


def arms(space: Any) -> list[Candidate]:
    """The base, then every other named arm the space can express."""
    names = [BASE, *(n for n in arm_policies(space) if n != BASE)]
    return [Candidate(n, encode(TrialConfig(reference=n))) for n in names]


def headroom_configs(cands: list[Candidate], seeds: int) -> list[dict[str, Any]]:
    """Every arm at fresh replicates 1..seeds (the confirmation's replicates: the same seeds
    train the same arm identically, so the figures agree where they meet)."""
    return [updated(c.config, replicate=rep, stage=HEADROOM, candidate=c.key)
            for c in cands for rep in range(1, seeds + 1)]


@dataclass(frozen=True)
class Headroom:
    """The best arm beyond the base against the base, and what it means for the search."""

    verdict: Verdict
    seeds: int

    @property
    def state(self) -> str:
        """SHOWN (interval above 0), NONE (interval below 0: the base is better beyond noise),
        or NOT_SHOWN."""
        e = self.verdict.margin
        if math.isfinite(e.ci_low) and e.ci_low > 0:
            return SHOWN
        if math.isfinite(e.ci_high) and e.ci_high < 0:
            return NONE
        return NOT_SHOWN

    def _figures(self) -> str:
        v, e = self.verdict, self.verdict.margin
        interval = (f" [{100 * e.ci_low:+.1f}, {100 * e.ci_high:+.1f}]"
                    if math.isfinite(e.ci_low) else " (no interval)")
        return (f"{v.best.key} − crop/flip {100 * e.mean:+.1f} points{interval} on the audit "
                f"images over {len(v.pairs)} seeds (simultaneous 95% over {v.k} arms)")

    def text(self) -> str:
        """One line for the console and the summary, with what to do."""
        if self.state == SHOWN:
            return (f"headroom: {self._figures()}: augmentation beyond crop/flip pays under "
                    f"this child, so the search can find it")
        if self.state == NONE:
            return (f"no headroom: {self._figures()}: the best reference arm trails crop/flip "
                    f"beyond noise, so at this proxy a search can only answer \"keep the "
                    f"base\"; {ADVICE}")
        found = self.verdict.detectable
        could = f"; it could detect {100 * found:.1f} points or more" if math.isfinite(
            found) else ""
        return (f"headroom not shown: {self._figures()}, an interval containing 0{could}; "
                f"the search may find only \"keep the base\": measure with more "
                f"--headroom-seeds, or {ADVICE}")

    def provenance(self) -> dict[str, Any]:
        """JSON-ready figures for best_policy.yaml, headroom.json and MLflow."""
        v, e = self.verdict, self.verdict.margin
        return {"state": self.state, "arm": v.best.key, "seeds": len(v.pairs),
                "margin": _round(e.mean), "margin_ci95": [_round(e.ci_low), _round(e.ci_high)],
                "decided_on": v.basis, "arms": v.k + 1, "detectable": _round(v.detectable),
                "means": {k: {"reward": _round(r), "audit": _round(a)}
                          for k, (r, a) in v.means.items()},
                "failed_replicates": {k: list(r) for k, r in v.losses.items() if r}}


def decide(cands: list[Candidate], measured: dict[str, Measurement],
           seeds: int) -> Headroom | None:
    """The headroom, or None when no arm beyond the base finished a run."""
    v = verdict(cands, measured, seeds)
    return None if v is None else Headroom(v, seeds)


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


__all__ = ["HEADROOM", "NONE", "NOT_SHOWN", "SHOWN", "Headroom", "arms", "decide",
           "headroom_configs"]
