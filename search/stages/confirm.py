"""Confirm the winner on fresh replicates: the search selects, the confirmation estimates.

A search's best reward is the maximum of many noisy measurements, so it is biased upwards (the
winner's curse), and a reward that chose a candidate cannot also measure it. The search's rewards
only pick the top-k policies; the confirmation stage then trains them and the base policy
(crop/flip only) under r fresh replicates 1..r. Replicate s uses the same common seed (initial
weights, batch order, dropout, a fresh validation sample) for every candidate, so the
differences to the base pair up by replicate. No search trial is a replicate: the reward that
selected a candidate is kept for the record (confirm.csv, `used_for: selection`) and nothing else.
`search.stages.verdict` decides, on the audit images that no selection read.

A confirmation that was asked for and did not finish (interrupted, or no training finished)
decides nothing: the base is exported, `Confirmation.reason` says why, and `--resume` finishes
it. tests/search/test_selection_null.py runs the whole rule on null data.

Pure functions; the session runs the confirmation configs as one more Tune experiment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from children.reward import pack_hits, unpack_hits
from search.stages.verdict import AUDIT, LOSS, Verdict, verdict
from search.trials.config import TrialConfig, decode, encode, updated
from search.trials.references import BASE, reference_of

CONFIRM = "confirm"
SEARCH = "search"
DEFAULT_TOP = 3
DEFAULT_REPLICATES = 8  # a space's `search.confirm_seeds` default; sized in spaces/schema.py
# Why a confirmation that was asked for decided nothing (`Confirmation.status`).
DONE, INTERRUPTED, FAILED = "done", "interrupted", "failed"


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
    """One candidate's reward, audit accuracy and run status per fresh replicate."""

    rewards: dict[int, float] = field(default_factory=dict)
    audits: dict[int, float] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # "confirm": fresh trainings only
    statuses: dict[int, str] = field(default_factory=dict)  # ok, diverged, error, ...
    hits: dict[int, np.ndarray] = field(default_factory=dict)  # per audit image, where known

    def add(self, replicate: int, reward: float, audit: float, source: str = CONFIRM,
            status: str = "ok", hits: np.ndarray | None = None) -> None:
        self.rewards[replicate] = reward
        self.audits[replicate] = audit
        self.sources[replicate] = source
        self.statuses[replicate] = status
        if hits is not None:
            self.hits[replicate] = np.asarray(hits, dtype=float)

    def images(self, replicate: int, n: int) -> np.ndarray | None:
        """Each audit image's correctness at a replicate (zeros where the run did not finish:
        a loss), None where a finished run did not report them or they count other images."""
        if replicate not in self.finished():
            return np.zeros(n)
        found = self.hits.get(replicate)
        return found if found is not None and len(found) == n else None

    def finished(self) -> set[int]:
        """The replicates whose run finished with a finite reward."""
        return {r for r, v in self.rewards.items()
                if self.statuses.get(r, "ok") == "ok" and math.isfinite(v)}

    def failed(self, replicates: int) -> list[int]:
        """Replicates 1..r that did not finish (failed, diverged, or missing)."""
        done = self.finished()
        return [r for r in range(1, replicates + 1) if r not in done]

    def audit_known(self) -> bool:
        """Every finished run has an audit accuracy."""
        return all(math.isfinite(self.audits.get(r, math.nan)) for r in self.finished())

    def value(self, replicate: int, basis: str) -> float:
        """The reward or audit accuracy at a replicate; `LOSS` where the run did not finish."""
        if replicate not in self.finished():
            return LOSS
        return (self.audits if basis == AUDIT else self.rewards)[replicate]

    def mean(self, basis: str = "reward", replicates: int | None = None) -> float:
        """The mean over replicates 1..r (default: those recorded), failures counted at
        `LOSS`; NaN when nothing was recorded."""
        reps = range(1, replicates + 1) if replicates else sorted(self.rewards)
        values = [self.value(r, basis) for r in reps]
        return sum(values) / len(values) if values else math.nan


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
    """Add the confirmation runs' results (Tune outcomes), with their status, to the
    measurements: a run that failed or diverged stays recorded, as evidence against it."""
    for o in outcomes:
        trial = decode(o.config)
        if trial.candidate not in measured:
            continue
        reward = _num(o.result.get("reward")) if o.status == "ok" else math.nan
        status = o.status if o.status != "ok" or math.isfinite(reward) else "failed"
        audit = _num(o.result.get("audit_accuracy", math.nan))
        measured[trial.candidate].add(trial.replicate, reward, audit, status=status,
                                      hits=unpack_hits(o.result.get("audit_hits", "")))


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _round(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation stage measured and decided; `status` DONE, or INTERRUPTED /
    FAILED with `reason` when it was asked for and decided nothing (the base is exported)."""

    candidates: list[Candidate]
    measured: dict[str, Measurement]
    verdict: Verdict | None
    replay: bool = False  # the search's rewards are no child's (PBT, density matching)
    status: str = DONE
    reason: str = ""

    @classmethod
    def decide(cls, cands: list[Candidate], measured: dict[str, Measurement], replicates: int,
               replay: bool = False) -> Confirmation:
        """The verdict of finished confirmation runs, or FAILED when none finished."""
        v = verdict(cands, measured, replicates)
        if v is not None:
            return cls(cands, measured, v, replay)
        runs = sum(len(m.rewards) for m in measured.values())
        return cls(cands, measured, None, replay, FAILED,
                   f"none of the confirmation's {runs} trainings finished (see confirm.csv and "
                   f"the errors in the MLflow runs tagged stage=confirm)")

    @classmethod
    def unfinished(cls, status: str, reason: str, cands: list[Candidate] | None = None,
                   measured: dict[str, Measurement] | None = None,
                   replay: bool = False) -> Confirmation:
        """A confirmation asked for that did not finish: nothing is decided."""
        return cls(cands or [], measured or {}, None, replay, status, reason)

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate and replicate (confirm.csv): the search trial that selected it
        (replicate 0, `used_for: selection`, or `none` for the base's reference trial; not for
        PBT or density matching, whose search reward is another kind of figure) and its fresh
        replicates (`used_for: estimation`, the only ones in its mean and margin; a failed or
        diverged one is counted as a loss). `audit_hits` is each audit image's correctness
        (`children.reward.pack_hits`), so the two-way interval can be recomputed from the file."""
        out = []
        for c in self.candidates:
            if not self.replay and math.isfinite(c.search_reward) and c.key != BASE:
                out.append({"candidate": c.key, "reference": c.reference, "replicate": 0,
                            "reward": c.search_reward, "audit_accuracy": c.search_audit,
                            "source": SEARCH, "status": "ok",
                            "used_for": "none" if c.is_base else "selection", "audit_hits": ""})
            m = self.measured.get(c.key, Measurement())
            for rep in sorted(m.rewards):
                out.append({"candidate": c.key, "reference": c.reference, "replicate": rep,
                            "reward": m.rewards[rep], "audit_accuracy": m.audits.get(rep),
                            "source": m.sources.get(rep, CONFIRM),
                            "status": m.statuses.get(rep, "ok"), "used_for": "estimation",
                            "audit_hits": _packed(m.hits.get(rep))})
        return out


def _packed(hits: np.ndarray | None) -> str:
    return "" if hits is None else pack_hits(hits > 0.5)


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
