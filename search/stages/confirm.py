"""Confirm the winner on fresh replicates: the search selects, the confirmation estimates.

A search's best reward is the maximum of many noisy measurements, so it is biased upwards (the
winner's curse), and a reward that chose a candidate cannot also measure it. The search's rewards
only pick the top-k policies; the confirmation stage then trains them and the base policy
(crop/flip only) under r fresh replicates 1..r. Replicate s uses the same common seed (initial
weights, batch order, dropout, a fresh validation sample) for every candidate, so the
differences to the base pair up by replicate. No search trial is a replicate: the reward that
selected a candidate is kept for the record (confirm.csv, `used_for: selection`) and nothing else.

The best of the k is picked again, by its fresh mean, so its margin over the base gets a
Bonferroni-adjusted paired Student-t interval: each of the k margins at level 1 - 0.05/k, which
hold all together at 95%, so the picked one is covered whatever the pick. The policy "beats the
base" only when that interval's lower bound is above 0 (a one-sided test at 2.5% for the whole
family); then it is exported. Otherwise the base is exported and the best candidate is written
beside it with its margin. tests/search/test_selection_null.py runs the whole rule on null data.

Pure functions; the session runs the confirmation configs as one more Tune experiment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.stats import CONFIDENCE, Estimate, bonferroni, estimate
from search.trials.config import TrialConfig, decode, encode, updated
from search.trials.references import BASE, reference_of

CONFIRM = "confirm"
SEARCH = "search"
DEFAULT_TOP = 3
# Fresh replicates per candidate: the fewest that find a true margin of 0.02 reward with 80% power
# (Bonferroni over 3, paired SD 0.0125, given the policy reached the top 3; tests/search/
# test_selection_null.py holds the simulation). Costs (top + 1) x 8 = 32 trainings.
DEFAULT_REPLICATES = 8
CORRECTION = "bonferroni"
# What a verdict is (provenance `verdict`) and what was exported (`exported`).
KEPT_BASE, BEATS_BASE, WITHIN_NOISE = "base", "beats_base", "within_noise"


@dataclass(frozen=True)
class Candidate:
    """A policy to confirm: the search trial it came from and what names its policy."""

    key: str  # the search trial id ("base" when the search holds no usable base run)
    config: dict[str, Any]  # policy config (search dimensions, or the reference name)
    schedule: list[list[Any]] | None = None  # a PBT schedule to replay from scratch
    search_reward: float = math.nan
    search_audit: float = math.nan

    @property
    def reference(self) -> str:
        return reference_of(self.config)

    @property
    def is_base(self) -> bool:
        return self.reference == BASE


@dataclass
class Measurement:
    """One candidate's reward and audit accuracy per replicate."""

    rewards: dict[int, float] = field(default_factory=dict)
    audits: dict[int, float] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # "confirm": fresh trainings only

    def add(self, replicate: int, reward: float, audit: float, source: str = CONFIRM) -> None:
        self.rewards[replicate] = reward
        self.audits[replicate] = audit
        self.sources[replicate] = source

    def mean(self) -> float:
        finite = [v for v in self.rewards.values() if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan


def candidates(rows: list[dict[str, Any]], top: int, replay: bool,
               epochs: int | None = None) -> list[Candidate]:
    """The base and the top-`top` other policies of a leaderboard (rows best first) among the
    trials that trained all `epochs` (an early-stopped trial's reward is a partial one).

    `replay`: the rows' policies changed during training (PBT), so each is confirmed by
    replaying its schedule from scratch, and the base is named by its reference alone.
    """
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["reward"])
          and (epochs is None or int(r.get("epochs") or 0) >= epochs)]
    base_row = next((r for r in ok if r.get("reference") == BASE and not replay), None)
    base = (_candidate(base_row, replay=False) if base_row is not None
            else Candidate(BASE, encode(TrialConfig(reference=BASE))))
    others = [_candidate(r, replay) for r in ok if r.get("reference") != BASE][:top]
    return [base, *others]


def with_proposal(cands: list[Candidate], proposal: Any, top: int) -> list[Candidate]:
    """The candidates with a reward kind's chosen proposal (`search.rewards.Proposal`, such as
    density matching's merged policy) right after the base, `top` besides the base in all."""
    if proposal is None or not proposal.chosen:
        return cands
    return [cands[0], Candidate(proposal.key, proposal.config()), *cands[1:]][:top + 1]


def _candidate(row: dict[str, Any], replay: bool) -> Candidate:
    schedule = None
    if replay and row.get("schedule"):
        entries = json.loads(row["schedule"])["entries"]
        schedule = [[e["epochs"][0], e["config"]] for e in entries]
    return Candidate(row["trial_id"], dict(row["config"]), schedule, float(row["reward"]),
                     float(row["audit_accuracy"]))


