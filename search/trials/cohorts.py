"""Cohorts in a search: K policies trained together as one Tune trial, K trials everywhere else.

Everything a search knows about cohorts, without Ray: a cohort trial's config holds its members'
configs (`cohort_config`, `members`); each result holds one metrics dict per member under
`MEMBERS`; the trial trains them together (`run_cohort`, through `children.cohort`). Everything
downstream of Tune (the searcher behind the cohort wrapper, progress, MLflow, the leaderboard,
the confirmation) sees member `k` of Tune trial `t` as trial `t-k` with its own config and
result (`expand`). A member that fails (its loss non-finite, or its own work raising) is dropped
and reported alone: its result says `status` diverged or error and why (`failed`), the others'
results go on and complete; the searcher is told of that one member's failure only
(`Suggestions`). `search.tune` only calls these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from search.trials.config import decode
from search.trials.hooks import maybe_crash_once

if TYPE_CHECKING:
    from search.trials.context import Checkpointed, TrialContext
    from spaces.schema import Space

MEMBERS = "members"  # a cohort result's per-member metrics
FAILED = ("diverged", "error")  # a member's statuses once it is dropped
_COHORT = "_cohort"  # a cohort trial's config: its member configs (a private key, see config.py)
# Tune's bookkeeping of the cohort trial that every member's result shares.
_SHARED = ("time_total_s", "time_this_iter_s", "training_iteration", "node_id", "timestamp",
           "date", "hostname", "pid", "done", "time_since_restore", "iterations_since_restore")

__all__ = ["FAILED", "MEMBERS", "Suggestions", "cohort_config", "cohort_result", "cohort_size",
           "expand", "failed", "member_id", "member_results", "members", "pack", "run_cohort",
           "trials_of"]


# ---------------------------------------------------------------- configs


def cohort_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """A cohort trial's config: its members' configs."""
    return {_COHORT: configs}


def members(config: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A cohort trial's member configs (None for a plain trial)."""
    found = config.get(_COHORT)
    return [dict(c) for c in found] if found else None


def member_id(trial_id: str, k: int) -> str:
    """The trial id member `k` of cohort trial `trial_id` has outside Tune."""
    return f"{trial_id}-{k}"


def cohort_size(cohort: int | None, space: Space, swapped: bool) -> int:
    """Members per Tune trial: `cohort` if set, else the space's `search.cohort` for our own
    trainable (a reward kind whose trial is no child training sets 1; a trainable `swapped` in
    by a test trains none)."""
    if cohort is not None:
        return cohort
    return 1 if swapped else space.search.cohort


