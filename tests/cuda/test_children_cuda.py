"""The children on a CUDA GPU: kernels against the CPU, determinism, training, density scoring.

Marked `cuda` and skipped (with the reason) where `torch.cuda.is_available()` is false. The
kernels are deterministic given their per-sample parameters, so each batched op gets the same
parameters on both devices (drawn once on the CPU, copied) and must give the CPU's images:
exactly, except where the GPU may round in another order — grid_sample's bilinear weights
(Rotate, ShearX, ShearY), the blur's matrix products (GaussianBlur) and the sharpen's
multiply-subtract (Sharpness): at most one level on at most 1% of the values (`TOLERANCE`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from children.datasets import load_dataset, make_splits
from children.density import FoldModels, fold_rows, score_policy
from children.models import build_model
from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from children.train import train_child
from spaces.ops import get_op
from spaces.policy import BatchOps, Op, Policy, SubPolicy
from spaces.schema import BaseAug, load_space
from tests.devicecheck import OneDevice

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

CUDA = torch.device("cuda")
TOLERANCE = {name: (1, 0.01) for name in ("Rotate", "ShearX", "ShearY", "GaussianBlur",
                                          "Sharpness")}
POLICY = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Contrast", 0.6, 0.7))),
                 SubPolicy((Op("Cutout", 0.4, 0.7), Op("Color", 0.5, 0.6))),
                 SubPolicy((Op("GaussianNoise", 0.3, 0.5), Op("Equalize", 0.0, 0.5)))),
                BatchOps(mixup_alpha=0.3, sample_pairing=0.2))
CROP_FLIP = BaseAug(crop=True, crop_padding=4, flip=True)


def _images(n: int = 128) -> torch.Tensor:
    """scikit-learn's digits as 32x32 RGB with colour gradients, uint8 N×3×32×32 (CPU)."""
    digits = load_digits().images[np.random.default_rng(0).permutation(1797)[:n]]
    grey = np.kron(digits, np.ones((4, 4))) * (255 / 16)
    ys, xs = np.mgrid[0:32, 0:32]
    rgb = np.stack([0.6 * grey + 3 * xs, 0.8 * grey + 40, 0.5 * grey + 3.5 * ys], axis=1)
    return torch.from_numpy(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def digits():
    space = load_space("digits").replace(**{
        "dataset.train_size": 400, "dataset.val_pool_size": 300, "dataset.audit_size": 200,
        "dataset.image_size": 16, "dataset.channels": 1, "child.model": "basiccnn",
        "child.width": 16, "child.batch_size": 64, "reward.last_epochs": 2,
        "reward.val_sample_size": 200})
    return space, make_splits(load_dataset(space.dataset), space.dataset, seed=0)


@pytest.mark.parametrize("magnitude", [0.3, 1.0])
@pytest.mark.parametrize("name", list(BATCHED))
def test_each_op_on_cuda_gives_the_cpu_images(name: str, magnitude: float) -> None:
    x = _images().float()
    strength = get_op(name).strength(magnitude)
    signs = torch.where(torch.rand(len(x), generator=torch.Generator().manual_seed(1)) < 0.5,
                        1.0, -1.0)
    op = BATCHED[name]
    params = op.draw(Draws(0), x.shape, strength)
    on_cpu = op.kernel(x, strength, signs, params)
    with OneDevice():
        on_gpu = op.kernel(x.to(CUDA), strength, signs.to(CUDA),
                           tuple(p.to(CUDA) for p in params))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    diff = (on_gpu.cpu() - on_cpu).abs()
    levels, share = TOLERANCE.get(name, (0, 0.0))
    assert float(diff.max()) <= levels, f"{name}: {float(diff.max())} levels"
    assert float((diff > 0).float().mean()) <= share, name


def test_the_pipeline_on_cuda_is_deterministic_under_a_seed() -> None:
    """And it stays there: after a first call has cached its grids and matrices, nothing
    crosses to or from the host."""
    x = _images(256).to(CUDA)
    pipe = BatchedPipeline(POLICY, CROP_FLIP, 32)
    pipe(x, Draws(0, CUDA))
    with OneDevice() as check:
        first = pipe(x, Draws(7, CUDA))
        again = pipe(x, Draws(7, CUDA))
        other = pipe(x, Draws(8, CUDA))
    assert first.device.type == "cuda" and first.dtype == torch.uint8
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert check.moves == []


@pytest.mark.parametrize("path", ["albumentations", "batched"])
def test_train_child_on_cuda_finishes_with_a_finite_reward(digits, path: str) -> None:
    space, splits = digits
    child = space.replace(**{"child.augmentation": path}).child
    metrics = train_child(child, space.reward, POLICY, splits, seed=0, device="cuda", epochs=3)
    assert metrics.augmentation == path
    assert math.isfinite(metrics.reward) and 0.0 <= metrics.reward <= 1.0
    assert all(math.isfinite(h.train_loss) for h in metrics.history)


def test_density_scoring_on_cuda(digits) -> None:
    space, splits = digits
    dm = space.replace(**{"reward.kind": "density_matching", "policy.batch_ops": {},
                          "reward.density": {"folds": 2, "copies": 2},
                          "reward.validation": "pool"})
    spec = dm.reward.matching()
    rows = fold_rows(splits.train.y, spec.folds, spec.held_out_share(), seed=0)
    torch.manual_seed(0)
    state = build_model(dm.child.model, 10, 1, 16, dm.child.width).state_dict()
    models = FoldModels.from_states(dm.child, splits, rows, [state] * spec.folds)
    policy = Policy(POLICY.sub_policies)
    score = score_policy(policy, models, splits, spec, CROP_FLIP, seed=0, device="cuda")
    again = score_policy(policy, models, splits, spec, CROP_FLIP, seed=0, device="cuda")
    assert score.augmentation == "batched"
    assert math.isfinite(score.reward) and 0.0 <= score.accuracy <= 1.0
    assert score.images == again.images and score.reward == pytest.approx(again.reward, abs=1e-4)
