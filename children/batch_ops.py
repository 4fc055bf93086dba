"""The batch ops (sample pairing, mixup, cutmix) on an augmented batch and its soft targets,
drawn on the batch's device: `children.batches.draw_mix`'s meaning without a host round trip.
`children.augment.PolicyAugment` applies them after the policy's per-image ops."""

from __future__ import annotations

from dataclasses import asdict

import torch

from children.tensor_aug import Draws
from spaces.policy import BatchOps

__all__ = ["mix_on_device"]


def mix_on_device(x: torch.Tensor, targets: torch.Tensor | None, ops: BatchOps, draws: Draws
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch ops on an augmented batch and its soft targets, drawn on the batch's device.

    `children.batches.draw_mix`'s meaning, without a host round trip: sample pairing averages
    each image, with probability `sample_pairing`, with a random partner and keeps its own
    target; then mixup or cutmix (one of the two per batch when both are on) blends the batch
    with a permutation of itself, lam ~ Beta(alpha, alpha), cutmix's lam corrected to the area
    it pasted; targets become lam·a + (1−lam)·b. A uint8 batch is mixed in float32 and rounded.
    """
    n, (h, w) = len(x), x.shape[2:]
    if n < 2 or not any(asdict(ops).values()):
        return x, targets
    work = x.float() if x.dtype == torch.uint8 else x
    if ops.sample_pairing > 0:
        chosen = (draws.uniform(n) < ops.sample_pairing).view(-1, 1, 1, 1)
        partners = draws.integers(n, n)
        work = torch.where(chosen, 0.5 * (work + work[partners]), work)
    if ops.mixup_alpha > 0 or ops.cutmix_alpha > 0:
        weight, lam, perm = _blend(ops, draws, n, h, w, x.device)
        weight = weight.to(work.dtype)
        work = work * weight + work[perm] * (1 - weight)
        if targets is not None:
            lam = lam.to(targets.dtype)
            targets = targets * lam + targets[perm] * (1 - lam)
    if x.dtype == torch.uint8:
        work = work.round_().clamp_(0, 255).to(torch.uint8)
    return work, targets


def _blend(ops: BatchOps, draws: Draws, n: int, h: int, w: int, device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup's or cutmix's per-pixel weight of each image's own pixels (1×1×H×W), the weight
    of its own target (1×1) and the partner permutation, all on `device`."""
    both = ops.mixup_alpha > 0 and ops.cutmix_alpha > 0
    is_mixup = (draws.uniform(1) < 0.5 if both
                else torch.full((1,), ops.mixup_alpha > 0, device=device))
    alpha = torch.where(is_mixup, ops.mixup_alpha, ops.cutmix_alpha).expand(2).contiguous()
    gammas = torch._standard_gamma(alpha, generator=draws.generator)  # Beta from two Gammas
    total = gammas.sum()
    lam = torch.where(total > 0, gammas[0] / total, 0.5).view(1)  # both underflowed: 0.5
    perm = draws.uniform(n).argsort()
    inside, area = _box(lam, draws, h, w, device)
    pixel = torch.where(is_mixup.view(1, 1, 1, 1), lam.view(1, 1, 1, 1),
                        (~inside).float().view(1, 1, h, w))
    own = torch.where(is_mixup, lam, 1.0 - area / (h * w))
    return pixel, own.view(1, 1), perm


def _box(lam: torch.Tensor, draws: Draws, h: int, w: int, device: torch.device
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cutmix's pasted box for `lam` (`draw_mix`'s: sides √(1−lam) of the image's, centred at a
    random pixel, clipped to the image): an H×W mask and its area in pixels."""
    side = torch.sqrt(1.0 - lam)
    half_h, half_w = (h * side).floor().long() // 2, (w * side).floor().long() // 2
    cy, cx = draws.integers(h, 1), draws.integers(w, 1)
    y0, y1 = (cy - half_h).clamp(min=0), (cy + half_h).clamp(max=h)
    x0, x1 = (cx - half_w).clamp(min=0), (cx + half_w).clamp(max=w)
    ys = torch.arange(h, device=device).view(h, 1)
    xs = torch.arange(w, device=device).view(1, w)
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return inside, ((y1 - y0) * (x1 - x0)).float()
