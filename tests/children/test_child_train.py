"""The child trainer on real digits: it learns, it is reproducible, the policy reaches it."""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from children.datasets import Arrays, DataError, load_dataset, make_splits
from children.train import DivergedError, EpochStats, TrainState, reward_from_history, train_child
from spaces.policy import BatchOps, Op, Policy, SubPolicy, identity_policy
from spaces.schema import BaseAug, RewardSpec

INVERT = Policy((SubPolicy((Op("Invert", 0.0, 1.0),)),))


def _quality(history: list[EpochStats]) -> list[tuple[float, ...]]:
    """Everything but the timings (an unscored audit, NaN, as None so that it compares)."""
    return [(h.epoch, h.train_loss, h.train_accuracy, h.val_accuracy,
             None if math.isnan(h.audit_accuracy) else h.audit_accuracy) for h in history]


def _child(space, **changes):
    return space.replace(**{f"child.{k}": v for k, v in changes.items()}).child


def test_identity_policy_on_digits_learns_far_above_chance(digits_space, digits_splits):
    seen: list[EpochStats] = []
    metrics = train_child(digits_space.child, digits_space.reward, identity_policy(),
                          digits_splits, seed=0, threads=1,
                          on_epoch=lambda stats, state: seen.append(stats))
    assert metrics.epochs == digits_space.child.epochs == len(metrics.history) == len(seen)
    assert metrics.reward > 0.75 and metrics.audit_accuracy > 0.75  # chance is 0.10
    assert metrics.history[-1].train_loss < metrics.history[0].train_loss
    last = metrics.history[-digits_space.reward.last_epochs:]
    assert metrics.reward == pytest.approx(np.mean([h.val_accuracy for h in last]))
    assert metrics.images_per_s > 0 and metrics.wall_seconds > 0
    assert metrics.train_val_gap == pytest.approx(metrics.train_accuracy - metrics.val_accuracy)


def test_same_seed_gives_identical_metrics_and_another_seed_differs(digits_space, digits_splits):
    policy = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Cutout", 0.3, 0.5))),),
                    BatchOps(mixup_alpha=0.3, sample_pairing=0.2))

    def run(seed: int):
        return train_child(digits_space.child, digits_space.reward, policy, digits_splits,
                           seed=seed, threads=1, epochs=3)

    first, second, other = run(5), run(5), run(6)
    assert _quality(first.history) == _quality(second.history)
    assert first.reward == second.reward
    assert _quality(first.history) != _quality(other.history)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", ["albumentations", "batched"])
def test_on_the_cpu_a_run_repeats_bit_for_bit(digits_space, digits_splits, path, threads):
    """The same seeds, data and torch threads: the same weights, every bit (README,
    "Reproducibility")."""
    policy = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Equalize", 0.0, 0.5))),),
                    BatchOps(mixup_alpha=0.3, cutmix_alpha=0.5))
    child = _child(digits_space, augmentation=path)

    def weights() -> dict[str, torch.Tensor]:
        states: list[TrainState] = []
        train_child(child, digits_space.reward, policy, digits_splits, seed=5, aug_seed=6,
                    threads=threads, epochs=2, on_epoch=lambda _s, st: states.append(st))
        return states[-1].model

    first, second = weights(), weights()
    assert all(torch.equal(first[name], second[name]) for name in first)


def _first_batches(space, splits, policy=None, schedule=None, epochs=1):
    """The first input batch the model receives in each epoch, as numpy."""
    batches: dict[int, np.ndarray] = {}
    epoch = {"now": 0}

    def on_batch(x: torch.Tensor, y: torch.Tensor) -> None:
        batches.setdefault(epoch["now"], x.detach().cpu().numpy().copy())

    def on_epoch(stats: EpochStats, state: TrainState) -> None:
        epoch["now"] = stats.epoch

    child = _child(space, base_augmentation={"crop": False, "flip": False})
    train_child(child, space.reward, policy or identity_policy(), splits, seed=1, threads=1,
                epochs=epochs, on_batch=on_batch, on_epoch=on_epoch, schedule=schedule)
    return batches


def test_the_policy_reaches_the_batches_the_model_trains_on(digits_space, digits_splits):
    plain = _first_batches(digits_space, digits_splits)[0]
    inverted = _first_batches(digits_space, digits_splits, INVERT)[0]
    # Same images in the same order: normalised x + normalised (255 - x) is one constant.
    total = plain + inverted
    assert plain.std() > 0.5
    assert np.ptp(total) < 1e-4
    assert not np.allclose(plain, inverted)


def test_a_schedule_switches_the_policy_per_epoch(digits_space, digits_splits):
    batches = _first_batches(digits_space, digits_splits, epochs=3,
                             schedule=lambda e: INVERT if e == 1 else identity_policy())
    means = [float(batches[e].mean()) for e in range(3)]
    # digits are mostly dark: normalised means sit near 0, inverted ones near +1
    assert abs(means[0]) < 0.4 and abs(means[2]) < 0.4 and means[1] > 0.7, means


