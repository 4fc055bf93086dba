"""Reward kinds, found by a space's `reward.kind`: the plug-in contract and registry (`base`)
and the built-ins, `child_training` (a child per trial) and `density_matching` (fold models
trained once score each policy). A new kind is one module subclassing `RewardKind` and calling
`register_reward_kind`."""

from __future__ import annotations

from search.rewards import child_training, density_matching  # noqa: F401  (they register)
from search.rewards.base import (
    Proposal,
    RewardKind,
    get_reward_kind,
    register_reward_kind,
    reward_kind,
    reward_kind_names,
    unregister_reward_kind,
)

__all__ = ["Proposal", "RewardKind", "get_reward_kind", "register_reward_kind", "reward_kind",
           "reward_kind_names", "unregister_reward_kind"]
