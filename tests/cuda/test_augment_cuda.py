"""children.augment on a CUDA GPU: the albumentations export's distribution, the batch's device
only and no host sync, determinism, and examples/train_cifar.py on the GPU (held to the floor
its CPU run is held to).

Marked `cuda` and skipped (with the reason) where `torch.cuda.is_available()` is false.
"""

from __future__ import annotations

import pytest
import torch

from children.augment import PolicyAugment
from spaces.schema import BaseAug
from tests.children.test_augment import FOUND, _through_both, assert_same_distribution
from tests.test_examples import ABOVE_CHANCE, ARGS, POLICY, _data, _run, printed_accuracy

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

CUDA = torch.device("cuda")


def test_the_module_on_cuda_matches_the_albumentations_export_in_distribution(tmp_path) -> None:
    assert_same_distribution(*_through_both(tmp_path, CUDA))


def test_the_module_on_cuda_stays_there_never_syncs_and_repeats_under_a_seed() -> None:
    """Every batch op on: after a first call has cached the pipeline's grids, a batch is
    augmented and mixed without a synchronising call (torch's sync debug mode raises)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 32, 32), generator=g, dtype=torch.uint8).to(CUDA)
    labels = (torch.arange(256) % 10).to(CUDA)
    one = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, seed=3)
    two = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, seed=3)
    one(x, labels), two(x, labels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, soft = one(x, labels)
        again, soft_again = two(x, labels)
        unit, _ = one(x.float() / 255.0, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == soft.device.type == unit.device.type == "cuda"
    assert out.dtype == torch.uint8 and unit.dtype == torch.float32
    assert torch.equal(out, again) and torch.equal(soft, soft_again)
    assert torch.allclose(soft.sum(1), torch.ones(256, device=CUDA))


def test_train_cifar_on_cuda_learns_as_on_the_cpu(tmp_path) -> None:
    """tests/test_examples.py's run and floor, on the GPU: the same data and settings, held
    above chance as the CPU run is (its draws and bf16 differ from the CPU's; a broken run
    scores chance)."""
    from spaces.policy import save_policy

    policy = save_policy(POLICY, tmp_path / "best_policy.yaml")
    run = _run("--policy", str(policy), "--data", str(_data(tmp_path)), *ARGS,
               "--device", "cuda")
    assert run.returncode == 0, run.stderr
    assert printed_accuracy(run.stdout) > ABOVE_CHANCE, run.stdout
