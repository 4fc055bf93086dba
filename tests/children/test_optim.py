"""The child's mixed precision per GPU, decided without a GPU: torch.cuda's device queries are
faked (the GPU's compute capability), and `torch.cuda.is_bf16_supported` runs as it is."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from children.optim import amp_dtype, needs_scaler

CUDA = torch.device("cuda")


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, major: int, minor: int) -> None:
    """A CUDA GPU of compute capability major.minor on which a bf16 tensor can be made (this
    torch's emulation check says yes on every GPU, a T4's too)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=major, minor=minor))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True,
                        raising=False)


@pytest.mark.parametrize(("gpu", "capability", "dtype", "scaled"), [
    ("V100", (7, 0), torch.float16, True),
    ("T4", (7, 5), torch.float16, True),
    ("A100", (8, 0), torch.bfloat16, False),
    ("A10G", (8, 6), torch.bfloat16, False),
    ("H100", (9, 0), torch.bfloat16, False),
])
def test_bf16_only_where_the_gpu_has_it_else_fp16_with_a_scaler(
        monkeypatch: pytest.MonkeyPatch, gpu: str, capability: tuple[int, int],
        dtype: torch.dtype, scaled: bool) -> None:
    _fake_gpu(monkeypatch, *capability)
    assert torch.cuda.is_bf16_supported()  # emulation counted: the trap amp_dtype avoids
    assert amp_dtype(CUDA) == dtype, gpu
    assert needs_scaler(CUDA, amp_dtype(CUDA)) is scaled, gpu


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_no_scaler_off_cuda(device: str) -> None:
    dev = torch.device(device)
    assert not needs_scaler(dev, amp_dtype(dev))
