"""The children on a CUDA GPU: kernels against the CPU, determinism, training, density scoring.

Marked `cuda` and skipped (with the reason) where `torch.cuda.is_available()` is false. The
kernels are deterministic given their per-sample parameters, so each batched op gets the same
parameters on both devices (drawn once on the CPU, copied) and must give the CPU's images:
exactly, except where the GPU may round in another order — grid_sample's bilinear weights
(Rotate, ShearX, ShearY), the blur's matrix products (GaussianBlur) and the sharpen's
multiply-subtract (Sharpness): at most one level on at most 1% of the values (`TOLERANCE`).
A trained child and a density score are held to the CPU run of the same seeds, within the
spread of CPU runs under other seeds, and above a floor a broken run misses
(tests/cuda/references.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from children.density import score_policy
from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from children.train import train_child
from spaces.ops import get_op
from spaces.policy import Policy
from spaces.schema import BaseAug
from tests.cuda.references import (
    CHILD_EPOCHS,
    POLICY,
    child_agrees,
    density_agrees,
    density_space,
    digits_setup,
    fold_models,
)
from tests.devicecheck import OneDevice

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

CUDA = torch.device("cuda")
TOLERANCE = {name: (1, 0.01) for name in ("Rotate", "ShearX", "ShearY", "GaussianBlur",
                                          "Sharpness")}
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
    return digits_setup()


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
def test_train_child_on_cuda_scores_as_on_the_cpu(digits, path: str) -> None:
    space, splits = digits
    child = space.replace(**{"child.augmentation": path}).child

    def run(device: str):
        return train_child(child, space.reward, POLICY, splits, seed=0, device=device,
                           epochs=CHILD_EPOCHS, threads=2)

    gpu, cpu = run("cuda"), run("cpu")
    assert gpu.augmentation == path
    assert all(math.isfinite(h.train_loss) for h in gpu.history)
    assert child_agrees(gpu.reward, cpu.reward), (gpu.reward, cpu.reward)


def test_density_scoring_on_cuda_scores_as_on_the_cpu(digits) -> None:
    """Fold models trained on the CPU, scored on both devices: the same held-out images and
    copies, other augmentation draws on the GPU."""
    space, splits = digits
    models = fold_models(space, splits)
    spec = density_space(space).reward.matching()
    policy, base = Policy(POLICY.sub_policies), space.child.base_augmentation
    score = score_policy(policy, models, splits, spec, base, seed=0, device="cuda")
    again = score_policy(policy, models, splits, spec, base, seed=0, device="cuda")
    cpu = score_policy(policy, models, splits, spec, base, seed=0, device="cpu", threads=2)
    assert score.augmentation == "batched"
    assert math.isfinite(score.reward) and score.images == again.images == cpu.images
    assert density_agrees(score.accuracy, cpu.accuracy), (score.accuracy, cpu.accuracy)
    assert score.reward == pytest.approx(again.reward, abs=1e-4)