def save_candidates(cands: list[Candidate], path: Path) -> None:
    """The confirmation's candidates, so that a resumed search confirms the same ones."""
    data = [{"key": c.key, "config": c.config, "schedule": c.schedule,
             "search_reward": _round(c.search_reward), "search_audit": _round(c.search_audit)}
            for c in cands]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def load_candidates(path: Path) -> list[Candidate]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Candidate(d["key"], d["config"], d["schedule"], _nan(d["search_reward"]),
                      _nan(d["search_audit"])) for d in data]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def measurements(cands: list[Candidate]) -> dict[str, Measurement]:
    """Empty measurements of the candidates, for `record` to fill with fresh replicates (a
    search trial is never one: its reward selected the candidate)."""
    return {c.key: Measurement() for c in cands}


def fresh_replicates(replicates: int) -> list[int]:
    """The replicates the confirmation trains: 1..r (replicate 0 is the search's common seed,
    whose rewards selected the candidates)."""
    return list(range(1, replicates + 1))


def confirm_configs(cands: list[Candidate], replicates: int) -> list[dict[str, Any]]:
    """The runs the confirmation stage trains: every candidate, the base included, at each of
    the fresh replicates 1..r."""
    return [updated(c.config, replicate=rep, stage=CONFIRM, candidate=c.key,
                    schedule=c.schedule or None)
            for c in cands for rep in fresh_replicates(replicates)]


def record(measured: dict[str, Measurement], outcomes: list[Any]) -> None:
    """Add the confirmation runs' results (Tune outcomes) to the measurements."""
    for o in outcomes:
        trial = decode(o.config)
        if trial.candidate not in measured:
            continue
        reward = o.result.get("reward") if o.status == "ok" else math.nan
        audit = o.result.get("audit_accuracy", math.nan)
        measured[trial.candidate].add(trial.replicate, _num(reward), _num(audit))


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass(frozen=True)
class Verdict:
    """The best candidate on fresh replicates, its margin over the base, and what is exported:
    the candidate only when the margin's corrected interval lies above 0, else the base."""

    best: Candidate  # the non-base candidate with the best fresh mean
    base: Candidate
    means: dict[str, float]  # mean reward over the fresh replicates, by candidate key
    replicates: dict[str, int]  # finite fresh replicates, by candidate key
    reward_margin: Estimate  # best − base, paired by fresh replicate, at the Bonferroni level
    audit_margin: Estimate
    k: int  # candidates the best was picked from: the Bonferroni correction's k
    estimation: tuple[int, ...] = ()  # the fresh replicates the margin pairs up
    confidence: float = CONFIDENCE  # of the k intervals together

    @property
    def significant(self) -> bool:
        """The margin's corrected interval lies above 0: the best candidate beats the base."""
        return math.isfinite(self.reward_margin.ci_low) and self.reward_margin.ci_low > 0

    @property
    def kind(self) -> str:
        """`beats_base`, `base` (the base's fresh mean was at least the best candidate's) or
        `within_noise` (a better mean whose interval contains 0, or no interval at all)."""
        if self.significant:
            return BEATS_BASE
        best, base = self.means.get(self.best.key, math.nan), self.means.get(self.base.key,
                                                                             math.nan)
        if math.isfinite(best) and math.isfinite(base) and base >= best:
            return KEPT_BASE
        return WITHIN_NOISE

    @property
    def base_wins(self) -> bool:
        """The base's fresh mean was at least the best candidate's."""
        return self.kind == KEPT_BASE

    @property
    def winner(self) -> Candidate:
        """The exported policy: the best candidate when it beats the base, else the base."""
        return self.best if self.significant else self.base

    @property
    def exported(self) -> str:
        """`candidate` or `base`."""
        return "candidate" if self.significant else "base"

    @property
    def level(self) -> float:
        """Each interval's two-sided level: 1 - (1 - confidence) / k."""
        return bonferroni(self.confidence, self.k)

    def text(self, base_name: str = "crop/flip") -> str:
        """One plain sentence for the user."""
        n = self.replicates.get(self.base.key, 0)
        if self.kind == KEPT_BASE:
            return (f"no policy beat {base_name}; keep the base (over {n} fresh seeds the base's "
                    f"mean reward was at least the best of the {self.k} confirmed policies')")
        margin = self._margin_text()
        if self.significant:
            return f"the best policy beats {base_name} by {margin} reward over {n} fresh seeds"
        if not math.isfinite(self.reward_margin.ci_low):
            return (f"the best policy's margin over {base_name} is {margin}; keep the base "
                    f"until more seeds show it")
        return (f"the best policy's margin over {base_name} is {margin} reward over {n} fresh "
                f"seeds: the interval contains 0, so it is not distinguishable from the base; "
                f"keep the base")

    def _margin_text(self) -> str:
        e = self.reward_margin
        if not math.isfinite(e.ci_low):
            return f"{e.mean:+.4f} (no interval: fewer than 2 paired fresh seeds)"
        return (f"{e.mean:+.4f} (simultaneous {self.confidence:.0%} CI [{e.ci_low:+.4f}, "
                f"{e.ci_high:+.4f}], {CORRECTION.capitalize()} over {self.k})")

    def provenance(self) -> dict[str, Any]:
        """JSON-ready figures for best_policy.yaml, candidate_policy.yaml, schedule.json and
        MLflow: the best candidate's margin over the base, how its interval was corrected, the
        verdict and what was exported."""
        return {
            "verdict": self.kind,
            "exported": self.exported,
            "candidate": self.best.key,
            "confirmed_over_seeds": self.replicates.get(self.best.key, 0),
            "estimation_replicates": list(self.estimation),
            "mean_reward": _round(self.means.get(self.best.key, math.nan)),
            "base_mean_reward": _round(self.means.get(self.base.key, math.nan)),
            **_estimate_fields("margin_reward", self.reward_margin),
            **_estimate_fields("margin_audit", self.audit_margin),
            "correction": CORRECTION, "correction_k": self.k,
            "confidence": self.confidence, "interval_level": _round(self.level),
        }