def test_read_only_arrays_from_an_object_store_are_never_written(digits_space, digits_splits):
    def frozen(a: Arrays) -> Arrays:
        x, y = a.x.copy(), a.y.copy()
        x.setflags(write=False)
        y.setflags(write=False)
        return Arrays(x, y)

    splits = replace(digits_splits, train=frozen(digits_splits.train),
                     val_pool=frozen(digits_splits.val_pool), audit=frozen(digits_splits.audit))
    policy = Policy((SubPolicy((Op("Equalize", 0, 1.0), Op("Solarize", 0.4, 1.0))),),
                    BatchOps(cutmix_alpha=1.0, sample_pairing=0.5))
    metrics = train_child(digits_space.child, digits_space.reward, policy, splits, seed=0,
                          threads=1, epochs=1)
    assert metrics.epochs == 1 and 0.0 <= metrics.reward <= 1.0


def test_absurd_learning_rate_diverges_at_once(digits_space, digits_splits):
    child = _child(digits_space, schedule="constant", batch_size=32,
                   optimizer={"name": "sgd", "lr": 10.0, "weight_decay": 0.9})
    epochs_done: list[int] = []
    with pytest.raises(DivergedError, match=r"loss became nan at epoch \d+, step \d+; lower "
                                            r"child.optimizer.lr \(now 10\)") as err:
        train_child(child, digits_space.reward, identity_policy(), digits_splits, seed=0,
                    threads=1, on_epoch=lambda stats, state: epochs_done.append(stats.epoch))
    assert "\n" not in str(err.value)
    assert len(epochs_done) < 3  # stopped at the first NaN, not after all 15 epochs


def test_resuming_from_a_state_equals_training_straight_through(digits_space, digits_splits):
    states: dict[int, TrainState] = {}
    kwargs = dict(seed=2, threads=1, epochs=4)
    straight = train_child(digits_space.child, digits_space.reward, INVERT, digits_splits,
                           on_epoch=lambda stats, state: states.setdefault(stats.epoch, state),
                           **kwargs)
    state = pickle.loads(pickle.dumps(states[2]))
    assert state.epoch == 2 and len(state.history) == 2 and state.policy == INVERT
    resumed = train_child(digits_space.child, digits_space.reward, INVERT, digits_splits,
                          state=state, **kwargs)
    assert _quality(resumed.history) == _quality(straight.history)
    assert resumed.reward == straight.reward and resumed.epochs == 4


def test_a_short_run_continued_to_more_epochs_is_sane(digits_space, digits_splits):
    states: list[TrainState] = []
    short = train_child(digits_space.child, digits_space.reward, identity_policy(),
                        digits_splits, seed=0, threads=1, epochs=2,
                        on_epoch=lambda stats, state: states.append(state))
    longer = train_child(digits_space.child, digits_space.reward, identity_policy(),
                         digits_splits, seed=0, threads=1, epochs=4, state=states[-1])
    assert longer.epochs == 4 and [h.epoch for h in longer.history] == [1, 2, 3, 4]
    assert _quality(longer.history[:2]) == _quality(short.history)
    assert all(math.isfinite(h.train_loss) for h in longer.history)


def _history(*pairs: tuple[float, float]) -> list[EpochStats]:
    return [EpochStats(i + 1, 1.0, train, val, 0.5, 1.0, 100.0)
            for i, (train, val) in enumerate(pairs)]


def test_reward_averages_the_last_epochs_and_skips_overfit_ones():
    history = _history((0.5, 0.4), (0.9, 0.6), (0.7, 0.65), (0.95, 0.62))
    value, used, note = reward_from_history(history, RewardSpec(last_epochs=3, val_sample_size=1))
    assert value == pytest.approx((0.6 + 0.65 + 0.62) / 3) and used == [2, 3, 4] and not note
    spec = RewardSpec(last_epochs=3, val_sample_size=1, max_train_val_gap=0.2)
    value, used, note = reward_from_history(history, spec)
    assert value == pytest.approx(0.65) and used == [3] and not note
    spec = RewardSpec(last_epochs=2, val_sample_size=1, max_train_val_gap=0.01)
    value, used, note = reward_from_history(history, spec)
    assert value == pytest.approx(0.62) and used == [4]
    assert "all of the last 2 epochs had train-val gap > 0.01" in note


