"""Contrastive pre-training (children/ssl.py) and the scores of its frozen features
(children/probe.py), on real digits: the NT-Xent loss on known inputs, learning, determinism,
resume, one device, and the data the self-supervised reward reads (labelled subset, unlabelled
images, data without any labels) with its one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from children.datasets import DataError, ImageData, check_classes, load_dataset, make_splits
from children.probe import Scorer, fit_linear, knn_accuracy, rotated
from children.ssl import _Contrastive, nt_xent, pool_of, pretrain_ssl, trunk_of
from children.tensor_aug import Draws
from children.trainer import Trainer
from spaces.errors import SpaceError
from spaces.policy import Op, Policy, SubPolicy
from spaces.schema import Space
from tests.devicecheck import OneDevice

META = torch.device("meta")
VIEWS = Policy((SubPolicy((Op("Rotate", 0.4, 0.8), Op("Contrast", 0.5, 0.8))),
                SubPolicy((Op("TranslateX", 0.3, 0.8), Op("Brightness", 0.5, 0.8)))))


@pytest.fixture(scope="module")
def ssl_space(digits_space: Space) -> Space:
    return digits_space.replace(**{
        "reward.kind": "self_supervised", "policy.batch_ops": {}, "dataset.labelled_size": 100,
        "child.epochs": 6, "child.batch_size": 64, "reward.last_epochs": 1,
        "reward.eval_every": 100,
        "child.optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "child.schedule": "cosine", "reward.ssl": {"probe_steps": 200,
                                                   "rotation_images": 200}})


@pytest.fixture(scope="module")
def ssl_splits(digits_data: ImageData, ssl_space: Space):
    return make_splits(digits_data, ssl_space.dataset, seed=0)


def _manual_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        others = [math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i]
        total -= math.log(math.exp(float(z[i] @ z[j]) / t) / sum(others))
    return total / n2


def _run(space: Space, splits, dev: torch.device, epochs: int) -> tuple[_Contrastive, Trainer]:
    """A pre-training's strategy (seed 0, views' seed 1) and its trainer, before any epoch."""
    run = _Contrastive(space.child, space.reward, splits, 0, dev, epochs, 1)
    return run, Trainer(space.child, run, dev, epochs)


def test_nt_xent_on_known_inputs() -> None:
    eye = torch.eye(2)  # two images, each view identical to its partner, orthogonal to the other
    loss, hits = nt_xent(eye, eye, 1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert hits.item() == 4
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    for t in (0.1, 0.5, 2.0):
        assert nt_xent(z1, z2, t)[0].item() == pytest.approx(_manual_nt_xent(z1, z2, t), rel=1e-5)
    # swapped partners: a view's partner is now the least similar; the loss rises, no hits
    far = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert nt_xent(far, far.flip(0), 0.5)[1].item() == 0
    assert nt_xent(far, far.flip(0), 0.5)[0] > nt_xent(far, far, 0.5)[0]


def test_the_trunk_drops_the_final_linear_layer(ssl_space: Space) -> None:
    from children.models import build_model, model_names

    for name in model_names():
        model = build_model(name, 10, 3, 16, 8)
        trunk, width = trunk_of(model)
        assert not isinstance(list(trunk.modules())[-1], torch.nn.Linear)
        assert trunk(torch.zeros(2, 3, 16, 16)).shape == (2, width)


@pytest.fixture(scope="module")
def learning_space(ssl_space: Space) -> Space:
    """Long enough to learn: 20 epochs of batches of 32 at temperature 0.2 (measured, seeds 0 to
    2: the k-NN score rose by +0.07 to +0.17 over the untrained network; after 6 epochs of 64 at
    0.5, `ssl_space`'s, it stayed below even the freshly initialised network's)."""
    return ssl_space.replace(**{"child.epochs": 20, "child.batch_size": 32,
                                "reward.ssl.temperature": 0.2})


@pytest.fixture(scope="module")
def untrained(learning_space: Space, ssl_splits):
    """The same network put through 5 epochs of the same pre-training at lr 1e-9: its weights
    stay at their initial values (AdamW moves a weight by about lr a step) and its batch norms
    hold the views' statistics, which alone lift k-NN accuracy over the freshly initialised
    network's (+0.07 at seed 0)."""
    space = learning_space.replace(**{"child.optimizer.lr": 1e-9})
    return pretrain_ssl(space.child, space.reward, VIEWS, ssl_splits, seed=0, aug_seed=1,
                        threads=1, device="cpu", epochs=5)


def _margin(reference: float, n: int) -> float:
    """Two standard errors of the difference of two accuracies near `reference` on the same n
    validation images (independent errors: the widest case)."""
    return 2 * math.sqrt(2 * reference * (1 - reference) / n)


def _learned(knn: float, untrained_knn: float, splits) -> bool:
    return knn - untrained_knn > _margin(untrained_knn, len(splits.val_pool))


