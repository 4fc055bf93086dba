"""A found policy in your own training loop: augment N×C×H×W batches on their own device.

`load_augment("runs/c10/best_policy.yaml")` reads any policy file augsearch writes (a policy, a
pbt `schedule.json`, density matching's `merged_policy.yaml`) and returns `PolicyAugment`, a
`torch.nn.Module` that applies it to a uint8 or float batch where the batch lies, CPU or CUDA:
the space's crop/flip, one sub-policy drawn per image, and the batch ops (mixup, cutmix, sample
pairing) on the images and their one-hot or soft targets together. It means what the search
trained with (`children.tensor_aug.BatchedPipeline`, parity-tested against albumentations;
`children.batches.draw_mix`'s meaning for the batch ops), so a user who trains the final model
in plain PyTorch, Lightning or timm gets the policy that was searched, batch ops and schedules
included, without albumentations' per-image CPU path. The plain albumentations export
(`best_policy.json`) stays the way to augment single images without augsearch.

The batch's device is the only device: every draw comes from one generator there, the batch
ops included, and nothing is read back to the host while a batch is augmented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from spaces.errors import SpaceError
from spaces.policy import (
    BatchOps,
    Policy,
    policy_from_dict,
    policy_space,
    read_policy_file,
    scale_schedule,
    schedule_from_dict,
)
from spaces.schema import BaseAug, Space, load_space

__all__ = ["PolicyAugment", "load_augment", "mix_on_device"]

Schedule = Sequence[tuple[int, Policy]]


def load_augment(path: str | Path, *, space: Space | str | Path | None = None,
                 base: BaseAug | Mapping[str, Any] | None = None, image_size: int | None = None,
                 num_classes: int | None = None, seed: int = 0,
                 total_epochs: int | None = None) -> PolicyAugment:
    """A `PolicyAugment` for a policy file augsearch wrote.

    `path`: `best_policy.yaml` / `candidate_policy.yaml` / `merged_policy.yaml` (or their JSON
    form written by `spaces.policy.save_policy`), or a pbt `schedule.json`. A plain
    albumentations file (`best_policy.json`) is refused: it has lost the op names and the batch
    ops; pass the `.yaml` beside it. `space`: the space the policy was searched in (default: the
    `space.yaml` beside the file, else the space its provenance names); it gives the crop/flip,
    the image size and the number of classes, each of which `base` (a `BaseAug`, or a mapping
    of the keys to change), `image_size` and `num_classes` override. `total_epochs` stretches a
    schedule to a longer (or shorter) training, as `search.evaluate --epochs` does.
    Raises `SpaceError` (one line) for a file or policy it cannot use.
    """
    path = Path(path)
    data = read_policy_file(path)
    kind = data.get("format")
    if kind == "augsearch-policy":
        schedule, epochs = [(0, policy_from_dict(data, str(path)))], None
    elif kind == "augsearch-schedule":
        epochs, schedule = schedule_from_dict(data, str(path))
    elif "transform" in data and "__version__" in data:
        raise SpaceError(f"{path}: a plain albumentations pipeline (per image, without the op "
                         f"names and batch ops); pass augsearch's policy instead: "
                         f"{_sibling(path)}")
    else:
        raise SpaceError(f"{path}: not a policy file (expected format: augsearch-policy or "
                         f"augsearch-schedule); pass the best_policy.yaml or schedule.json a "
                         f"search wrote")
    found = _space(path, space)
    if found is None and (image_size is None or base is None):
        raise SpaceError(f"{path}: cannot tell which space this policy was searched in (no "
                         f"space.yaml beside it, no known space in its provenance); pass "
                         f"space=NAME|PATH, or base= and image_size=")
    return PolicyAugment(
        schedule, base=_base(found, base),
        image_size=image_size if image_size is not None else found.dataset.image_size,
        num_classes=(num_classes if num_classes is not None
                     else found.dataset.num_classes if found is not None else None),
        seed=seed, schedule_epochs=epochs, total_epochs=total_epochs, source=str(path))


def _sibling(path: Path) -> str:
    """Where the augsearch policy of an albumentations export lies, in words."""
    beside = path.with_suffix(".yaml")
    if beside.is_file():
        return str(beside)
    return "the best_policy.yaml (or schedule.json) the search wrote beside it"


def _space(path: Path, space: Space | str | Path | None) -> Space | None:
    if isinstance(space, Space):
        return space
    if space is not None:
        return load_space(space)
    return policy_space(path)


def _base(space: Space | None, base: BaseAug | Mapping[str, Any] | None) -> BaseAug:
    """The crop/flip: `base` itself, the space's with `base`'s keys changed, or the space's."""
    if isinstance(base, BaseAug):
        return base
    own = space.child.base_augmentation if space is not None else BaseAug()
    if base is None:
        return own
    return BaseAug(**{**own.model_dump(), **dict(base)})


