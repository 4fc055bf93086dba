"""The trainer on the batched path: which path runs, fallback, reproducibility, batch ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from children.batches import mix_batch
from children.tensor_aug import BATCHED, BatchedPipeline, PathChoice, choose_path
from children.train import PathLog, TrainState, train_child
from spaces.ops import OPS
from spaces.policy import BatchOps, Op, Policy, SubPolicy, identity_policy
from spaces.schema import BaseAug

POLICY = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Equalize", 0.0, 0.5))),
                 SubPolicy((Op("Cutout", 0.3, 0.7), Op("Solarize", 0.4, 0.6)))),
                BatchOps(mixup_alpha=0.3, sample_pairing=0.2))


def _child(space, **changes):
    return space.replace(**{f"child.{k}": v for k, v in changes.items()}).child


def test_every_op_of_the_table_has_a_batched_kernel() -> None:
    assert list(BATCHED) == list(OPS)


def test_auto_takes_the_measured_path_per_device_and_explicit_settings_win() -> None:
    pipe = BatchedPipeline(POLICY, BaseAug(), 16)
    # CPU: measured faster (docs/BENCHMARKS.md); CUDA: keeps augmentation off the trial's one
    # CPU (AUTO's note); a device type without an entry: batched
    expected = {"cpu": "batched", "cuda": "batched", "meta": "batched"}
    for device, path in expected.items():
        assert choose_path("auto", device, pipe) == PathChoice(path)
        assert choose_path("batched", device, pipe) == PathChoice("batched")
        assert choose_path("albumentations", device, pipe) == PathChoice("albumentations")
    assert choose_path("batched", "cpu", None) == PathChoice("albumentations")  # augment=fn
    with pytest.raises(ValueError, match="auto, albumentations or batched"):
        choose_path("gpu", "cpu", pipe)


def test_a_policy_with_an_op_without_kernel_falls_back_and_says_why(capsys) -> None:
    without = {name: op for name, op in BATCHED.items() if name != "Equalize"}
    pipe = BatchedPipeline(POLICY, BaseAug(), 16, ops=without)
    assert pipe.missing == ["Equalize"]
    choice = choose_path("batched", "cpu", pipe)
    assert choice.path == "albumentations" and "Equalize" in choice.reason
    with pytest.raises(ValueError, match="Equalize have no batched kernel"):
        pipe(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), None)
    log = PathLog()
    assert [log.take(choice) for _ in range(3)] == ["albumentations"] * 3
    log.take(PathChoice("batched"))
    err = capsys.readouterr().err
    assert err.count("[augsearch] note:") == 1 and "Equalize" in err
    assert log.taken == ["albumentations", "batched"]


@pytest.mark.parametrize("path", ["batched", "albumentations"])
def test_each_path_trains_and_is_recorded(digits_space, digits_splits, path) -> None:
    metrics = train_child(_child(digits_space, augmentation=path), digits_space.reward, POLICY,
                          digits_splits, seed=0, threads=1, epochs=6)
    assert metrics.augmentation == path
    assert metrics.reward > 0.5  # chance is 0.10


def _first_batch(space, splits, path="batched", **seeds) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    train_child(_child(space, augmentation=path), space.reward, POLICY, splits, threads=1,
                epochs=1, on_batch=lambda x, y: seen.append(x.detach().clone()), **seeds)
    return seen[0]


def test_same_seeds_same_batch_on_the_batched_path(digits_space, digits_splits) -> None:
    first = _first_batch(digits_space, digits_splits, seed=3, aug_seed=11)
    again = _first_batch(digits_space, digits_splits, seed=3, aug_seed=11)
    other_aug = _first_batch(digits_space, digits_splits, seed=3, aug_seed=12)
    assert first.dtype == torch.float32 and first.shape[1:] == (1, 16, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other_aug)  # aug_seed alone changes the augmentation


def test_without_random_augmentation_both_paths_give_the_same_batch(digits_space,
                                                                   digits_splits) -> None:
    """Same images, layout and normalisation: the paths differ only in their draws."""
    plain = _child(digits_space, base_augmentation=BaseAug(crop=False, flip=False))

    def first(path: str) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        train_child(plain.model_copy(update={"augmentation": path}), digits_space.reward,
                    identity_policy(), digits_splits, seed=4, aug_seed=9, threads=1, epochs=1,
                    on_batch=lambda x, y: seen.append(x.detach().clone()))
        return seen[0]

    assert torch.allclose(first("batched"), first("albumentations"), atol=1e-6)


def test_the_batched_path_leaves_the_global_torch_generator_alone() -> None:
    """Its draws come from its own generators (seeded from aug_seed), never from torch's global
    one, which `seed` drives and dropout uses."""
    from children.tensor_aug import Draws

    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    noisy = Policy((SubPolicy((Op("GaussianNoise", 0.5, 1.0), Op("Cutout", 0.5, 0.5))),))
    before = torch.get_rng_state()
    BatchedPipeline(noisy, BaseAug(), 16)(x, Draws(1))
    assert torch.equal(torch.get_rng_state(), before)


def test_batch_ops_mix_tensors_exactly_as_arrays(digits_splits) -> None:
    x = digits_splits.train.x[:64].transpose(0, 3, 1, 2).astype(np.float32)
    y = digits_splits.train.y[:64]
    for ops in (BatchOps(mixup_alpha=0.4, sample_pairing=0.5), BatchOps(cutmix_alpha=1.0)):
        arrays = mix_batch(x.copy(), y, ops, np.random.default_rng(5))
        tensors = mix_batch(torch.from_numpy(x.copy()), y, ops, np.random.default_rng(5))
        assert isinstance(tensors.x, torch.Tensor) and tensors.lam == arrays.lam < 1.0
        assert np.array_equal(tensors.x.numpy(), arrays.x)
        assert np.array_equal(tensors.y_b, arrays.y_b)


def test_a_schedule_and_a_resume_work_on_the_batched_path(digits_space, digits_splits) -> None:
    child = _child(digits_space, augmentation="batched")
    states: dict[int, TrainState] = {}
    kwargs = dict(seed=2, threads=1, epochs=3,
                  schedule=lambda e: POLICY if e == 1 else identity_policy())
    straight = train_child(child, digits_space.reward, POLICY, digits_splits,
                           on_epoch=lambda s, st: states.setdefault(s.epoch, st), **kwargs)
    resumed = train_child(child, digits_space.reward, POLICY, digits_splits, state=states[1],
                          **kwargs)
    assert [h.val_accuracy for h in resumed.history] == [h.val_accuracy
                                                         for h in straight.history]
    assert straight.augmentation == "batched"
