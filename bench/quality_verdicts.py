"""bench/search_quality.py's computed verdicts: a confirmed search's own estimate of its
candidate's margin beside the test set's (`Agreement`), and each target, met or not, against
crop/flip and the free baselines (bench/free_baselines.py), from the evaluation's figures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.free_baselines import CROPFLIP, FREE, ci_text, difference, not_worse, paired, present

if TYPE_CHECKING:
    from bench.search_quality import SearchRun
    from spaces.schema import Space


@dataclass(frozen=True)
class Agreement:
    """A confirmed search's estimate of its best candidate's margin over crop/flip beside the
    same candidate's margin on the test set."""

    search: str
    arm: str
    exported: bool  # the candidate is best_policy.* (its corrected interval lay above 0)
    margin: float  # the search's estimate: mean over fresh replicates (reward)
    margin_ci: tuple[float, float]  # simultaneous 95% (Bonferroni over k)
    audit: float
    audit_ci: tuple[float, float]
    k: int
    replicates: int
    test: Any  # Estimate: test accuracy, candidate − cropflip, paired by seed

    @property
    def contains(self) -> bool:
        """The test-set CI contains the search's estimate."""
        return self.test.ci_low <= self.margin <= self.test.ci_high

    @property
    def decision(self) -> str:
        """Does the export decision agree with the test set?"""
        above, below = self.test.ci_low > 0, self.test.ci_high < 0
        if self.exported:
            return ("agrees: exported, and the test-set CI lies above 0" if above else
                    "does NOT agree: exported, but the test-set CI lies below 0" if below else
                    "not confirmed on test: exported, but the test-set CI contains 0")
        return ("missed a gain: kept the base, but the test-set CI lies above 0" if above else
                "agrees: kept the base, and the test-set CI contains 0 or lies below it")


def agreements(ev: Any, runs: list[SearchRun]) -> list[Agreement]:
    out = []
    for r in runs:
        p = r.confirmed
        if not p or not r.candidate_arm or p.get("margin_reward") is None:
            continue
        out.append(Agreement(
            f"{r.searcher} seed {r.seed}", r.candidate_arm, p.get("exported") == "candidate",
            float(p["margin_reward"]), _pair(p.get("margin_reward_ci95")),
            _float(p.get("margin_audit")), _pair(p.get("margin_audit_ci95")),
            int(p.get("correction_k") or 0), int(p.get("confirmed_over_seeds") or 0),
            difference(ev, r.candidate_arm, CROPFLIP).diff))
    return out


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _pair(value: Any) -> tuple[float, float]:
    if not value:
        return math.nan, math.nan
    return _float(value[0]), _float(value[1])


def agreement_lines(found: list[Agreement], seeds: int) -> list[str]:
    if not found:
        return []
    lines = [f"The search's own estimate beside the test set (the same candidate against "
             f"crop/flip; the search's interval is simultaneous over its k candidates, the "
             f"test set's a paired 95% CI over {seeds} evaluation seeds):", "",
             "| search | candidate (arm) | exported | search: margin over crop/flip, reward "
             "[simultaneous 95% CI] | search: audit margin [CI] | fresh replicates, k | test "
             "set: Δ accuracy vs cropflip [paired 95% CI] | test CI contains the search's "
             "estimate |", "|---|---|---|---:|---:|---:|---:|---|"]
    for a in found:
        lines.append(
            f"| {a.search} | {a.arm} | {'yes' if a.exported else 'no (base kept)'} | "
            f"{a.margin:+.4f} [{a.margin_ci[0]:+.4f}, {a.margin_ci[1]:+.4f}] | "
            f"{a.audit:+.4f} [{a.audit_ci[0]:+.4f}, {a.audit_ci[1]:+.4f}] | {a.replicates}, "
            f"{a.k} | {ci_text(a.test)} | **{'yes' if a.contains else 'no'}** |")
    return lines


def target_lines(space: Space, ev: Any, runs: list[SearchRun],
                 found: list[Agreement]) -> list[str]:
    """Each target, met or not, computed from the figures above."""
    out = []
    if any(r.seed != 0 for r in runs):
        out.append(f"- Note: the evaluation trains every arm on the {space.dataset.train_size} "
                   f"training images a seed-0 search trains its children on; a search of "
                   f"another seed drew another {space.dataset.train_size} (and another "
                   f"validation pool), so its policy is tested on images it was not searched "
                   f"on.")
    for a in found:
        out.append(f"- {space.name}, {a.search}: the test-set CI of its candidate's margin over "
                   f"cropflip {ci_text(a.test)} {'contains' if a.contains else 'does NOT contain'} "
                   f"the search's estimate {a.margin:+.4f} (target: contains it: "
                   f"**{_met(a.contains)}**); the export decision {a.decision}.")
    free = present(ev, FREE)
    for r, arm in ((run, arm) for run in runs for arm in run.policies):
        crop = difference(ev, arm, CROPFLIP)
        what = ("the exported policy" if arm == r.exported_arm else
                "the best confirmed candidate, not exported" if arm == r.candidate_arm else
                "an unconfirmed proposal")
        out.append(f"- {space.name}, {arm} ({what}): vs cropflip on test {ci_text(crop.diff)} "
                   f"(target ≥ cropflip with the CI: **{_vs_crop(crop.diff)}**); "
                   + _free_text([difference(ev, arm, o).diff for o in free], free) + ".")
    for r in runs:
        if r.exported_arm == CROPFLIP:
            out.append(f"- {space.name}, {r.searcher} seed {r.seed}: exported the base, so what "
                       f"the user receives is crop/flip itself: vs cropflip 0 by construction; "
                       f"cropflip − each free baseline, paired: "
                       + _free_text([paired(ev, CROPFLIP, o) for o in free], free) + ".")
    return out


def _free_text(diffs: list[Any], names: list[str]) -> str:
    """`vs X ±CI (target not worse: met); ...` for each free baseline."""
    return "; ".join(f"vs {name} {ci_text(d)} (target not worse: **{_not_worse(d)}**)"
                     for name, d in zip(names, diffs, strict=True))


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _vs_crop(e: Any) -> str:
    if e.ci_low > 0:
        return "met: the CI lies above 0"
    if e.mean >= -1e-9:  # equal means differ by float rounding only
        return "NOT shown: the mean is ≥ 0 but the CI contains 0"
    return "NOT met: the mean is below cropflip"


def _not_worse(e: Any) -> str:
    return "met" if not_worse(e) else "NOT met: the CI lies below 0"