class PolicyAugment(nn.Module):
    """A found policy (or a pbt schedule of policies) as a module that augments batches.

    `forward(x)` augments a uint8 or float N×C×H×W batch on its device and returns it with the
    same shape, dtype and device (float is read as values in [0, 1], as albumentations reads
    float images; a uint8 batch that the batch ops mix is rounded back to whole levels: give
    floats to keep the exact mixture). `forward(x, targets)` returns `(x, soft_targets)`:
    integer labels become one-hot rows (`num_classes`), N×K soft targets are taken as they are,
    and mixup and cutmix mix them with the images (sample pairing keeps each image's own); a
    policy with mixup or cutmix refuses `forward(x)` alone in training mode, since the labels
    would no longer match the images. Like dropout, it augments in training mode only; in eval
    mode the batch passes through.

    `set_epoch(e)` picks a schedule's policy of epoch e (entries starting at scaled epochs when
    `total_epochs` differs from the schedule's own `schedule_epochs`) and reseeds the draws from
    (seed, e), so an epoch's augmentation repeats whatever ran before it. Same seed, same epoch,
    same batches: same output. Give each data-parallel rank its own seed.
    """

    def __init__(self, policy: Policy | Schedule, *, base: BaseAug | None, image_size: int,
                 num_classes: int | None = None, seed: int = 0,
                 schedule_epochs: int | None = None, total_epochs: int | None = None,
                 source: str = "policy") -> None:
        super().__init__()
        entries = [(0, policy)] if isinstance(policy, Policy) else sorted(policy,
                                                                          key=lambda e: e[0])
        if not entries:
            raise ValueError(f"{source}: the schedule holds no policy")
        if total_epochs is not None and len(entries) > 1:
            if total_epochs < 1 or schedule_epochs is None or schedule_epochs < 1:
                raise ValueError(f"{source}: stretching a schedule needs total_epochs >= 1 and "
                                 f"the schedule's own schedule_epochs >= 1, got {total_epochs} "
                                 f"and {schedule_epochs}")
            entries = scale_schedule(entries, schedule_epochs, total_epochs)
        _refuse_missing(entries, source)
        self.source, self.seed, self.num_classes = source, int(seed), num_classes
        self.base, self.image_size = base, image_size
        self.schedule = tuple(entries)
        self._pipelines = [BatchedPipeline(p, base, image_size, ops=BATCHED) for _, p in entries]
        self._draws: dict[torch.device, Draws] = {}
        self.epoch, self._at = 0, 0
        self.set_epoch(0)

    @property
    def policy(self) -> Policy:
        """The policy applied now (the schedule's entry for the current epoch)."""
        return self.schedule[self._at][1]

    def set_epoch(self, epoch: int) -> None:
        """Use the policy of `epoch` and the draws seeded from (seed, epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self._at = max(k for k, (start, _) in enumerate(self.schedule)
                       if start <= epoch or k == 0)
        self._draws.clear()

    def draws(self, device: torch.device | str) -> Draws:
        """The random source for batches on `device` (one generator there, per epoch)."""
        device = torch.device(device)
        if device not in self._draws:
            state = np.random.SeedSequence((self.seed, self.epoch)).generate_state(1)[0]
            self._draws[device] = Draws(int(state), device)
        return self._draws[device]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        soft = None if targets is None else self._soft(targets, x)
        if self.training:
            batch = self.policy.batch
            if soft is None and (batch.mixup_alpha > 0 or batch.cutmix_alpha > 0):
                raise ValueError(f"{self.source}: this policy's mixup/cutmix mix the targets "
                                 f"with the images; call augment(x, targets) and train on the "
                                 f"soft targets it returns")
            draws = self.draws(x.device)
            x = self._pipelines[self._at](x, draws)
            x, soft = mix_on_device(x, soft, batch, draws)
        return x if soft is None else (x, soft)

    def _soft(self, targets: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Targets as float N×K rows on x's device: one-hot for integer labels."""
        if targets.device != x.device:
            raise ValueError(f"targets are on {targets.device} but the batch is on {x.device}; "
                             f"move them together")
        if targets.is_floating_point() and targets.ndim == 2 and len(targets) == len(x):
            return targets
        if targets.is_floating_point() or targets.ndim != 1 or len(targets) != len(x):
            raise ValueError(f"targets must be N integer labels or N×K soft targets for a batch "
                             f"of N={len(x)}, got {targets.dtype} of shape {tuple(targets.shape)}")
        if self.num_classes is None:
            raise ValueError(f"{self.source}: integer labels need num_classes (the space names "
                             f"none here); pass num_classes=K or soft N×K targets")
        if targets.device.type == "cpu" and len(targets) and not (
                0 <= int(targets.min()) and int(targets.max()) < self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got "
                             f"{int(targets.min())}..{int(targets.max())}")
        classes = torch.arange(self.num_classes, device=targets.device)
        return (targets.view(-1, 1) == classes).to(torch.float32)

    def extra_repr(self) -> str:
        base = self.base.model_dump() if self.base is not None else None
        starts = [start for start, _ in self.schedule]
        return (f"source={self.source!r}, base={base}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, seed={self.seed}, epoch={self.epoch}, "
                f"schedule_starts={starts}")


def _refuse_missing(entries: Schedule, source: str) -> None:
    """One line naming every op of the schedule without a batched kernel."""
    missing = sorted({o.name for _, p in entries for s in p.sub_policies for o in s.ops
                      if o.name not in BATCHED})
    if missing:
        raise SpaceError(f"{source}: op(s) {', '.join(missing)} have no batched kernel, so "
                         f"PolicyAugment cannot apply this policy to batches; use its "
                         f"albumentations export per image (without the batch ops)")


# ---------------------------------------------------------------- batch ops on the device


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
