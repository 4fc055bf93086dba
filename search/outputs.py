"""What a search leaves in its output directory: best policy, leaderboard, schedule."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search.confirm import Confirmation, search_margin
from search.references import policy_of, reference_of
from search.trial import policy_config
from spaces.policy import Policy, export_albumentations, save_policy
from spaces.schema import Space

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

    @property
    def complete(self) -> bool:
        """False when the search was interrupted before every trial (and its confirmation)
        finished."""
        finished = [r for r in self.leaderboard if r["status"] != "interrupted"]
        return len(finished) >= self.trials and not self.interrupted

    def summary(self) -> str:
        count = {s: sum(1 for r in self.leaderboard if r["status"] == s)
                 for s in ("ok", "interrupted")}
        failed = len(self.leaderboard) - count["ok"] - count["interrupted"]
        lines = [f"{len(self.leaderboard)} of {self.trials} trials ({count['ok']} ok, {failed} "
                 f"failed, {count['interrupted']} interrupted); outputs in {self.output_dir}"]
        if not self.complete:
            lines.append(f"interrupted: resume with the same command plus --resume --output "
                         f"{self.output_dir}")
        if self.best_policy is None:
            lines.append("no trial produced a reward: see leaderboard.csv for the errors")
            return "\n".join(lines)
        lines.extend(self._verdict_lines())
        lines.extend("  " + ln for ln in self.best_policy.describe().splitlines())
        lines.extend(f"  {name}: {path}" for name, path in self.files.items())
        return "\n".join(lines)

    def _verdict_lines(self) -> list[str]:
        """What the user should take away: the winner, and its margin over the base."""
        verdict = self.confirmation.verdict if self.confirmation is not None else None
        prov = self.best_policy.provenance if self.best_policy is not None else {}
        merged = prov.get("merged_from")
        if verdict is None:
            what = (f"merged policy of trials {', '.join(merged)} (the top "
                    f"{prov.get('top_per_fold')} of each fold)" if merged else
                    f"best reward {self.best_reward:.4f} (trial {self.best_trial})")
            head = [f"{what}, not confirmed (--confirm 0): one seed cannot tell a winner from "
                    f"noise"]
            if prov.get("margin_reward") is not None:
                head.append(f"  vs the base arm (same seed): reward "
                            f"{prov['margin_reward']:+.4f}, audit accuracy "
                            f"{prov['margin_audit']:+.4f}")
            return [*head, "policy:"]
        seeds = verdict.replicates.get(verdict.winner.key, 0)
        who = ("the base (crop/flip only)" if verdict.base_wins else
               "the merged policy" if merged else f"trial {self.best_trial}")
        audit = verdict.audit_margin
        lines = [f"confirmed winner: {who}, mean reward {verdict.means[verdict.winner.key]:.4f} "
                 f"over {seeds} seeds (base {verdict.means[verdict.base.key]:.4f})",
                 f"  {verdict.text()}"]
        if not verdict.base_wins:
            lines.append(f"  audit accuracy margin over the base: {audit.mean:+.4f}"
                         + (f" (95% CI [{audit.ci_low:+.4f}, {audit.ci_high:+.4f}])"
                            if math.isfinite(audit.ci_low) else ""))
        return [*lines, "policy:"]


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
                  proposal: dict[str, Any] | None = None) -> SearchResult:
    """Write leaderboard.csv, best_policy.json/.yaml (and schedule.json for pbt), and with a
    confirmation stage confirm.csv; the exported policy is the confirmed winner when there is
    one, else `proposal` (a row naming a policy that is no trial's: density matching's merged
    policy) or the best reward."""
    output.mkdir(parents=True, exist_ok=True)
    files = {"leaderboard": _write_leaderboard(rows, output / "leaderboard.csv")}
    if confirmation is not None:
        files["confirm.csv"] = _write_csv(confirmation.rows(), output / "confirm.csv")
    best = _chosen(rows, confirmation, proposal)
    if best is None:
        return SearchResult(None, float("nan"), "", rows, output, files, trials=trials,
                            confirmation=confirmation)
    kind = {"reward_kind": space.reward.kind} if space.reward.density_matching else {}
    provenance = {"space": space.name, "searcher": searcher, **kind, "trial": best["trial_id"],
                  "reward": _rounded(best["reward"]),
                  "audit_accuracy": _rounded(best["audit_accuracy"]),
                  **_margin(rows, best, confirmation)}
    policy = policy_of(space, best["config"])  # a merged policy keeps what it was merged from
    policy = replace(policy, provenance={**policy.provenance, **provenance})
    base, size = space.child.base_augmentation, space.dataset.image_size
    files["best_policy.json"] = export_albumentations(policy, base, size,
                                                      output / "best_policy.json")
    files["best_policy.yaml"] = save_policy(policy, output / "best_policy.yaml")
    schedule = json.loads(best["schedule"]) if best.get("schedule") else None
    if schedule is not None:
        schedule["provenance"] = provenance
        path = output / "schedule.json"
        path.write_text(json.dumps(schedule, indent=2) + "\n", encoding="utf-8")
        files["schedule.json"] = path
    return SearchResult(policy, best["reward"], best["trial_id"], rows, output, files, schedule,
                        trials, confirmation)


def _chosen(rows: list[dict[str, Any]], confirmation: Confirmation | None,
            proposal: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The row to export: the confirmed winner's, else the proposal or the best reward's."""
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["reward"])]
    verdict = confirmation.verdict if confirmation is not None else None
    if verdict is None:
        return proposal if proposal is not None and ok else (ok[0] if ok else None)
    winner = verdict.winner
    found = next((r for r in ok if r["trial_id"] == winner.key), None)
    if found is not None:
        return found
    return {"trial_id": winner.key, "reward": math.nan, "audit_accuracy": math.nan,
            "config": dict(winner.config), "schedule": None}


def _margin(rows: list[dict[str, Any]], best: dict[str, Any],
            confirmation: Confirmation | None) -> dict[str, Any]:
    if confirmation is not None and confirmation.verdict is not None:
        return confirmation.verdict.provenance()
    return search_margin(rows, best)


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


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