def test_pretraining_learns_features_the_untrained_network_lacks(learning_space: Space,
                                                                 ssl_splits, untrained) -> None:
    """The k-NN score of the frozen features beats the untrained network's by more than the
    validation noise. The linear probe on 100 labels cannot tell them apart here: the network
    at its random initialisation already reaches 0.77 to 0.85 (seeds 0 to 2), as pre-trained."""
    metrics = pretrain_ssl(learning_space.child, learning_space.reward, VIEWS, ssl_splits,
                           seed=0, aug_seed=1, threads=1, device="cpu")
    history = metrics.history
    assert len(history) == 20 and history[-1].train_loss < history[0].train_loss - 1.0
    assert all(math.isnan(h.val_accuracy) for h in history[:-1])  # scored where the reward reads
    assert metrics.reward == history[-1].val_accuracy == metrics.probe_accuracy
    assert _learned(metrics.knn_accuracy, untrained.knn_accuracy, ssl_splits), (
        metrics.knn_accuracy, untrained.knn_accuracy)


def test_the_comparison_fails_for_a_network_that_learned_nothing(learning_space: Space,
                                                                ssl_splits, untrained) -> None:
    """The freshly initialised network (scored before any step) does not pass it."""
    from children.train import cpu_threads

    with cpu_threads(torch.device("cpu"), 1):
        run, trainer = _run(learning_space, ssl_splits, torch.device("cpu"), 20)
        fresh = run.scores(trainer, 19)  # the last epoch's: every score
    assert not _learned(fresh["knn_accuracy"], untrained.knn_accuracy, ssl_splits)
    assert not _learned(untrained.knn_accuracy, untrained.knn_accuracy, ssl_splits)


def test_same_seeds_same_run_and_resume_continues_it(ssl_space: Space, ssl_splits) -> None:
    space = ssl_space.replace(**{"child.epochs": 2})
    states = []
    args = (space.child, space.reward, VIEWS, ssl_splits)
    whole = pretrain_ssl(*args, seed=3, aug_seed=4, threads=1, device="cpu",
                         on_epoch=lambda s, state: states.append(state))
    again = pretrain_ssl(*args, seed=3, aug_seed=4, threads=1, device="cpu")
    assert [h.train_loss for h in whole.history] == [h.train_loss for h in again.history]
    assert whole.reward == again.reward and whole.audit_accuracy == again.audit_accuracy
    resumed = pretrain_ssl(*args, seed=3, aug_seed=4, threads=1, device="cpu", state=states[0])
    assert resumed.history[-1].train_loss == whole.history[-1].train_loss
    assert resumed.reward == whole.reward
    other = pretrain_ssl(*args, seed=3, aug_seed=5, threads=1, device="cpu")
    assert other.history[0].train_loss != whole.history[0].train_loss  # only the views differ


def test_the_rotation_score_needs_no_labels(ssl_space: Space, digits_data: ImageData,
                                            tmp_path: Path) -> None:
    path = tmp_path / "images.npz"
    np.savez(path, x=digits_data.x_train[:600])
    space = ssl_space.replace(**{
        "dataset.name": "npz", "dataset.path": str(path), "dataset.labelled_size": 0,
        "dataset.train_size": 300, "dataset.val_pool_size": 100, "dataset.audit_size": 60,
        "dataset.resize": False, "reward.ssl.score": "rotation", "child.epochs": 3,
        "reward.val_sample_size": 50})
    data = load_dataset(space.dataset)
    assert not data.labelled and set(data.y_train) == {-1}
    splits = make_splits(data, space.dataset, seed=0)
    check_classes(data, splits, space.dataset)  # nothing to check without labels
    metrics = pretrain_ssl(space.child, space.reward, VIEWS, splits, seed=0, threads=1,
                           device="cpu")
    assert metrics.reward == metrics.rotation_accuracy > 0.3
    assert math.isnan(metrics.probe_accuracy) and math.isnan(metrics.knn_accuracy)
    assert 0 <= metrics.audit_accuracy <= 1  # the rotation score on the audit images


def test_unlabelled_images_join_the_pretraining_pool(ssl_space: Space, digits_data: ImageData,
                                                     tmp_path: Path) -> None:
    extra = digits_data.x_test[:40]
    np.savez(tmp_path / "more.npz", x_train=extra)
    folder = tmp_path / "folder"
    (folder / "a").mkdir(parents=True)
    for i, image in enumerate(extra[:5]):
        cv2.imwrite(str(folder / ("a" if i % 2 else "") / f"{i}.png"), image)
    for source, count in ((tmp_path / "more.npz", 40), (folder, 5)):
        spec = ssl_space.dataset.model_copy(update={"unlabelled": str(source)})
        data = load_dataset(spec)
        splits = make_splits(data, spec, seed=0)
        assert splits.unlabelled is not None and len(splits.unlabelled) == count
        assert set(splits.unlabelled.y) == {-1}
        pool = pool_of(splits)
        assert len(pool) == len(splits.train) + count
        labelled = splits.labelled_set()
        assert len(labelled) == 100 and set(labelled.y) == set(range(10))  # stratified
        assert np.array_equal(labelled.x, splits.train.x[:100])


