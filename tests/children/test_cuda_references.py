"""The rules tests/cuda holds a GPU run to (tests/cuda/references.py), checked on the CPU.

A GPU run differs from the CPU run of its seeds by its draws (dropout, the batched path's
augmentation) and its bf16 arithmetic. Here a CPU run under another seed, which differs by more
(initial weights and batch order too), stands in for it and must pass; a run that learned
nothing must fail.
"""

from __future__ import annotations

import pytest

from children.density import score_policy
from children.train import train_child
from spaces.policy import Policy
from tests.cuda.references import (
    CHILD_EPOCHS,
    POLICY,
    child_agrees,
    density_agrees,
    density_space,
    digits_setup,
    fold_models,
)


@pytest.fixture(scope="module")
def setup():
    return digits_setup()


def test_the_child_rule_passes_another_seed_and_fails_a_child_that_learned_nothing(setup):
    space, splits = setup
    child = space.replace(**{"child.augmentation": "batched"}).child  # CUDA's auto path

    def reward(seed: int, lr: float | None = None) -> float:
        spec = child if lr is None else child.model_copy(
            update={"optimizer": child.optimizer.model_copy(update={"lr": lr})})
        return train_child(spec, space.reward, POLICY, splits, seed=seed, device="cpu",
                           epochs=CHILD_EPOCHS, threads=2).reward

    reference = reward(0)
    assert child_agrees(reward(1), reference)
    assert not child_agrees(reward(0, lr=1e-9), reference)  # weights stay where they began


@pytest.mark.slow
def test_the_density_rule_passes_another_seed_and_fails_untrained_fold_models(setup):
    space, splits = setup
    spec = density_space(space).reward.matching()
    policy, base = Policy(POLICY.sub_policies), space.child.base_augmentation

    def accuracy(models, seed: int) -> float:
        return score_policy(policy, models, splits, spec, base, seed=seed, device="cpu",
                            threads=2).accuracy

    trained = fold_models(space, splits)
    reference = accuracy(trained, 0)
    assert density_agrees(accuracy(trained, 1), reference)
    assert not density_agrees(accuracy(fold_models(space, splits, epochs=1), 0), reference)