def verdict(cands: list[Candidate], measured: dict[str, Measurement],
            confidence: float = CONFIDENCE) -> Verdict | None:
    """The non-base candidate with the best fresh mean (ties: the better search rank), and its
    margin over the base paired by fresh replicate, with a Bonferroni-adjusted Student-t
    interval (each of the k margins at 1 - (1 - confidence) / k). None when nothing was
    measured or there is no candidate besides the base."""
    base, others = cands[0], cands[1:]
    means = {c.key: measured[c.key].mean() for c in cands}
    if not others or not any(math.isfinite(v) for v in means.values()):
        return None
    best = max(others, key=lambda c: means[c.key] if math.isfinite(means[c.key]) else -math.inf)
    level = bonferroni(confidence, len(others))
    pairs = _pairs(measured[best.key], measured[base.key])
    counts = {c.key: sum(math.isfinite(v) for v in measured[c.key].rewards.values())
              for c in cands}
    return Verdict(best, base, means, counts,
                   estimate([a - b for _, a, b, _, _ in pairs], level),
                   estimate([c - d for _, _, _, c, d in pairs], level),
                   len(others), tuple(r for r, *_ in pairs), confidence)


def _pairs(a: Measurement, b: Measurement) -> list[tuple[int, float, float, float, float]]:
    common = sorted(set(a.rewards) & set(b.rewards))
    return [(r, a.rewards[r], b.rewards[r], a.audits.get(r, math.nan), b.audits.get(r, math.nan))
            for r in common if math.isfinite(a.rewards[r]) and math.isfinite(b.rewards[r])]


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _estimate_fields(prefix: str, e: Estimate) -> dict[str, Any]:
    """`<prefix>_ci95` is the simultaneous 95% interval (each of the k at `interval_level`)."""
    return {prefix: _round(e.mean), f"{prefix}_ci95": [_round(e.ci_low), _round(e.ci_high)],
            f"{prefix}_seeds": e.n}


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation stage measured and decided."""

    candidates: list[Candidate]
    measured: dict[str, Measurement]
    verdict: Verdict | None
    replay: bool = False  # the search's rewards are no child's (PBT, density matching)

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate and replicate (confirm.csv): the search trial that selected it
        (replicate 0, `used_for: selection`, or `none` for the base's reference trial; not for
        PBT or density matching, whose search reward is another kind of figure) and its fresh
        replicates (`used_for: estimation`, the only ones in its mean and margin)."""
        out = []
        for c in self.candidates:
            if not self.replay and math.isfinite(c.search_reward) and c.key != BASE:
                out.append({"candidate": c.key, "reference": c.reference, "replicate": 0,
                            "reward": c.search_reward, "audit_accuracy": c.search_audit,
                            "source": SEARCH,
                            "used_for": "none" if c.is_base else "selection"})
            m = self.measured[c.key]
            for rep in sorted(m.rewards):
                out.append({"candidate": c.key, "reference": c.reference, "replicate": rep,
                            "reward": m.rewards[rep], "audit_accuracy": m.audits.get(rep),
                            "source": m.sources.get(rep, CONFIRM), "used_for": "estimation"})
        return out


def search_margin(rows: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    """Without confirmation: the best trial minus the base reference trial (one seed each)."""
    base = next((r for r in rows if r.get("reference") == BASE and r["status"] == "ok"), None)
    if base is None:
        return {}
    return {"margin_reward": _round(best["reward"] - base["reward"]),
            "margin_audit": _round(best["audit_accuracy"] - base["audit_accuracy"]),
            "margin_seeds": 1}


__all__ = ["Candidate", "Confirmation", "Measurement", "Verdict", "candidates", "confirm_configs",
           "fresh_replicates", "measurements", "record", "search_margin", "verdict",
           "with_proposal"]
