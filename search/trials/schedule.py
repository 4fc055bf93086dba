"""Policy schedules: PBT's policy per epoch range, recorded while a trial trains, replayed when
the confirmation retrains it, written as `schedule.json`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search.trials.compile import decode
from search.trials.config import dimensions
from search.trials.references import policy_of
from spaces.policy import Policy, policy_to_dict
from spaces.schema import Space


def schedule_policies(space: Space, schedule: list[tuple[int, dict[str, Any]]]
                      ) -> Callable[[int], Policy]:
    """Policy for an epoch from a schedule of (first epoch, config) entries."""
    decoded = [(start, scheduled_policy(space, cfg)) for start, cfg in schedule]

    def at(epoch: int) -> Policy:
        current = decoded[0][1]
        for start, policy in decoded:
            if start <= epoch:
                current = policy
        return current

    return at


def scheduled_policy(space: Space, config: dict[str, Any]) -> Policy:
    """A schedule entry's policy: its search dimensions decoded, or, for an entry that holds
    none (the base exported as a one-entry schedule), the policy its config names."""
    if dimensions(config):
        return decode(space, config)
    return policy_of(space, config)


def schedule_to_json(space: Space, schedule: list[tuple[int, dict[str, Any]]],
                     epochs: int) -> dict[str, Any]:
    """A replayable policy schedule: a policy per epoch range."""
    entries = []
    for k, (start, cfg) in enumerate(schedule):
        end = schedule[k + 1][0] if k + 1 < len(schedule) else epochs
        if end > start:
            entries.append({"epochs": [start, end], "config": cfg,
                            "policy": policy_to_dict(scheduled_policy(space, cfg))})
    return {"format": "augsearch-schedule", "version": 1, "epochs": epochs, "entries": entries}
