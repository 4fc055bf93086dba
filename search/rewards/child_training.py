"""`reward.kind: child_training` (the default): each trial trains a child under its policy, and
the child's validation accuracy over its last (or best) epochs is the policy's reward."""

from __future__ import annotations

from typing import ClassVar

from search.rewards.base import RewardKind, register_reward_kind
from search.trials.trial import run_child
from spaces.schema import Space


class ChildTraining(RewardKind):
    """A child per trial: the reward is a real training's, reported every epoch."""

    name: ClassVar[str] = "child_training"
    summary: ClassVar[str] = "a child trained under the policy; its validation accuracy"
    trial = staticmethod(run_child)

    def summary_lines(self, space: Space) -> list[str]:
        return [f"  reward    {self.name}: {reward_text(space)}"]

    def provenance(self, space: Space) -> dict[str, str]:
        return {}  # the default kind: a policy's provenance does not repeat it


def reward_text(space: Space) -> str:
    """How a trial's reward is measured, in one line."""
    r = space.reward
    which = "last" if r.epochs == "last" else "best"
    data = ("the whole validation pool (the same images for every trial)"
            if r.validation == "pool" else f"a fresh sample of {r.val_sample_size} per trial")
    seeds = ("common random numbers: every trial starts from the same weights, batch order and "
             "dropout" if r.common_random_numbers else "independent seeds per trial")
    return f"mean {r.metric} of the {which} {r.last_epochs} epochs on {data}; {seeds}"


CHILD_TRAINING = register_reward_kind(ChildTraining())
