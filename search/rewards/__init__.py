"""Reward kinds, found by a space's `reward.kind`: the plug-in contract and registry (`base`)
and the built-ins, `child_training` (a child per trial), `density_matching` (fold models
trained once score each policy) and `self_supervised` (a contrastive pre-training per trial,
scored by a probe of its frozen features). A new kind is one module subclassing `RewardKind`
and calling `register_reward_kind`."""

from __future__ import annotations

from search.rewards import (  # noqa: F401  (they register)
    child_training,
    density_matching,
    self_supervised,
)
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