# ---------------------------------------------------------------- one device


def test_a_pretraining_step_and_the_scores_stay_on_the_device(ssl_space: Space,
                                                              ssl_splits) -> None:
    """On meta: the run moves its pool there once and the epoch its order; a step (two views,
    NT-Xent, the optimiser) moves nothing and reads nothing back; the probe, k-NN and rotation
    scores are computed there, read by the caller once."""
    run, trainer = _run(ssl_space, ssl_splits, META, 2)
    run.feed.batched(VIEWS)(torch.empty(4, 1, 16, 16, dtype=torch.uint8, device=META),
                            Draws(0, META))  # its per-strength caches
    with OneDevice() as check:
        views, _inline = run.batches(0, VIEWS)
        first = next(views)
        setup = list(check.moves)
        step = trainer._step(first)
        trainer._step(next(views))
    loss, hits = step.loss, step.hits_a
    assert loss.device == hits.device == META and loss.ndim == 0
    assert check.moves == setup, check.moves[len(setup):]
    assert len(setup) <= 3, setup  # pool images and labels (once per run), the epoch's order
    p = run.scorer_parts
    scorer = Scorer(lambda d, i: run.embed(trainer, d, i),
                    lambda d, i: run.embed(trainer, d, i, rotate=True), p["labelled"],
                    p["val"], p["audit"], p["rotation_fit"], 10, ssl_space.reward.contrastive())
    with OneDevice() as check:
        scores = [scorer.score(n) for n in ("probe", "knn", "rotation", "audit")]
    assert all(s.device == META and s.ndim == 0 for s in scores)
    # each evaluation set (labelled, validation, audit, rotation rows) moved once
    assert len(check.moves) <= 8, check.moves


def test_probe_and_knn_recover_separable_classes() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 4
    y = torch.arange(3).repeat_interleave(40)
    x = centres[y] + torch.randn(120, 16, generator=g)
    predict = fit_linear(x[::2], y[::2], 3, 100)
    assert (predict(x[1::2]) == y[1::2]).float().mean() == 1.0
    assert knn_accuracy((x[::2], y[::2]), (x[1::2], y[1::2]), 3, 5) == 1.0
    images, labels = rotated(torch.arange(8.0).view(2, 1, 2, 2))
    assert images.shape == (8, 1, 2, 2) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(images[2], torch.rot90(images[0], 1, (1, 2)))


# ---------------------------------------------------------------- what does not fit


def test_data_errors(ssl_space: Space, digits_data: ImageData, tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"labelled_size <= dataset.train_size"):
        ssl_space.replace(**{"dataset.labelled_size": 401})
    with pytest.raises(SpaceError, match=r"score: rotation"):
        ssl_space.replace(**{"dataset.labelled_size": 0})
    with pytest.raises(SpaceError, match=r"applies to `reward.kind: self_supervised`"):
        ssl_space.replace(**{"reward.kind": "child_training", "reward.ssl": None})
    with pytest.raises(SpaceError, match=r"batch ops \(mixup_alpha\)"):
        ssl_space.replace(**{"policy.batch_ops": {"mixup_alpha": [0, 0.4]}})
    # a labelled set too small to hold every class
    spec = ssl_space.dataset.model_copy(update={"labelled_size": 6})
    with pytest.raises(DataError, match=r"labelled set \(dataset.labelled_size 6\) holds 6 of "
                                        r"the 10 classes .*at least 10"):
        check_classes(digits_data, make_splits(digits_data, spec, 0), spec)
    # unlabelled images of another size
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 20, 20, 1), np.uint8))
    spec = ssl_space.dataset.model_copy(update={"unlabelled": str(tmp_path / "big.npz")})
    with pytest.raises(DataError, match=r"dataset.unlabelled\): x images are 20x20x1 but the "
                                        r"space's dataset is 8x8x1"):
        load_dataset(spec.model_copy(update={"resize": False, "image_size": 8}))
    assert load_dataset(spec).x_unlabelled.shape == (4, 16, 16, 1)  # dataset.resize: true
    # images without labels for a probe
    np.savez(tmp_path / "x.npz", x=digits_data.x_train[:100])
    spec = ssl_space.dataset.model_copy(update={"name": "npz", "path": str(tmp_path / "x.npz"),
                                                "resize": False})
    with pytest.raises(DataError, match=r"has no labels .*labelled_size: 0 and "
                                        r"reward.ssl.score: rotation"):
        load_dataset(spec)
    with pytest.raises(DataError, match=r"no images under x or x_train"):
        load_dataset(ssl_space.dataset.model_copy(update={
            "unlabelled": str(_npz(tmp_path, y=np.zeros(3)))}))


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    return path
