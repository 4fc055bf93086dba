"""The batch's device is the only device, checked without a GPU.

The batched path, a training step and density scoring's augmentation and classification run on
data on the `meta` device inside `tests.devicecheck.OneDevice`: a torch call that mixes devices
(a per-sample parameter left on the CPU, a 0-dim CPU tensor, a numpy index) raises `DeviceMix`,
and a host sync (`.item()`, `nonzero`, `.tolist()`) fails because meta tensors hold no data. What
passes here runs on a CUDA batch without a copy to or from the host. Explicit moves are counted:
once per run or per epoch is the design, once per batch or per op is a defect.

Also: the masked path (accelerators) and the row-subset path (CPU) give the same images from the
same draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from children import density, train
from children.batches import tensor_batches
from children.density import FoldModels, fold_rows
from children.models import build_model
from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from children.trainer import Trainer
from spaces.policy import BatchOps, Op, Policy, SubPolicy
from spaces.schema import BaseAug
from tests.devicecheck import DeviceMix, OneDevice

META = torch.device("meta")
NAMES = list(BATCHED)
# every op once, two per sub-policy, each op in the first slot of one and the second of another
EVERY_OP = Policy(tuple(SubPolicy((Op(a, 0.6, 0.7), Op(b, 0.4, 0.6)))
                        for a, b in zip(NAMES, NAMES[7:] + NAMES[:7], strict=True)),
                  BatchOps(mixup_alpha=0.4, cutmix_alpha=1.0, sample_pairing=0.5))
CROP_FLIP = BaseAug(crop=True, crop_padding=4, flip=True)


def _meta_batch(n: int = 16, channels: int = 3, size: int = 32,
                dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.empty(n, channels, size, size, dtype=dtype, device=META)


def test_the_check_catches_mixed_devices_scalars_lists_numpy_and_syncs() -> None:
    x = _meta_batch()
    for mixed in (lambda: x + torch.tensor(2, dtype=torch.uint8),  # 0-dim CPU: torch allows it
                  lambda: torch.cat([x, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)]),
                  lambda: x[np.array([0, 1])],
                  lambda: torch.rand(3, generator=torch.Generator(), device=META)):
        with pytest.raises(DeviceMix), OneDevice():
            mixed()
    with pytest.raises(RuntimeError, match="meta"), OneDevice():
        (x > 0).sum().item()
    with pytest.raises(NotImplementedError), OneDevice():
        torch.nonzero(x)
    with OneDevice() as check:
        torch.as_tensor(np.arange(3), device=META)
        (x.float() * 2).sum()
    assert check.moves == ["_VariableFunctionsClass.as_tensor: cpu -> meta"]


@pytest.mark.parametrize("probability", [0.5, 1.0])
@pytest.mark.parametrize("magnitude", [0.3, 1.0])
@pytest.mark.parametrize("name", NAMES)
def test_each_op_stays_on_the_batch_device(name: str, magnitude: float,
                                           probability: float) -> None:
    """The op alone, and second after another op in a second sub-policy; uint8 and float."""
    policy = Policy((SubPolicy((Op(name, magnitude, probability),)),
                     SubPolicy((Op("Invert", 0.0, probability), Op(name, magnitude, probability)))))
    pipe = BatchedPipeline(policy, None, 32)
    pipe(_meta_batch(), Draws(0, META))  # builds what it caches per strength and device
    with OneDevice() as check:
        out = pipe(_meta_batch(), Draws(1, META))
        unit = pipe(_meta_batch(dtype=torch.float32), Draws(2, META))
    assert out.device == META and out.shape == (16, 3, 32, 32) and out.dtype == torch.uint8
    assert unit.device == META and unit.dtype == torch.float32
    assert check.moves == []


def test_a_whole_policy_with_crop_and_flip_stays_on_the_batch_device() -> None:
    pipe = BatchedPipeline(EVERY_OP, CROP_FLIP, 32)
    pipe(_meta_batch(), Draws(0, META))
    for channels in (3, 1):
        with OneDevice() as check:
            out = pipe(_meta_batch(64, channels), Draws(3, META))
        assert out.device == META and out.shape == (64, channels, 32, 32)
        assert check.moves == []


def test_draws_on_another_device_than_the_batch_are_refused() -> None:
    pipe = BatchedPipeline(EVERY_OP, CROP_FLIP, 32)
    with pytest.raises(ValueError, match=r"draws are made on cpu but the batch is on meta"):
        pipe(_meta_batch(), Draws(0))


def test_an_epoch_of_tensor_batches_moves_its_order_and_plans_once() -> None:
    """Four batches, every batch op on: two moves in all (the epoch's order, its mix plans)."""
    images, labels = _meta_batch(96), torch.empty(96, dtype=torch.long, device=META)
    mean = std = torch.empty(3, device=META)
    order = np.random.default_rng(0).permutation(96)[:64]
    pipe = BatchedPipeline(EVERY_OP, CROP_FLIP, 32)
    pipe(_meta_batch(), Draws(0, META))
    with OneDevice() as check:
        batches = list(tensor_batches(images, labels, order, 16, pipe, EVERY_OP.batch, mean, std,
                                      Draws(1, META), np.random.default_rng(2), META))
    assert len(batches) == 4
    for batch in batches:
        assert batch.x.device == META and batch.x.dtype == torch.float32
        assert batch.y_a.device == batch.y_b.device == META and batch.x.shape[0] == 16
    assert len(check.moves) == 2, check.moves


def test_a_training_step_stays_on_the_device(digits_space, digits_splits) -> None:
    """The model on meta, the batched path: the run moves its train split there once, the epoch
    its order and plans; a step moves nothing and reads nothing back."""
    child = digits_space.replace(**{"child.augmentation": "batched"}).child
    policy = Policy(EVERY_OP.sub_policies, BatchOps(mixup_alpha=0.4, sample_pairing=0.5))
    run = train._Child(child, digits_space.reward, digits_splits, 0, 1, META, 2, None)
    trainer = Trainer(child, run, META, 2)
    run.feed.batched(policy)(_meta_batch(4, 1, 16), Draws(0, META))  # its per-strength caches
    with OneDevice() as check:
        batches, inline = run.batches(0, policy)
        batches = iter(batches)
        first = next(batches)
        setup = list(check.moves)
        steps = [trainer._step(first), trainer._step(next(batches))]
    assert inline and run.feed.paths.taken == ["batched"]
    tensors = [t for s in steps for t in (s.loss, s.hits_a, s.hits_b) if t is not None]
    assert all(t.device == META and t.ndim == 0 for t in tensors)
    assert check.moves == setup, check.moves[len(setup):]
    assert len(setup) <= 4, setup  # images, labels (once per run); order, plans (per epoch)


def test_a_cohort_step_stays_on_the_device(digits_space, digits_splits) -> None:
    """A cohort of three on meta: its members' batches come from one feed, its step (mix weights
    included) moves nothing and reads nothing back."""
    from children.cohort.members import _Cohort

    child = digits_space.replace(**{"child.augmentation": "batched"}).child
    policies = [Policy(EVERY_OP.sub_policies[:2], BatchOps(mixup_alpha=0.4)),
                Policy(EVERY_OP.sub_policies[2:4], BatchOps(cutmix_alpha=0.5)),
                Policy(EVERY_OP.sub_policies[4:6], BatchOps(sample_pairing=0.5))]
    run = _Cohort(child, digits_space.reward, digits_splits, 0, [1, 2, 3], META, 2)
    trainer = Trainer(child, run, META, 2)
    for p in policies:
        run.feed.batched(p)(_meta_batch(4, 1, 16), Draws(0, META))  # per-strength caches
    with OneDevice() as check:
        steps, _inline = run.batches(0, policies)
        first = next(steps)
        setup = list(check.moves)
        step = trainer._step(first)
        trainer._step(next(steps))
    assert step.loss.device == step.hits_a.device == META and step.loss.shape == (3,)
    assert check.moves == setup, check.moves[len(setup):]


def _fold_models(space, splits) -> FoldModels:
    """Two fold models with initial weights: shapes are all a meta run needs."""
    rows = fold_rows(splits.train.y, 2, 0.5, seed=0)
    torch.manual_seed(0)
    state = build_model(space.child.model, 10, 1, 16, space.child.width).state_dict()
    return FoldModels.from_states(space.child, splits, rows, [state, state])


def test_density_scoring_augments_and_classifies_on_the_device(digits_space,
                                                              digits_splits) -> None:
    models = _fold_models(digits_space, digits_splits)
    fold = models.folds[0]
    net = models.network(0, META)
    aug = density._Augmenter(EVERY_OP, CROP_FLIP, 16, "auto", META)
    aug(_meta_batch(4, 1, 16), aug.stream(0))  # its per-strength caches
    with OneDevice() as check:
        nll, correct = density._classified(net, fold, digits_splits.train, fold.held_out, 2,
                                           aug, seed=0)
    assert aug.path == "batched" and len(nll) == len(correct) >= 2
    assert all(t.device == META for t in nll + correct)
    # the fold's images, labels, mean and std, once per pass, not per chunk
    assert len(check.moves) <= 4, check.moves


# ---------------------------------------------------------------- the two ways to apply an op


def _real_images(n: int = 256) -> torch.Tensor:
    """scikit-learn's handwritten digits as 32x32 RGB (uint8 N×3×32×32), colour gradients
    added so the colour ops have something to change."""
    digits = load_digits().images[np.random.default_rng(0).permutation(1797)[:n]]
    grey = np.kron(digits, np.ones((4, 4))) * (255 / 16)
    ys, xs = np.mgrid[0:32, 0:32]
    rgb = np.stack([0.6 * grey + 3 * xs, 0.8 * grey + 40, 0.5 * grey + 3.5 * ys], axis=1)
    return torch.from_numpy(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def test_masked_and_row_subset_paths_give_the_same_images_on_the_cpu() -> None:
    x = _real_images()
    masked = BatchedPipeline(EVERY_OP, CROP_FLIP, 32, masked=True)(x, Draws(5))
    rows = BatchedPipeline(EVERY_OP, CROP_FLIP, 32, masked=False)(x, Draws(5))
    default = BatchedPipeline(EVERY_OP, CROP_FLIP, 32)(x, Draws(5))  # row subsets on the CPU
    assert torch.equal(masked, rows) and torch.equal(rows, default)
    assert not torch.equal(masked, BatchedPipeline(EVERY_OP, CROP_FLIP, 32)(x, Draws(6)))
    changed = (masked != x).flatten(1).any(1).float().mean()
    assert changed > 0.9  # crop, flip and the ops did change the images
