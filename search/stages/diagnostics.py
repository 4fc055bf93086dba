"""Validation-overfit diagnostics of a search: pure functions, no MLflow.

Whether the search is fitting its validation sample rather than finding augmentations that
generalise to the audit set the reward never sees: the best-so-far reward against the audit
accuracy of that same policy, the selection gap, the audit regret, the rank correlation of reward
and audit accuracy, and which ops the top policies use more than the rest. Leaderboard rows in,
numbers, JSON-ready dicts and PNG files out; `search.tracking` logs them to MLflow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.events import finite
from search.rewards import reward_kind
from search.trials.compile import decode
from spaces.schema import Space

TOP_FRACTION = 0.25  # the "top policies" of the op table: this share of the finished trials
PLOT_DPI = 110


@dataclass
class Diagnostics:
    """Validation-overfit diagnostics over the trials of a search, in completion order."""

    trials: list[str]
    rewards: list[float]
    audits: list[float]
    best_so_far: list[float]
    best_audit_so_far: list[float]
    best_reward: float = float("nan")
    best_audit: float = float("nan")
    selection_gap: float = float("nan")
    audit_regret: float = float("nan")
    spearman: float | None = None
    spearman_p: float | None = None
    op_table: list[dict[str, Any]] = field(default_factory=list)
    top_policies: int = 0  # how many policies the op table's "top" group holds
    rest_policies: int = 0

    def scalars(self) -> dict[str, float]:
        values = {"best_reward": self.best_reward, "best_audit_accuracy": self.best_audit,
                  "selection_gap": self.selection_gap, "audit_regret": self.audit_regret,
                  "reward_audit_spearman": self.spearman,
                  "reward_audit_spearman_p": self.spearman_p}
        return {k: float(v) for k, v in values.items() if finite(v)}


def completion_order(rows: list[dict[str, Any]], end_times: dict[str, int]
                     ) -> list[dict[str, Any]]:
    """Leaderboard rows in the order their trials ended (trials without a run last, by id)."""
    late = max(end_times.values(), default=0) + 1
    return sorted(rows, key=lambda r: (end_times.get(r["trial_id"], late), r["trial_id"]))


def overfit_diagnostics(rows: list[dict[str, Any]], space: Space,
                        best_trial: str | None = None) -> Diagnostics:
    """Best-so-far reward vs. that policy's audit accuracy, selection gap, rank correlation and
    op frequencies of the top quartile vs. the rest, from leaderboard rows in completion order.

    `best_trial` names the search's pick when rewards tie (otherwise the first best to finish).
    """
    rewards = [r["reward"] if r["status"] == "ok" and finite(r["reward"]) else math.nan
               for r in rows]
    audits = [float(r["audit_accuracy"]) if finite(r["audit_accuracy"]) else math.nan
              for r in rows]
    best_so_far, best_audit_so_far = [], []
    best, best_audit = math.nan, math.nan
    for reward, audit in zip(rewards, audits, strict=True):
        if finite(reward) and not reward <= best:
            best, best_audit = reward, audit
        best_so_far.append(best)
        best_audit_so_far.append(best_audit)
    picked = [au for rw, au, r in zip(rewards, audits, rows, strict=True)
              if r["trial_id"] == best_trial and rw == best]
    best_audit = picked[0] if picked else best_audit
    diag = Diagnostics([r["trial_id"] for r in rows], rewards, audits, best_so_far,
                       best_audit_so_far, best, best_audit)
    ok = [(rw, au, row) for rw, au, row in zip(rewards, audits, rows, strict=True)
          if finite(rw)]
    if finite(best) and finite(best_audit):
        # a gap between an accuracy and another figure (density matching's -NLL) means nothing
        if reward_kind(space).accuracy_reward(space):
            diag.selection_gap = best - best_audit
        diag.audit_regret = max(au for _, au, _ in ok if finite(au)) - best_audit
    paired = [(rw, au) for rw, au, _ in ok if finite(au)]
    if len(paired) >= 3 and min(len(set(column)) for column in zip(*paired, strict=True)) > 1:
        from scipy.stats import spearmanr

        rho, p = spearmanr([x for x, _ in paired], [y for _, y in paired])
        diag.spearman = float(rho) if finite(float(rho)) else None
        diag.spearman_p = float(p) if finite(float(p)) else None
    finished = [row for _, _, row in ok]
    diag.op_table = op_frequencies(finished, space)
    if diag.op_table:
        diag.top_policies = _top_count(len(finished))
        diag.rest_policies = len(finished) - diag.top_policies
    return diag


def _top_count(n: int, top_fraction: float = TOP_FRACTION) -> int:
    return max(1, math.ceil(n * top_fraction))


def op_frequencies(rows: list[dict[str, Any]], space: Space, top_fraction: float = TOP_FRACTION
                   ) -> list[dict[str, Any]]:
    """Share of op slots each op fills in the top policies vs. the rest (needs 2+ policies)."""
    if len(rows) < 2:
        return []
    ranked = sorted(rows, key=lambda r: -r["reward"])
    k = _top_count(len(ranked), top_fraction)
    top, rest = _op_counts(ranked[:k], space), _op_counts(ranked[k:], space)
    n_top, n_rest = max(sum(top.values()), 1), max(sum(rest.values()), 1)
    table = []
    for op in (o.name for o in space.policy.ops):
        t, r = top[op] / n_top, rest[op] / n_rest
        table.append({"op": op, "top_share": round(t, 4), "rest_share": round(r, 4),
                      "lift": round(t - r, 4), "top_count": top[op], "rest_count": rest[op]})
    table.sort(key=lambda row: -row["lift"])
    return table


def _op_counts(rows: list[dict[str, Any]], space: Space) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in rows:
        if row.get("reference"):  # reference arms were not drawn by the searcher
            continue
        try:
            policy = decode(space, row["config"])
        except (KeyError, ValueError, TypeError):
            continue
        counts.update(op.name for sub in policy.sub_policies for op in sub.ops)
    return counts


def summary(diag: Diagnostics) -> dict[str, Any]:
    """The per-trial series and the scalars, JSON-ready (missing values are null, not NaN)."""
    return _no_nan({"trials": diag.trials, "rewards": diag.rewards, "audits": diag.audits,
                    "best_reward_so_far": diag.best_so_far,
                    "best_audit_accuracy_so_far": diag.best_audit_so_far, **diag.scalars()})


def op_importance(diag: Diagnostics) -> dict[str, Any]:
    """The op table with the sizes of its two groups, JSON-ready."""
    return {"top_fraction": TOP_FRACTION, "top_policies": diag.top_policies,
            "rest_policies": diag.rest_policies, "ops": diag.op_table}


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: missing values become null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ---------------------------------------------------------------- plots (matplotlib, no pyplot)


def write_plots(diag: Diagnostics, folder: Path, dpi: int = PLOT_DPI) -> list[Path]:
    """overfit.png, reward_vs_trial.png and (with an op table) op_importance.png in `folder`."""
    figures = {"overfit.png": plot_overfit(diag), "reward_vs_trial.png": plot_rewards(diag)}
    if diag.op_table:
        figures["op_importance.png"] = plot_op_importance(diag)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=dpi)
        paths.append(folder / name)
    return paths


def _figure(width: float = 7.0, height: float = 4.2, integer_x: bool = False) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot, no GUI backend: drawn off screen by Agg
    ax = fig.subplots()
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def plot_overfit(diag: Diagnostics) -> Any:
    """Best-so-far reward and the audit accuracy of that same policy, per trial."""
    fig, ax = _figure(integer_x=True)
    x = np.arange(1, len(diag.trials) + 1)
    ax.scatter(x, diag.audits, s=12, color="0.7", label="audit accuracy (each trial)")
    ax.step(x, diag.best_so_far, where="post", color="C0", lw=2, label="best reward so far")
    ax.step(x, diag.best_audit_so_far, where="post", color="C3", lw=2, ls="--",
            label="audit accuracy of that best policy")
    gap = f"selection gap {diag.selection_gap:+.3f}" if finite(diag.selection_gap) else ""
    rho = f", Spearman(reward, audit) {diag.spearman:.2f}" if diag.spearman is not None else ""
    ax.set(xlabel="trial (completion order)", ylabel="reward, audit accuracy",
           title=f"Validation overfit: {gap}{rho}".rstrip(": "))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_rewards(diag: Diagnostics) -> Any:
    """Each trial's reward with the best-so-far line; failed trials marked on the axis."""
    fig, ax = _figure(integer_x=True)
    x = np.arange(1, len(diag.trials) + 1)
    rewards = np.array(diag.rewards, dtype=float)
    ok = np.isfinite(rewards)
    ax.scatter(x[ok], rewards[ok], s=18, color="C0", label="reward")
    ax.step(x, diag.best_so_far, where="post", color="C1", lw=2, label="best so far")
    if (~ok).any():
        low = np.nanmin(rewards) if ok.any() else 0.0
        ax.scatter(x[~ok], np.full((~ok).sum(), low), marker="x", color="C3", label="failed")
    ax.set(xlabel="trial (completion order)", ylabel="reward", title="Reward per trial")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_op_importance(diag: Diagnostics) -> Any:
    """Op frequency in the top quartile of policies against the rest."""
    table = diag.op_table
    fig, ax = _figure(7.0, max(3.0, 0.32 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.barh(y - 0.2, [r["top_share"] for r in table], height=0.4, color="C2",
            label=f"top 25% of policies ({diag.top_policies})")
    ax.barh(y + 0.2, [r["rest_share"] for r in table], height=0.4, color="0.6",
            label=f"the rest ({diag.rest_policies})")
    ax.set_yticks(y, [r["op"] for r in table])
    ax.invert_yaxis()
    ax.set(xlabel="share of op slots", title="Ops in the top policies vs. the rest")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return fig
