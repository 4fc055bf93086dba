"""The batch ops (sample pairing, mixup, cutmix), written once: drawn per batch from a numpy
generator (`draw_mix`), applied to a float N×C×H×W tensor where it lies (`apply_mix`) and to
soft targets (`mix_targets`).

The children's training batches (`children.batches`: both augmentation paths) and
`children.augment.PolicyAugment` (`mix_on_device`) use these and no other. A batch's plan is a
few numbers and index arrays, drawn on the host (numpy's Beta, whose variates torch draws only
from its global generator) and moved to the batch's device in one transfer (`plans_on`); applying
it reads nothing back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from spaces.policy import BatchOps

__all__ = ["MixPlan", "apply_mix", "draw_mix", "mix_on_device", "mix_targets", "plans_on"]


@dataclass(frozen=True)
class MixPlan:
    """The random part of a batch's mixing, drawn before it is applied. Its index arrays are
    numpy arrays as drawn, or int64 tensors on a batch's device (`plans_on`)."""

    chosen: Any  # sample pairing: the images averaged with a partner...
    partners: Any  # ...and their partners
    mode: str = ""  # "", "mixup" or "cutmix"
    lam: float = 1.0  # the weight of each image's own label
    perm: Any = None  # mixup/cutmix: each image's partner
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # cutmix: y0, y1, x0, x1


def draw_mix(n: int, height: int, width: int, ops: BatchOps,
             rng: np.random.Generator) -> MixPlan:
    """Draw the batch ops' randomness for a batch of n images of height × width.

    Sample pairing (Inoue 2018) averages each image with probability `sample_pairing` with a
    random other image of the batch and keeps its own label. Mixup and cutmix (one of the two
    per batch when both are on) mix a permuted batch in with lam ~ Beta(alpha, alpha); cutmix's
    lam is then the share of the image its box left unpasted.
    """
    chosen = partners = np.zeros(0, dtype=np.int64)
    if ops.sample_pairing > 0 and n > 1:
        chosen = np.flatnonzero(rng.random(n) < ops.sample_pairing)
        if len(chosen):
            partners = rng.integers(0, n, size=len(chosen))
    modes = [(name, alpha) for name, alpha in (("mixup", ops.mixup_alpha),
                                                ("cutmix", ops.cutmix_alpha)) if alpha > 0]
    if not modes or n < 2:
        return MixPlan(chosen, partners)
    name, alpha = modes[int(rng.integers(len(modes)))]
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(n)
    if name == "mixup":
        return MixPlan(chosen, partners, name, lam, perm)
    cut_h, cut_w = int(height * np.sqrt(1.0 - lam)), int(width * np.sqrt(1.0 - lam))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return MixPlan(chosen, partners, name, lam, perm, (y0, y1, x0, x1))


def plans_on(plans: list[MixPlan], device: torch.device | str) -> list[MixPlan]:
    """The plans with their index arrays on `device`, moved in one transfer (none when no plan
    holds an index)."""
    arrays = [a for p in plans for a in (p.chosen, p.partners, _EMPTY if p.perm is None
                                         else p.perm)]
    if not any(len(a) for a in arrays):
        return plans
    flat = torch.as_tensor(np.concatenate(arrays).astype(np.int64), device=device)
    parts = flat.split([len(a) for a in arrays])
    return [replace(p, chosen=parts[3 * i], partners=parts[3 * i + 1],
                    perm=None if p.perm is None else parts[3 * i + 2])
            for i, p in enumerate(plans)]


_EMPTY = np.zeros(0, dtype=np.int64)


def apply_mix(x: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """Mix a float N×C×H×W batch as planned: sample pairing and cutmix in place, mixup into a
    new tensor (returned either way). Give the plan's indices on x's device (`plans_on`); numpy
    ones are moved here."""
    index = _on(x.device)
    if len(plan.chosen):
        chosen, partners = index(plan.chosen), index(plan.partners)
        x[chosen] = 0.5 * (x[chosen] + x[partners])
    if plan.mode == "mixup":
        x = plan.lam * x + (1.0 - plan.lam) * x[index(plan.perm)]
    elif plan.mode == "cutmix":
        y0, y1, x0, x1 = plan.box
        x[:, :, y0:y1, x0:x1] = x[index(plan.perm), :, y0:y1, x0:x1]
    return x


def mix_targets(targets: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """Soft N×K targets as the plan mixes their images: lam·own + (1 − lam)·partner's (sample
    pairing keeps each image's own)."""
    if plan.perm is None:
        return targets
    perm = _on(targets.device)(plan.perm)
    return targets * plan.lam + targets[perm] * (1.0 - plan.lam)


def _on(device: torch.device) -> Any:
    return lambda index: torch.as_tensor(index, device=device)


def mix_on_device(x: torch.Tensor, targets: torch.Tensor | None, ops: BatchOps,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch ops on an augmented batch and its soft targets, where the batch lies.

    The plan is drawn from `rng` (`draw_mix`) and moved to the batch's device in one transfer;
    nothing is read back. `x` is left unchanged; a uint8 batch is mixed in float32 and rounded
    back to levels.
    """
    if len(x) < 2 or (ops.sample_pairing <= 0 and ops.mixup_alpha <= 0
                      and ops.cutmix_alpha <= 0):
        return x, targets
    plan = plans_on([draw_mix(len(x), x.shape[2], x.shape[3], ops, rng)], x.device)[0]
    work = apply_mix(x.float() if x.dtype == torch.uint8 else x.clone(), plan)
    if x.dtype == torch.uint8:
        work = work.round_().clamp_(0, 255).to(torch.uint8)
    return work, None if targets is None else mix_targets(targets, plan)
