"""What the cuda tests hold a GPU run to, and the CPU runs those rules were measured on.

A GPU run of a child is not the CPU run of the same seeds: its initial weights and batch order
are the CPU's, but dropout draws from the CUDA generator, the batched path's augmentation draws
come from a generator on the GPU, and the forward pass runs in bf16 (fp16 on older GPUs). It
differs from the CPU run as a run under other draws does, so it is held to the CPU run of the
same seed within the spread of CPU runs under other seeds (measured on the CPU, `python -m
tests.cuda.references` prints it), and to a floor far above chance that a broken run (labels
mixed up, weights not updated, images garbled) misses. tests/children/test_cuda_references.py
checks the rules on the CPU: another seed stands in for the GPU's draws and passes, a run that
learned nothing fails.
"""

from __future__ import annotations

import numpy as np

from children.datasets import Splits, load_dataset, make_splits
from children.density import FoldModels, fold_rows, fold_training_splits
from children.train import train_child
from spaces.policy import BatchOps, Op, Policy, SubPolicy, identity_policy
from spaces.schema import Space, load_space

POLICY = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Contrast", 0.6, 0.7))),
                 SubPolicy((Op("Cutout", 0.4, 0.7), Op("Color", 0.5, 0.6))),
                 SubPolicy((Op("GaussianNoise", 0.3, 0.5), Op("Equalize", 0.0, 0.5)))),
                BatchOps(mixup_alpha=0.3, sample_pairing=0.2))

# train_child, 10 epochs of `digits_setup` under POLICY, rewards of CPU seeds 0-5 (measured):
#   albumentations 0.762 0.735 0.800 0.777 0.775 0.823; batched 0.772 0.692 0.770 0.798 0.772
#   0.818. Widest range on one path 0.126. Chance 0.10; a child that learned nothing scores it.
CHILD_EPOCHS = 10
CHILD_TOLERANCE = 0.15
CHILD_FLOOR = 0.5
# score_policy with `fold_models` (2 folds, 2 copies of 400 held-out images), POLICY without
# its batch ops after the space's crop: held-out accuracy of CPU seeds 0-7 (measured) 0.461 to
# 0.485, range 0.025 (binomial SE of one score 0.018). Fold models after 1 epoch: 0.094.
DENSITY_TOLERANCE = 0.05
DENSITY_FLOOR = 0.3


def digits_setup() -> tuple[Space, Splits]:
    """The cuda tests' data: 400 training digits at 16×16, basiccnn of width 16."""
    space = load_space("digits").replace(**{
        "dataset.train_size": 400, "dataset.val_pool_size": 300, "dataset.audit_size": 200,
        "dataset.image_size": 16, "dataset.channels": 1, "child.model": "basiccnn",
        "child.width": 16, "child.batch_size": 64, "reward.last_epochs": 2,
        "reward.val_sample_size": 200})
    return space, make_splits(load_dataset(space.dataset), space.dataset, seed=0)


def child_agrees(reward: float, cpu_reward: float) -> bool:
    """A run's reward against the CPU run of the same seeds."""
    return abs(reward - cpu_reward) <= CHILD_TOLERANCE and reward > CHILD_FLOOR


def density_agrees(accuracy: float, cpu_accuracy: float) -> bool:
    """A density score's held-out accuracy against the CPU score of the same seed."""
    return abs(accuracy - cpu_accuracy) <= DENSITY_TOLERANCE and accuracy > DENSITY_FLOOR


def density_space(space: Space) -> Space:
    return space.replace(**{"reward.kind": "density_matching", "policy.batch_ops": {},
                            "reward.density": {"folds": 2, "copies": 2},
                            "reward.validation": "pool"})


def fold_models(space: Space, splits: Splits, epochs: int = CHILD_EPOCHS) -> FoldModels:
    """Two fold models trained on the CPU (`epochs` each, base augmentation only)."""
    dm = density_space(space)
    spec = dm.reward.matching()
    rows = fold_rows(splits.train.y, spec.folds, spec.held_out_share(), seed=0)
    states = []
    for held in rows:
        last: list = []
        train_child(dm.child, dm.reward, identity_policy(), fold_training_splits(splits, held),
                    seed=0, threads=2, device="cpu", epochs=epochs,
                    on_epoch=lambda _s, state, keep=last: keep.append(state.model))
        states.append(last[-1])
    return FoldModels.from_states(dm.child, splits, rows, states)


def _measure() -> None:  # prints the figures above
    from children.density import score_policy

    space, splits = digits_setup()
    for path in ("albumentations", "batched"):
        child = space.replace(**{"child.augmentation": path}).child
        rewards = [train_child(child, space.reward, POLICY, splits, seed=s, device="cpu",
                               epochs=CHILD_EPOCHS, threads=2).reward for s in range(6)]
        print(path, np.round(rewards, 3), "range", round(float(np.ptp(rewards)), 3))
    spec = density_space(space).reward.matching()
    for epochs in (CHILD_EPOCHS, 1):
        models = fold_models(space, splits, epochs)
        scores = [score_policy(Policy(POLICY.sub_policies), models, splits, spec,
                               space.child.base_augmentation, seed=s, device="cpu",
                               threads=2).accuracy for s in range(8 if epochs > 1 else 1)]
        print(f"density accuracy, fold models of {epochs} epochs", np.round(scores, 3),
              "range", round(float(np.ptp(scores)), 3))


if __name__ == "__main__":
    _measure()