def trials_of(count: int, size: int) -> int:
    """Tune trials (cohorts of at most `size`) that hold `count` member trials."""
    return -(-count // size)


def pack(configs: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Fixed runs as cohort configs of at most `size` members sharing their replicate (a
    cohort's members share one common seed: the confirmation's replicate)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for config in configs:
        groups.setdefault(decode(config).replicate, []).append(config)
    return [cohort_config(group[i:i + size]) for group in groups.values()
            for i in range(0, len(group), size)]


# ---------------------------------------------------------------- results


def failed(result: Mapping[str, Any] | None) -> bool:
    """Whether a member's result says it was dropped (diverged, or its own work raised)."""
    return bool(result) and result.get("status") in FAILED


def expand(trial_id: str, config: dict[str, Any], result: dict[str, Any]
           ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(trial id, config, result) of each trial a Tune trial stands for: its members for a
    cohort (a member not reported yet gets the shared fields only), else itself."""
    configs = members(config)
    if configs is None:
        return [(trial_id, config, result)]
    mine = member_results(result, len(configs))
    return [(member_id(trial_id, k), cfg, mine[k] or {k: v for k, v in result.items()
                                                      if k in _SHARED})
            for k, cfg in enumerate(configs)]


def member_results(result: dict[str, Any] | None, count: int) -> list[dict[str, Any] | None]:
    """Each of `count` members' result with Tune's bookkeeping of the cohort trial (its
    iteration, times, node), or None for a member the result does not hold."""
    result = result or {}
    shared = {k: v for k, v in result.items() if k in _SHARED}
    reported = result.get(MEMBERS) or []
    return [{**shared, **reported[k]} if k < len(reported) else None for k in range(count)]


def cohort_result(member_results: list[dict[str, Any]]) -> dict[str, Any]:
    """What a cohort trial reports to Tune: its members' results, and as its own metric the best
    finite member reward (Tune's metric must be a number; nothing ranks cohorts by it)."""
    rewards = [r.get("reward") for r in member_results]
    finite = [float(v) for v in rewards if isinstance(v, (int, float)) and math.isfinite(v)]
    epoch = max((int(r.get("epoch") or 0) for r in member_results), default=0)
    return {"reward": max(finite) if finite else math.nan, "epoch": epoch,
            MEMBERS: member_results}


class Suggestions:
    """A searcher's view of cohort trials: up to `size` suggestions per Tune trial, `total`
    member trials in all, each member told its own results under its own id; a failed member
    is told its failure once, when its result first says so, and nothing after."""

    def __init__(self, size: int, total: int) -> None:
        self.size, self.left = size, total
        self.ids: dict[str, list[str]] = {}
        self.told: set[str] = set()  # members already told they failed

    def suggest(self, trial_id: str, one: Callable[[str], dict[str, Any] | None]
                ) -> dict[str, Any] | None:
        """A cohort config of `one(member id)`'s suggestions (None: no suggestion left)."""
        configs, ids = [], []
        for k in range(min(self.size, self.left)):
            config = one(member_id(trial_id, k))
            if config is None:
                break
            configs.append(config)
            ids.append(member_id(trial_id, k))
        if not configs:
            return None
        self.left -= len(configs)
        self.ids[trial_id] = ids
        return cohort_config(configs)

    def results(self, trial_id: str, result: dict[str, Any] | None
                ) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """(member id, result) of the members still searching, and the ids of those whose
        failure this result is the first to show."""
        ongoing, newly = [], []
        ids = self.ids.get(trial_id, [])
        for mid, mine in zip(ids, member_results(result, len(ids)), strict=True):
            if mid in self.told or mine is None:
                continue
            if failed(mine):
                self.told.add(mid)
                newly.append(mid)
            else:
                ongoing.append((mid, mine))
        return ongoing, newly

    def completions(self, trial_id: str, result: dict[str, Any] | None, error: bool
                    ) -> list[tuple[str, dict[str, Any] | None, bool]]:
        """(member id, result, error) to tell at the cohort trial's end: a member that failed
        (alone, or with the whole trial) as an error, each other with its result."""
        out = []
        ids = self.ids.get(trial_id, [])
        for mid, mine in zip(ids, member_results(result, len(ids)), strict=True):
            if mid in self.told:
                continue
            bad = error or mine is None or failed(mine)
            out.append((mid, None if bad else mine, bad))
            self.told.add(mid)
        return out


# ---------------------------------------------------------------- the trial

Report = Callable[[dict[str, Any], "Checkpointed | None"], None]


def run_cohort(configs: list[dict[str, Any]], ctx: TrialContext, splits: Any, report: Report,
               restored: Checkpointed | None = None) -> list[Any]:
    """Train a cohort's members together (`children.cohort`), reporting every epoch one result
    holding each member's metrics (as a lone child's trial reports them) and one checkpoint of
    all.

    The members must share their common seed (one batch order and dropout stream): a search's
    trials do under common random numbers, and the confirmation packs one replicate per cohort.
    A member that fails reports reward NaN, its status (`diverged` or `error`) and its error;
    the others go on.
    """
    from children.cohort import train_cohort
    from children.reward import reward_from_history
    from search.trials.context import Checkpointed
    from search.trials.references import policy_of
    from search.trials.seeds import trial_seeds

    seeds = [trial_seeds(ctx, c) for c in configs]
    if len({common for common, _ in seeds}) != 1:
        raise ValueError("a cohort's members must share their common seed (one replicate, "
                         "common random numbers); use search.cohort: 1")
    seed, reward = seeds[0][0], ctx.space.reward

    def on_epoch(stats: list[Any], states: list[Any], errors: list[Any]) -> None:
        results = []
        for k, (s, state) in enumerate(zip(stats, states, strict=True)):
            metrics = dict(asdict(s))
            metrics["reward"] = (reward_from_history(state.history, reward)[0] if not errors[k]
                                 else math.nan)
            metrics["train_val_gap"] = s.train_accuracy - s.val_accuracy
            metrics["common_seed"], metrics["aug_seed"] = seeds[k]
            if errors[k]:
                metrics.update(status=getattr(errors[k], "status", "") or "error",
                               error=str(errors[k]))
            results.append(metrics)
        report(cohort_result(results), Checkpointed(list(states)))
        maybe_crash_once(configs[0], stats[0].epoch)

    return train_cohort(
        ctx.space.child, reward, [policy_of(ctx.space, c) for c in configs], splits, seed=seed,
        aug_seeds=[aug for _, aug in seeds], threads=ctx.threads, on_epoch=on_epoch,
        states=restored.state if restored else None)
