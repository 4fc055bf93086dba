"""Cohorts: K policies trained together as one Tune trial, seen as K trials everywhere else.

A cohort trial's config holds its members' configs (`search.trials.config.cohort_config`);
each result holds one metrics dict per member under `MEMBERS`. Everything downstream of Tune (the
searcher behind the cohort wrapper, progress, MLflow, the leaderboard, the confirmation) sees
member `k` of Tune trial `t` as trial `t-k` with its own config and result (`expand`). Pure
functions, no Ray.
"""

from __future__ import annotations

import math
from typing import Any

from search.trials.config import cohort_config, cohort_members, decode

MEMBERS = "members"  # a cohort result's per-member metrics
# Tune's bookkeeping of the cohort trial that every member's result shares.
_SHARED = ("time_total_s", "time_this_iter_s", "training_iteration", "node_id", "timestamp",
           "date", "hostname", "pid", "done", "time_since_restore", "iterations_since_restore")

__all__ = ["MEMBERS", "cohort_result", "expand", "member_id", "member_results", "members",
           "pack", "trials_of"]


def member_id(trial_id: str, k: int) -> str:
    """The trial id member `k` of cohort trial `trial_id` has outside Tune."""
    return f"{trial_id}-{k}"


def members(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A cohort trial's member configs (None for a plain trial)."""
    return cohort_members(config)


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
