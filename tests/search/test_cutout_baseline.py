"""The crop/flip + Cutout baseline (DeVries & Taylor 2017): listed, built, one 16×16 hole of
zeros on a real 32×32 image, evaluated on real data, the same images under the same seed.

Real CIFAR-10 from ../shared/data when present, else scikit-learn digits (the same assertions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from search.evaluate import EvaluateOptions, baseline_arm, evaluate, make_plan, run_arm
from search.evaluate.baselines import BASELINES, CUTOUT, baseline, parse_baselines
from spaces.policy import Op
from spaces.schema import BaseAug, Space, load_space
from tests.conftest import SHARED_DATA

TINY = SHARED_DATA / "cifar10_tiny.npz"
NO_BASE = BaseAug(crop=False, flip=False)


def _real_images(n: int) -> np.ndarray:
    """`n` real 32×32 RGB images: CIFAR-10 when present, else digits upscaled 4×."""
    if TINY.exists():
        return np.load(TINY)["x_train"][:n]
    from sklearn.datasets import load_digits

    big = (np.kron(load_digits().images[:n], np.ones((4, 4))) * (255 / 16)).astype(np.uint8)
    return np.repeat(big[..., None], 3, axis=-1)


def _space() -> tuple[Space, str | None]:
    """A small child on real CIFAR-10 (tiny), else on digits."""
    small = {"child.width": 8, "child.epochs": 1, "reward.last_epochs": 1,
             "child.batch_size": 64}
    if TINY.exists():
        return load_space("cifar10").replace(**{
            **small, "dataset.train_size": 100, "dataset.val_pool_size": 60,
            "dataset.audit_size": 40, "reward.val_sample_size": 50}), str(TINY)
    return load_space("digits").replace(**small), None


def _zero_square(image: np.ndarray) -> tuple[int, int]:
    """The height and width of the box around the pixels zero in every channel (0, 0: none)."""
    rows, cols = np.nonzero((image == 0).all(axis=-1))
    if not len(rows):
        return 0, 0
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_cutout_is_listed_after_cropflip_and_parsed():
    assert BASELINES.index("cutout") == BASELINES.index("cropflip") + 1
    assert parse_baselines("cropflip, Cutout,cutout") == ["cropflip", "cutout"]


def test_cutout_builds_as_the_space_crop_flip_then_one_always_on_cutout():
    space = load_space("cifar10")
    arm = baseline_arm("cutout", space)
    assert arm.kind == "baseline" and not arm.found
    assert arm.base == space.child.base_augmentation  # the space's own crop/flip
    assert arm.policy == CUTOUT and CUTOUT.sub_policies[0].ops == (Op("Cutout", 1.0, 1.0),)
    assert arm.augment() is None  # the trainer's own (seeded) pipeline: base + policy
    pipeline = arm.tta().pipeline
    assert [type(t).__name__ for t in pipeline.transforms] == [
        "Pad", "RandomCrop", "HorizontalFlip", "OneOf"]
    [dropout] = pipeline.transforms[-1].transforms[0].transforms
    assert type(dropout).__name__ == "CoarseDropout" and dropout.p == 1.0
    assert (dropout.num_holes_range, dropout.hole_height_range, dropout.hole_width_range,
            dropout.fill) == ((1, 1), (0.5, 0.5), (0.5, 0.5), 0)
    assert "Cutout" in arm.description and "pad 4 + random crop" in arm.description


def test_cutout_zeroes_one_square_of_half_the_side_in_every_real_image():
    images = np.maximum(_real_images(20), 1)  # so every 0 afterwards is the hole's
    fn = baseline("cutout", NO_BASE).tta(32)
    fn.set_random_seed(0)
    corners = set()
    for image in images:
        out = fn(image.copy())
        hole = (out == 0).all(axis=-1)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert _zero_square(out) == (16, 16) and hole.sum() == 16 * 16  # a full 16×16 square
        assert np.array_equal(out[~hole], image[~hole])  # nothing else changed
        corners.add(tuple(int(v.min()) for v in np.nonzero(hole)))
    assert len(corners) > 5  # the hole moves from image to image


def _first_batches(arm: Any, plan: Any, seed: int) -> list[np.ndarray]:
    """The training batches the child sees under `arm` with `seed` (1 epoch)."""
    from children.train import train_child

    seen: list[np.ndarray] = []
    child = plan.child.model_copy(update={"base_augmentation": arm.base})
    train_child(child, plan.reward, arm.policy, plan.splits, seed=seed, threads=1, epochs=1,
                augment=arm.augment(), on_batch=lambda x, y: seen.append(x.numpy().copy()))
    return seen


def test_training_under_cutout_repeats_under_a_seed_and_every_image_has_its_hole():
    space, data = _space()
    plan = make_plan(space, EvaluateOptions(data=data, epochs=1, threads=1))
    arm = baseline_arm("cutout", space.replace(**{"child.base_augmentation.crop": False,
                                                  "child.base_augmentation.flip": False}))
    first, again = _first_batches(arm, plan, 0), _first_batches(arm, plan, 0)
    other = _first_batches(arm, plan, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    side = space.dataset.image_size // 2
    for batch in first:  # normalised: a hole is a side×side square at each channel's minimum
        low = batch.min(axis=(0, 2, 3), keepdims=True)
        at_low = (batch == low).all(axis=1)
        assert (at_low.sum(axis=(1, 2)) >= side * side).all()
    plain = _first_batches(baseline_arm("none", space), plan, 0)
    assert not all(np.array_equal(a, b) for a, b in zip(first, plain, strict=True))


def test_an_evaluation_with_cutout_runs_and_repeats_under_a_seed(tmp_path):
    space, data = _space()
    result = evaluate(space=space, data=data, baselines="cropflip,cutout", seeds=1, epochs=1,
                      tta=2, threads=1, output=tmp_path / "out", quiet=True)
    by_name = {a.name: a for a in result.arms}
    assert list(by_name) == ["cropflip", "cutout"]
    cutout = by_name["cutout"]
    assert cutout.kind == "baseline" and 0.0 <= cutout.accuracy.mean <= 1.0
    assert 0.0 <= cutout.tta.mean <= 1.0
    assert "cutout" in (tmp_path / "out" / "evaluation.md").read_text(encoding="utf-8")
    plan = make_plan(space, EvaluateOptions(data=data, epochs=1, threads=1))
    arm = baseline_arm("cutout", space)
    once, twice = run_arm(arm, plan, seed=0), run_arm(arm, plan, seed=0)
    assert (once.accuracy, once.train_loss) == (twice.accuracy, twice.train_loss)
    [run] = [r for r in result.runs if r.arm == "cutout"]
    assert run.accuracy == pytest.approx(once.accuracy)
