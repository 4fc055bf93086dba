"""What a search leaves in its output directory: best policy, leaderboard, schedule.

With a confirmation, the exported policy (best_policy.*, schedule.json for PBT) is the base unless
the best candidate's confirmed margin over it has a corrected interval above 0
(`search.stages.verdict`); a candidate that did not prove itself is still written beside it
(candidate_policy.*, candidate_schedule.json) with its margin, and the provenance and summary say
which was exported and why. A confirmation that was asked for and did not finish exports the
base and says why; nothing unconfirmed is exported when a confirmation was asked for.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search.rewards import reward_kind
from search.stages.confirm import Confirmation, Verdict, candidates, search_margin
from search.trials.config import decode, policy_config
from search.trials.references import BASE, policy_of, reference_of
from search.trials.schedule import schedule_to_json
from spaces.policy import Policy, export_albumentations, save_policy
from spaces.schema import Space

BEST, SCHEDULE = "best_policy", "schedule"  # the exported policy's files
CANDIDATE, CANDIDATE_SCHEDULE = "candidate_policy", "candidate_schedule"  # the unproven best
LEADERBOARD_FIELDS = ["rank", "trial_id", "reference", "status", "reward", "val_accuracy",
                      "audit_accuracy", "train_accuracy", "train_val_gap", "epochs", "seconds",
                      "node_id", "policy", "error"]


@dataclass
class SearchResult:
    """The outcome of a search: the best policy, the leaderboard and the files written."""

    best_policy: Policy | None
    best_reward: float
    best_trial: str
    leaderboard: list[dict[str, Any]]
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    schedule: dict[str, Any] | None = None
    trials: int = 0  # trials the search asked for
    confirmation: Confirmation | None = None
    interrupted: bool = False  # a later stage (the confirmation) was interrupted
    exported_text: str = ""  # what was exported in words, when it is no trial (a proposal)
    headroom: Any = None  # search.stages.headroom.Headroom, measured before the search
    stopped: str = ""  # why the search was not run after the headroom check
    notes: list[str] = field(default_factory=list)  # the reward kind's lines (its floor)
    metrics: dict[str, float] = field(default_factory=dict)  # and its parent-run metrics

    @property
    def complete(self) -> bool:
        """False when the search was interrupted before every trial (and its confirmation)
        finished; a search stopped after its headroom check on purpose is complete."""
        if self.stopped:
            return not self.interrupted
        finished = [r for r in self.leaderboard if r["status"] != "interrupted"]
        return len(finished) >= self.trials and not self.interrupted

    def summary(self) -> str:
        count = {s: sum(1 for r in self.leaderboard if r["status"] == s)
                 for s in ("ok", "interrupted")}
        failed = len(self.leaderboard) - count["ok"] - count["interrupted"]
        head = [f"headroom (before the search): {self.headroom.text()}"] if self.headroom else []
        if self.stopped:
            return "\n".join([*head, f"stopped: {self.stopped}; outputs in {self.output_dir}",
                              *(f"  {n}: {p}" for n, p in self.files.items())])
        lines = [*head,
                 f"{len(self.leaderboard)} of {self.trials} trials ({count['ok']} ok, {failed} "
                 f"failed, {count['interrupted']} interrupted); outputs in {self.output_dir}"]
        if not self.complete:
            lines.append(f"interrupted: resume with the same command plus --resume --output "
                         f"{self.output_dir}")
        if self.best_policy is None:
            lines.append("no trial produced a reward: see leaderboard.csv for the errors")
            return "\n".join(lines)
        lines.extend(self.notes)
        lines.extend(self._verdict_lines())
        lines.extend("  " + ln for ln in self.best_policy.describe().splitlines())
        lines.extend(f"  {name}: {path}" for name, path in self.files.items())
        return "\n".join(lines)

    def _verdict_lines(self) -> list[str]:
        """What the user should take away: the winner, and its margin over the base."""
        verdict = self.confirmation.verdict if self.confirmation is not None else None
        prov = self.best_policy.provenance if self.best_policy is not None else {}
        if self.confirmation is not None and verdict is None:
            return [f"exported: the base (crop/flip only), unconfirmed: "
                    f"{self.confirmation.reason}", "policy:"]
        if verdict is None:
            what = (self.exported_text or
                    f"best reward {self.best_reward:.4f} (trial {self.best_trial})")
            head = [f"{what}, not confirmed (--confirm 0): one seed cannot tell a winner from "
                    f"noise"]
            if prov.get("margin_reward") is not None:
                head.append(f"  vs the base arm (same seed): reward "
                            f"{prov['margin_reward']:+.4f}, audit accuracy "
                            f"{prov['margin_audit']:+.4f}")
            return [*head, "policy:"]
        return [*confirmed_lines(verdict, self.files), "policy:"]


def confirmed_lines(verdict: Verdict, files: dict[str, Path]) -> list[str]:
    """What was exported and why, the best candidate's fresh figures on both image sets, the
    failures counted against it, the smallest margin the confirmation could find, and where the
    unproven candidate is."""
    best, base = verdict.best, verdict.base
    what = ("the best candidate, " + _who(best) if verdict.beats_base else
            "the base (crop/flip only)")
    (reward, audit), (base_reward, base_audit) = verdict.means[best.key], verdict.means[base.key]
    lines = [f"exported: {what}", f"  {verdict.text()}",
             f"  best candidate: {_who(best)}, mean audit accuracy {audit:.4f} and reward "
             f"{reward:.4f} over {verdict.replicates} fresh seeds (base {base_audit:.4f} and "
             f"{base_reward:.4f}; the search's rewards only chose the {verdict.k} candidates)",
             f"  decided on {_images(verdict.basis)}; {_other(verdict.basis)}: margin "
             f"{_estimate(verdict.other, verdict.confidence)}"]
    for key, reps in verdict.losses.items():
        if reps:
            lines.append(f"  {key} did not finish fresh replicate(s) "
                         f"{', '.join(map(str, reps))}: "
                         + ("no pair there" if key == base.key else "counted as losses "
                            "(accuracy 0)"))
    if math.isfinite(verdict.detectable):
        lines.append(f"  this confirmation could find a margin of {verdict.detectable:.4f} or "
                     f"more with 80% power (paired SD {verdict.paired_sd:.4f} over "
                     f"{len(verdict.pairs)} fresh seeds, Bonferroni over {verdict.k}); a "
                     f"smaller true margin is likely missed")
    if not verdict.beats_base and f"{CANDIDATE}.yaml" in files:
        lines.append(f"  written beside the base, not exported: {files[f'{CANDIDATE}.yaml']}")
    return lines


def _images(basis: str) -> str:
    return ("the audit images, which no selection read" if basis == "audit" else
            "the reward (no audit accuracy was measured)")


def _other(basis: str) -> str:
    return ("on the validation pool, whose images selected it" if basis == "audit" else
            "on the audit images")


def _estimate(e: Any, confidence: float) -> str:
    if not math.isfinite(e.ci_low):
        return f"{e.mean:+.4f}"
    return f"{e.mean:+.4f} (simultaneous {confidence:.0%} CI [{e.ci_low:+.4f}, {e.ci_high:+.4f}])"


def _who(c: Any) -> str:
    """A candidate in words: the merged policy, a reference arm, or a trial."""
    if decode(c.config).policy:  # a policy no trial trained: density matching's merge
        return f"the {c.key} policy"
    if c.reference:
        return f"the {c.reference} arm (trial {c.key})"
    return f"trial {c.key}"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


def leaderboard_rows(space: Space, outcomes: list[Any]) -> list[dict[str, Any]]:
    """One row per trial, best reward first (failed trials last)."""
    rows = []
    for o in outcomes:
        r = o.result
        reward = _num(r.get("reward"))
        status = o.status if o.status != "ok" or math.isfinite(reward) else "failed"
        try:
            policy = policy_of(space, o.config).describe().replace("\n", " | ")
        except (KeyError, ValueError):
            policy = ""
        rows.append({
            "trial_id": o.trial_id, "reference": reference_of(o.config), "status": status,
            "reward": reward,
            "val_accuracy": _num(r.get("val_accuracy")),
            "audit_accuracy": _num(r.get("audit_accuracy")),
            "train_accuracy": _num(r.get("train_accuracy")),
            "train_val_gap": _num(r.get("train_val_gap")), "epochs": r.get("epoch", 0),
            "seconds": round(_num(r.get("time_total_s")), 2), "node_id": r.get("node_id", ""),
            "policy": policy, "error": o.error, "config": policy_config(o.config),
            "schedule": r.get("schedule"),
        })
    rows.sort(key=lambda row: (row["status"] != "ok" or not math.isfinite(row["reward"]),
                               -row["reward"] if math.isfinite(row["reward"]) else 0,
                               row["trial_id"]))  # ties in a fixed order (resume, confirmation)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def write_outputs(space: Space, searcher: str, rows: list[dict[str, Any]], output: Path,
                  trials: int, confirmation: Confirmation | None = None,
                  proposal: Any = None, headroom: Any = None, stopped: str = "") -> SearchResult:
    """Write leaderboard.csv, best_policy.json/.yaml (and schedule.json for pbt), and with a
    confirmation stage confirm.csv.

    Confirmed, the exported policy is the best candidate only when its margin over the base has
    a corrected interval above 0 (`Verdict.beats_base`), else the base; the best candidate is
    then still written as candidate_policy.json/.yaml (candidate_schedule.json for pbt) with
    its margin. A confirmation asked for that decided nothing (interrupted, failed) exports the
    base. Unconfirmed (`--confirm 0`), it is the reward kind's chosen `proposal`
    (`search.rewards.Proposal`, a policy that is no trial's: density matching's merged policy)
    or the best reward."""
    output.mkdir(parents=True, exist_ok=True)
    files = {} if stopped else {"leaderboard": _write_leaderboard(rows,
                                                                  output / "leaderboard.csv")}
    if headroom is not None:
        files["headroom.json"] = _write_json(headroom.provenance(), output / "headroom.json")
    if confirmation is not None:
        files["confirm.csv"] = _write_csv(confirmation.rows(), output / "confirm.csv")
    proposed = _proposal_row(proposal)
    best = _chosen(rows, confirmation, proposed)
    if best is None:
        return SearchResult(None, float("nan"), "", rows, output, files, trials=trials,
                            confirmation=confirmation, headroom=headroom, stopped=stopped)
    verdict = confirmation.verdict if confirmation is not None else None
    pbt = any(r.get("schedule") for r in rows)  # every pbt trial records its schedule
    room = {"headroom": headroom.provenance()} if headroom is not None else {}
    policy, schedule = _export(
        space, best, {**_provenance(space, searcher, best, rows, confirmation), **room},
        output, files, (BEST, SCHEDULE), pbt)
    if verdict is not None and not verdict.beats_base:
        row = _row(rows, verdict.best)
        _export(space, row, {**_provenance(space, searcher, row, rows, confirmation), **room},
                output, files, (CANDIDATE, CANDIDATE_SCHEDULE), pbt)
    text = proposal.text if proposed is not None and best is proposed else ""
    return SearchResult(policy, best["reward"], best["trial_id"], rows, output, files, schedule,
                        trials, confirmation, exported_text=text, headroom=headroom)


def _export(space: Space, row: dict[str, Any], provenance: dict[str, Any], output: Path,
            files: dict[str, Path], names: tuple[str, str],
            pbt: bool) -> tuple[Policy, dict[str, Any] | None]:
    """A row's policy as `<name>.json` (albumentations) and `<name>.yaml`, and for pbt its
    schedule (a policy that never changed, such as the base, is a one-entry schedule)."""
    name, schedule_name = names
    policy = policy_of(space, row["config"])  # a merged policy keeps what it was merged from
    policy = replace(policy, provenance={**policy.provenance, **provenance})
    base, size = space.child.base_augmentation, space.dataset.image_size
    files[f"{name}.json"] = export_albumentations(policy, base, size, output / f"{name}.json")
    files[f"{name}.yaml"] = save_policy(policy, output / f"{name}.yaml")
    schedule = (json.loads(row["schedule"]) if row.get("schedule") else
                schedule_to_json(space, [(0, row["config"])], space.child.epochs) if pbt else
                None)
    if schedule is not None:
        schedule["provenance"] = provenance
        path = output / f"{schedule_name}.json"
        path.write_text(json.dumps(schedule, indent=2) + "\n", encoding="utf-8")
        files[f"{schedule_name}.json"] = path
    return policy, schedule


def _provenance(space: Space, searcher: str, row: dict[str, Any], rows: list[dict[str, Any]],
                confirmation: Confirmation | None) -> dict[str, Any]:
    """Where a written policy came from, and (confirmed) the verdict and why the exported
    policy is what it is; unconfirmed, its one-seed margin over the base arm."""
    verdict = confirmation.verdict if confirmation is not None else None
    kind = reward_kind(space).provenance(space)
    out = {"space": space.name, "searcher": searcher, **kind, "trial": row["trial_id"],
           "reward": _rounded(row["reward"]), "audit_accuracy": _rounded(row["audit_accuracy"])}
    if confirmation is not None and confirmation.verdict is None:
        return {**out, "verdict": f"unconfirmed_{confirmation.status}", "exported": "base",
                "why": f"{confirmation.reason}; the base is exported until a confirmation "
                       f"finishes (--resume)"}
    if verdict is not None:
        return {**out, **verdict.provenance(), "why": verdict.text()}
    base = reference_of(row["config"]) == BASE
    return {**out, **search_margin(rows, row), "exported": "base" if base else "candidate"}


def _proposal_row(proposal: Any) -> dict[str, Any] | None:
    """The row to export when nothing is confirmed: a chosen proposal's (None: the best
    trial's)."""
    if proposal is None or not proposal.chosen:
        return None
    return {"trial_id": proposal.key, "reward": math.nan, "audit_accuracy": math.nan,
            "config": proposal.config(), "schedule": None}


def _chosen(rows: list[dict[str, Any]], confirmation: Confirmation | None,
            proposal: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The row to export: the confirmed verdict's (the base unless a candidate proved itself;
    the base when the confirmation decided nothing), unconfirmed the proposal or the best
    reward's."""
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["reward"])]
    if confirmation is None:
        return proposal if proposal is not None and ok else (ok[0] if ok else None)
    if confirmation.verdict is None:  # asked for, decided nothing: the base
        return _row(ok, candidates(rows, 0, confirmation.replay)[0]) if ok else None
    return _row(ok, confirmation.verdict.exported)


def _row(rows: list[dict[str, Any]], cand: Any) -> dict[str, Any]:
    """A candidate's leaderboard row, or one made from the candidate (the base where the search
    had no base run, a merged policy)."""
    found = next((r for r in rows if r["trial_id"] == cand.key and r["status"] == "ok"), None)
    if found is not None:
        return found
    return {"trial_id": cand.key, "reward": math.nan, "audit_accuracy": math.nan,
            "config": dict(cand.config), "schedule": None}


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _write_json(data: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["candidate"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_leaderboard(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LEADERBOARD_FIELDS + ["config"],
                                extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "config": json.dumps(row["config"], sort_keys=True)})
    return path
