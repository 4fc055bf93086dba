"""Confirm the winner: retrain the top policies and the base with more seeds, pick by the mean.

A search's best reward is the maximum of many noisy measurements, so it is biased upwards (the
winner's curse). The confirmation stage retrains the top-k policies of the search and the base
policy (crop/flip only) under r more replicates. Replicate s uses the same common seed (initial
weights, batch order, dropout) for every candidate, so the differences to the base pair up by
replicate. The winner is the candidate with the best mean reward over all its replicates (the
search's own trial is replicate 0); its margin over the base comes with a paired Student-t 95%
confidence interval. When the base has the best mean, the verdict says so: keep the base.

Pure functions; the session runs the confirmation configs as one more Tune experiment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.references import BASE, REFERENCE_KEY
from search.stats import Estimate, estimate
from search.trial import REPLICATE_KEY, SCHEDULE_KEY

STAGE_KEY = "_stage"
CANDIDATE_KEY = "_candidate"
CONFIRM = "confirm"
DEFAULT_TOP = 3
DEFAULT_REPLICATES = 2


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
        return str(self.config.get(REFERENCE_KEY) or "")

    @property
    def is_base(self) -> bool:
        return self.reference == BASE


@dataclass
class Measurement:
    """One candidate's reward and audit accuracy per replicate."""

    rewards: dict[int, float] = field(default_factory=dict)
    audits: dict[int, float] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # "search" or "confirm"

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
    replaying its schedule from scratch and the search's own reward is not reused.
    """
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["reward"])
          and (epochs is None or int(r.get("epochs") or 0) >= epochs)]
    base_row = next((r for r in ok if r.get("reference") == BASE and not replay), None)
    base = (_candidate(base_row, replay=False) if base_row is not None
            else Candidate(BASE, {REFERENCE_KEY: BASE}))
    others = [_candidate(r, replay) for r in ok if r.get("reference") != BASE][:top]
    return [base, *others]


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


def measured_in_search(cands: list[Candidate], replay: bool) -> dict[str, Measurement]:
    """Replicate 0 of each candidate: the search trial itself, unless it must be replayed."""
    out = {c.key: Measurement() for c in cands}
    for c in cands:
        if not replay and math.isfinite(c.search_reward) and c.key != BASE:
            out[c.key].add(0, c.search_reward, c.search_audit, source="search")
    return out


def confirm_configs(cands: list[Candidate], replicates: int,
                    measured: dict[str, Measurement]) -> list[dict[str, Any]]:
    """The runs the confirmation stage trains: every replicate 0..r not measured yet."""
    configs = []
    for c in cands:
        for rep in range(replicates + 1):
            if rep in measured[c.key].rewards:
                continue
            config = {**c.config, REPLICATE_KEY: rep, STAGE_KEY: CONFIRM, CANDIDATE_KEY: c.key}
            if c.schedule:
                config[SCHEDULE_KEY] = c.schedule
            configs.append(config)
    return configs


def record(measured: dict[str, Measurement], outcomes: list[Any]) -> None:
    """Add the confirmation runs' results (Tune outcomes) to the measurements."""
    for o in outcomes:
        key = o.config.get(CANDIDATE_KEY)
        if key not in measured:
            continue
        reward = o.result.get("reward") if o.status == "ok" else math.nan
        audit = o.result.get("audit_accuracy", math.nan)
        measured[key].add(int(o.config.get(REPLICATE_KEY, 0)), _num(reward), _num(audit))


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass(frozen=True)
class Verdict:
    """The confirmed winner, its margin over the base, and what that means for the user."""

    winner: Candidate
    base: Candidate
    means: dict[str, float]  # mean reward over replicates, by candidate key
    replicates: dict[str, int]  # finite replicates, by candidate key
    reward_margin: Estimate  # winner − base, paired by replicate
    audit_margin: Estimate

    @property
    def base_wins(self) -> bool:
        return self.winner.is_base

    @property
    def significant(self) -> bool:
        """The margin's 95% CI lies above 0."""
        return not self.base_wins and self.reward_margin.ci_low > 0

    def text(self, base_name: str = "crop/flip") -> str:
        """One plain sentence for the user."""
        n = self.replicates.get(self.base.key, 0)
        if self.base_wins:
            return (f"no policy beat {base_name}; keep the base (over {n} seeds the base's mean "
                    f"reward was the best of {len(self.means)} confirmed policies)")
        margin = _margin_text(self.reward_margin)
        if self.significant:
            return f"the winner beats {base_name} by {margin} reward over {n} seeds"
        return (f"the winner's margin over {base_name} is {margin} reward over {n} seeds: the "
                f"95% CI contains 0, so it is not distinguishable from the base")

    def provenance(self) -> dict[str, Any]:
        """JSON-ready figures for best_policy.yaml, schedule.json and MLflow."""
        return {
            "confirmed_over_seeds": self.replicates.get(self.winner.key, 0),
            "mean_reward": _round(self.means.get(self.winner.key, math.nan)),
            "base_mean_reward": _round(self.means.get(self.base.key, math.nan)),
            **_estimate_fields("margin_reward", self.reward_margin),
            **_estimate_fields("margin_audit", self.audit_margin),
            "verdict": "base" if self.base_wins else (
                "beats_base" if self.significant else "within_noise"),
        }


def verdict(cands: list[Candidate], measured: dict[str, Measurement]) -> Verdict | None:
    """The candidate with the best mean reward (ties go to the base), with paired margins."""
    base = cands[0]
    means = {c.key: measured[c.key].mean() for c in cands}
    scored = [c for c in cands if math.isfinite(means[c.key])]
    if not scored:
        return None
    winner = max(scored, key=lambda c: (means[c.key], c.is_base))
    pairs = _pairs(measured[winner.key], measured[base.key])
    counts = {c.key: sum(math.isfinite(v) for v in measured[c.key].rewards.values())
              for c in cands}
    return Verdict(winner, base, means, counts,
                   estimate([a - b for a, b, _, _ in pairs]),
                   estimate([c - d for _, _, c, d in pairs]))


def _pairs(a: Measurement, b: Measurement) -> list[tuple[float, float, float, float]]:
    common = sorted(set(a.rewards) & set(b.rewards))
    return [(a.rewards[r], b.rewards[r], a.audits.get(r, math.nan), b.audits.get(r, math.nan))
            for r in common if math.isfinite(a.rewards[r]) and math.isfinite(b.rewards[r])]


def _margin_text(e: Estimate) -> str:
    if not math.isfinite(e.ci_low):
        return f"{e.mean:+.4f} (no CI: fewer than 2 paired seeds)"
    return f"{e.mean:+.4f} (95% CI [{e.ci_low:+.4f}, {e.ci_high:+.4f}])"


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _estimate_fields(prefix: str, e: Estimate) -> dict[str, Any]:
    return {prefix: _round(e.mean), f"{prefix}_ci95": [_round(e.ci_low), _round(e.ci_high)],
            f"{prefix}_seeds": e.n}


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation stage measured and decided."""

    candidates: list[Candidate]
    measured: dict[str, Measurement]
    verdict: Verdict | None

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate and replicate (confirm.csv)."""
        out = []
        for c in self.candidates:
            m = self.measured[c.key]
            for rep in sorted(m.rewards):
                out.append({"candidate": c.key, "reference": c.reference, "replicate": rep,
                            "reward": m.rewards[rep], "audit_accuracy": m.audits.get(rep),
                            "source": m.sources.get(rep, CONFIRM)})
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
           "measured_in_search", "record", "search_margin", "verdict"]
