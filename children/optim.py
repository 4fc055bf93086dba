"""The child's optimiser, learning-rate schedule and mixed precision, which the one training loop
(`children.trainer`) applies to a lone child, a cohort and contrastive pre-training alike."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from spaces.schema import OptimizerSpec

__all__ = ["amp_dtype", "autocast", "lr_factor", "make_optimizer", "needs_scaler"]


def lr_factor(kind: str, step: int, total: int) -> float:
    """Learning-rate multiplier at `step` of `total`: constant, cosine or one-cycle."""
    t = min(step / max(total, 1), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "onecycle":  # warm up from 0.1 to 1 over the first 25%, then cosine to 0
        if t < 0.25:
            return 0.1 + 0.9 * t / 0.25
        return 0.5 * (1.0 + math.cos(math.pi * (t - 0.25) / 0.75))
    return 1.0


def make_optimizer(spec: OptimizerSpec, model: torch.nn.Module,
                   fused: bool = False) -> torch.optim.Optimizer:
    """The child's optimizer; `fused` (CUDA) also lets a gradient scaler step it without reading
    its inf check on the host. Both are element-wise: one optimizer over a cohort's grouped
    parameters steps each member as its own optimizer would."""
    if spec.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay,
                                 fused=fused or None)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                           weight_decay=spec.weight_decay,
                           nesterov=spec.nesterov and spec.momentum > 0, fused=fused or None)


def autocast(dev: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA; nothing elsewhere (autocast knows no `meta`)."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def amp_dtype(dev: torch.device) -> torch.dtype:
    """bf16 where the GPU computes it natively (compute capability 8.0 and later: A100, A10G,
    L4, H100), else fp16, which `needs_scaler` pairs with a gradient scaler (T4 7.5, V100 7.0).

    Emulated bf16 does not count: `torch.cuda.is_bf16_supported()` also says yes where a bf16
    tensor can merely be made (a T4 or a V100), which would train in bf16 without a scaler
    and without bf16 hardware. The check reads the current CUDA device, the trial's one GPU.
    Off CUDA autocast is off and the value is not used.
    """
    if dev.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


def needs_scaler(dev: torch.device, dtype: torch.dtype) -> bool:
    """Whether training under `autocast(dev, dtype)` needs gradient (loss) scaling: fp16 on
    CUDA, whose small gradients would underflow unscaled."""
    return dev.type == "cuda" and dtype == torch.float16
