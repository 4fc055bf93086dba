"""Ops drawn per image (RandAugment- and TrivialAugment-style policies) on a CUDA GPU: the
batch's device only, no host sync, repeatable under a seed, and albumentations' distribution.

Marked `cuda` and skipped (with the reason) where `torch.cuda.is_available()` is false.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from children.tensor_aug import BatchedPipeline, Draws
from spaces.policy import build_pipeline
from tests.children.test_drawn_parity import CROP_FLIP, POLICIES
from tests.children.test_tensor_parity import _real_images, assert_same_distribution

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

CUDA = torch.device("cuda")


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_drawn_policy_on_cuda_never_syncs_and_repeats_under_a_seed(name: str) -> None:
    pipe = BatchedPipeline(POLICIES[name], CROP_FLIP, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 32, 32), generator=g, dtype=torch.uint8).to(CUDA)
    pipe(x, Draws(0, CUDA))  # the grids and the (op, level) table, made once on the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = pipe(x, Draws(3, CUDA))
        again = pipe(x, Draws(3, CUDA))
        unit = pipe(x.float() / 255.0, Draws(3, CUDA))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.dtype == torch.uint8 and unit.dtype == torch.float32
    assert torch.equal(out, again) and not torch.equal(out, pipe(x, Draws(4, CUDA)))


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_drawn_policy_on_cuda_matches_albumentations_in_distribution(name: str) -> None:
    policy = POLICIES[name]
    rgb, _ = _real_images(384, seed=1)
    source = np.tile(rgb, (4, 1, 1, 1))
    pipe = build_pipeline(policy, CROP_FLIP, 32, seed=0)
    reference = np.stack([pipe(image=i)["image"] for i in source])
    x = torch.from_numpy(source).permute(0, 3, 1, 2).contiguous().to(CUDA)
    batched = BatchedPipeline(policy, CROP_FLIP, 32)(x, Draws(0, CUDA)).cpu()
    assert_same_distribution(batched.numpy(), reference, source)