def test_best_epochs_reward_averages_the_highest_val_accuracies():
    history = _history((0.5, 0.7), (0.9, 0.6), (0.95, 0.65), (0.99, 0.62))
    value, used, _ = reward_from_history(history, RewardSpec(last_epochs=2, epochs="best"))
    assert value == pytest.approx((0.7 + 0.65) / 2) and used == [1, 3]
    gap = RewardSpec(last_epochs=2, epochs="best", max_train_val_gap=0.31)
    value, used, _ = reward_from_history(history, gap)
    assert value == pytest.approx((0.7 + 0.65) / 2) and used == [1, 3]
    gap = RewardSpec(last_epochs=2, epochs="best", max_train_val_gap=0.29)
    value, used, _ = reward_from_history(history, gap)
    assert value == pytest.approx(0.7) and used == [1]


def test_common_seed_fixes_everything_but_the_augmentation(digits_space, digits_splits):
    """Same `seed`, different `aug_seed`: identical without augmentation, different with it."""
    plain = _child(digits_space, base_augmentation=BaseAug(crop=False, flip=False))
    runs = [train_child(plain, digits_space.reward, identity_policy(), digits_splits, seed=5,
                        aug_seed=a, threads=1, epochs=2) for a in (1, 2)]
    assert [h.val_accuracy for h in runs[0].history] == [h.val_accuracy for h in runs[1].history]
    assert runs[0].history[-1].train_loss == runs[1].history[-1].train_loss
    cropped = [train_child(digits_space.child, digits_space.reward, identity_policy(),
                           digits_splits, seed=5, aug_seed=a, threads=1, epochs=2) for a in (1, 2)]
    assert cropped[0].history[-1].train_loss != cropped[1].history[-1].train_loss


def test_pool_validation_scores_the_whole_pool_and_fresh_a_per_seed_sample(digits_space,
                                                                             digits_splits):
    seen: list[int] = []
    pool = digits_splits.val_pool
    reward = digits_space.reward.model_copy(update={"validation": "fresh",
                                                    "val_sample_size": 50})
    plain = _child(digits_space, base_augmentation=BaseAug(crop=False, flip=False))
    fresh = [train_child(plain, reward, identity_policy(), digits_splits, seed=0, aug_seed=a,
                         threads=1, epochs=1).val_accuracy for a in range(4)]
    whole = train_child(plain, digits_space.reward.model_copy(update={"validation": "pool"}),
                        identity_policy(), digits_splits, seed=0, threads=1, epochs=1,
                        on_end=lambda predict: seen.append(int(
                            (predict(pool.x).argmax(1) == pool.y).sum())))
    # the sample follows the common seed, not the policy's aug_seed: under common random
    # numbers every policy of a replicate is scored on the same images (identity policy, no
    # crop/flip: the same model, so the same accuracy)
    assert len(set(fresh)) == 1
    assert whole.val_accuracy == pytest.approx(seen[0] / len(pool))


def test_the_audit_set_is_scored_only_where_the_reward_reads(digits_space, digits_splits):
    reward = digits_space.reward.model_copy(update={"last_epochs": 2})
    plain = _child(digits_space, base_augmentation=BaseAug(crop=False, flip=False))
    last = train_child(plain, reward, identity_policy(), digits_splits, seed=0, threads=1,
                       epochs=4)
    assert [math.isnan(h.audit_accuracy) for h in last.history] == [True, True, False, False]
    best = train_child(plain, reward.model_copy(update={"epochs": "best"}), identity_policy(),
                       digits_splits, seed=0, threads=1, epochs=4)
    assert not any(math.isnan(h.audit_accuracy) for h in best.history)
    assert last.audit_accuracy == best.audit_accuracy  # same seed, same model at the end


def test_a_validation_sample_larger_than_the_pool_is_a_data_error(digits_space, digits_splits):
    reward = digits_space.reward.model_copy(update={"val_sample_size": 601,
                                                    "validation": "fresh"})
    with pytest.raises(DataError, match="val_sample_size is 601 but the validation pool holds 600"):
        train_child(digits_space.child, reward, identity_policy(), digits_splits, seed=0,
                    threads=1, epochs=1)


def test_rgb_cifar_sample_trains_with_a_colour_policy(cifar_tiny, dataset_spec, digits_space):
    spec = dataset_spec(path=str(cifar_tiny), image_size=32, channels=3, train_size=100,
                        val_pool_size=60, audit_size=40)
    splits = make_splits(load_dataset(spec), spec, seed=0)
    policy = Policy((SubPolicy((Op("Color", 0.6, 0.8), Op("Brightness", 0.4, 0.5))),),
                    BatchOps(mixup_alpha=0.4))
    reward = digits_space.reward.model_copy(update={"val_sample_size": 50})
    metrics = train_child(_child(digits_space, batch_size=32), reward, policy, splits, seed=0,
                          threads=1, epochs=2)
    assert metrics.epochs == 2
    stats = asdict(metrics.history[-1])
    assert all(math.isfinite(v) for v in stats.values() if not isinstance(v, str))
