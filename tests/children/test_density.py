"""Density matching's parts without Ray: folds, real fold models on real digits, scoring."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from children.datasets import Splits
from children.density import (
    FoldModels,
    fold_rows,
    fold_training_splits,
    score_policy,
)
from children.train import train_child
from spaces.policy import Op, Policy, SubPolicy, identity_policy
from spaces.schema import Space

INVERT = Policy((SubPolicy((Op("Invert", 0.0, 1.0),)),))
ROTATE = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Cutout", 0.5, 0.5))),))


@pytest.fixture(scope="module")
def dm_space(digits_space: Space) -> Space:
    return digits_space.replace(**{
        "reward.kind": "density_matching", "policy.batch_ops": {},
        "reward.density": {"folds": 3, "copies": 2}, "reward.validation": "pool"})


@pytest.fixture(scope="module")
def folds(dm_space: Space, digits_splits: Splits) -> FoldModels:
    """Three real fold models: basiccnn trained on two thirds of the digits train split."""
    spec = dm_space.reward.matching()
    rows = fold_rows(digits_splits.train.y, spec.folds, spec.held_out_share(), seed=0)
    states = []
    for held in rows:
        last = []
        train_child(dm_space.child, dm_space.reward, identity_policy(),
                    fold_training_splits(digits_splits, held), seed=0, threads=1, epochs=10,
                    on_epoch=lambda _stats, state, keep=last: keep.append(state.model))
        states.append(last[-1])
    return FoldModels.from_states(dm_space.child, digits_splits, rows, states)


def test_k_folds_hold_out_every_image_once_stratified() -> None:
    y = np.repeat(np.arange(10), 40)
    rows = fold_rows(y, 5, 0.2, seed=3)
    assert [len(r) for r in rows] == [80] * 5
    assert sorted(np.concatenate(rows).tolist()) == list(range(400))  # disjoint, all covered
    for held in rows:
        counts = Counter(y[held].tolist())
        assert set(counts) == set(range(10)) and max(abs(c - 8) for c in counts.values()) <= 2
    assert all((a == b).all() for a, b in zip(rows, fold_rows(y, 5, 0.2, seed=3), strict=True))
    assert any((a != b).any() for a, b in zip(rows, fold_rows(y, 5, 0.2, seed=4), strict=True))


def test_a_larger_held_out_share_overlaps_the_folds() -> None:
    y = np.repeat(np.arange(4), 50)
    rows = fold_rows(y, 5, 0.4, seed=0)  # Fast AutoAugment's split
    assert [len(r) for r in rows] == [80] * 5
    assert sum(len(r) for r in rows) == 400 and len(np.unique(np.concatenate(rows))) == 200


def test_a_fold_model_trains_on_the_rest_and_validates_on_its_held_out_rows(
        digits_splits: Splits) -> None:
    held = fold_rows(digits_splits.train.y, 4, 0.25, seed=0)[1]
    fold = fold_training_splits(digits_splits, held)
    assert len(fold.train) + len(fold.val_pool) == len(digits_splits.train)
    assert (fold.val_pool.x == digits_splits.train.x[held]).all()
    kept = {arr.tobytes() for arr in fold.train.x}
    assert not any(digits_splits.train.x[i].tobytes() in kept for i in held[:20])
    assert fold.audit is digits_splits.audit


def test_the_fold_models_learned(folds: FoldModels, dm_space: Space,
                                 digits_splits: Splits) -> None:
    score = score_policy(identity_policy(), folds, digits_splits, dm_space.reward.matching(),
                         None, seed=0, threads=1)
    assert score.accuracy > 0.5 and score.audit_accuracy > 0.5  # chance is 0.1


def test_a_destructive_policy_scores_below_the_identity_on_both_scores(
        folds: FoldModels, dm_space: Space, digits_splits: Splits) -> None:
    spec = dm_space.reward.matching().model_copy(update={"score": "accuracy"})
    base = dm_space.child.base_augmentation
    scores = {name: score_policy(p, folds, digits_splits, spec, base, seed=0, threads=1)
              for name, p in (("identity", identity_policy()), ("invert", INVERT))}
    assert scores["invert"].accuracy < scores["identity"].accuracy - 0.3
    assert scores["invert"].nll > scores["identity"].nll + 1.0
    assert scores["invert"].audit_accuracy < scores["identity"].audit_accuracy - 0.3
    assert scores["identity"].reward == pytest.approx(scores["identity"].accuracy)
    nll = spec.model_copy(update={"score": "nll"})
    as_nll = score_policy(identity_policy(), folds, digits_splits, nll, base, seed=0, threads=1)
    assert as_nll.reward == pytest.approx(-scores["identity"].nll) and as_nll.reward < 0
    assert as_nll.reward == pytest.approx(float(np.mean(as_nll.fold_rewards)))


def test_every_held_out_image_is_scored_copies_times_and_every_audit_image_once(
        folds: FoldModels, dm_space: Space, digits_splits: Splits) -> None:
    spec = dm_space.reward.matching()
    score = score_policy(ROTATE, folds, digits_splits, spec, None, seed=0, threads=1)
    held = sum(len(f.held_out) for f in folds.folds)
    assert score.images == held * spec.copies + len(digits_splits.audit)
    assert len(score.fold_rewards) == spec.folds
    assert score.reward == pytest.approx(float(np.mean(score.fold_rewards)))


def test_same_seed_same_score_and_the_seed_draws_the_augmentation(
        folds: FoldModels, dm_space: Space, digits_splits: Splits) -> None:
    spec = dm_space.reward.matching()

    def score(seed: int):
        return score_policy(ROTATE, folds, digits_splits, spec, None, seed=seed, threads=1)

    first, again, other = score(5), score(5), score(6)
    assert (first.reward, first.nll, first.audit_accuracy) == (
        again.reward, again.nll, again.audit_accuracy)
    assert (first.nll, first.audit_accuracy) != (other.nll, other.audit_accuracy)


def test_both_augmentation_paths_score_alike(folds: FoldModels, dm_space: Space,
                                             digits_splits: Splits) -> None:
    """The batched path and the albumentations pipeline mean the same policy: their scores
    differ only by their random draws."""
    spec = dm_space.reward.matching().model_copy(update={"copies": 8})
    base = dm_space.child.base_augmentation
    batched = score_policy(ROTATE, folds, digits_splits, spec, base, seed=0, threads=1,
                           augmentation="batched")
    per_image = score_policy(ROTATE, folds, digits_splits, spec, base, seed=0, threads=1,
                             augmentation="albumentations")
    assert (batched.augmentation, per_image.augmentation) == ("batched", "albumentations")
    assert abs(batched.accuracy - per_image.accuracy) < 0.05
    assert abs(batched.nll - per_image.nll) < 0.25 * max(batched.nll, per_image.nll)


def test_scoring_never_trains(folds: FoldModels, dm_space: Space, digits_splits: Splits,
                              monkeypatch) -> None:
    import children.train
    import children.trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a density-matching score trained a child")

    monkeypatch.setattr(children.train, "train_child", refuse)
    monkeypatch.setattr(children.trainer.Trainer, "train_epoch", refuse)
    before = {k: v.copy() for k, v in folds.folds[0].weights.items()}
    score_policy(ROTATE, folds, digits_splits, dm_space.reward.matching(), None, seed=0,
                 threads=1)
    assert all((before[k] == v).all() for k, v in folds.folds[0].weights.items())


@pytest.mark.parametrize("name", ["basiccnn", "resnet_fast", "wrn_40_2"])
def test_folding_batch_norms_keeps_every_models_outputs(name: str) -> None:
    import copy

    import torch

    from children.density import fold_batch_norms
    from children.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 10, 3, 16, 8)
    with torch.no_grad():  # running statistics that are not the initial ones
        for _ in range(3):
            model(torch.rand(16, 3, 16, 16) * 3 + 1)
    model.eval()
    folded = fold_batch_norms(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    x = torch.rand(32, 3, 16, 16)
    with torch.inference_mode():
        same = torch.allclose(folded(x.contiguous(memory_format=torch.channels_last)), model(x),
                              atol=1e-4, rtol=1e-4)
    assert same
    if name == "basiccnn":  # every batch norm follows a convolution
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_a_fold_network_is_its_trained_model(folds: FoldModels, digits_splits: Splits) -> None:
    import torch

    from children.models import build_model

    plain = build_model(folds.model, folds.num_classes, folds.channels, folds.image_size,
                        folds.width)
    plain.load_state_dict({k: torch.tensor(v) for k, v in folds.folds[1].weights.items()})
    x = torch.from_numpy(digits_splits.audit.x[:64].transpose(0, 3, 1, 2).astype(np.float32))
    with torch.inference_mode():
        expected = plain.eval()(x)
        got = folds.network(1, torch.device("cpu"))(x.contiguous(
            memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4)
