"""A found policy in your own training loop: augment N×C×H×W batches on their own device.

`load_augment("runs/c10/best_policy.yaml")` reads any policy file augsearch writes (a policy, a pbt
`schedule.json`, density matching's `merged_policy.yaml`) and returns `PolicyAugment`, a
`torch.nn.Module` that applies it to a uint8 or float batch where the batch lies, CPU or CUDA: the
space's crop/flip, one sub-policy drawn per image, and the batch ops (mixup, cutmix, sample pairing)
on the images and their one-hot or soft targets together. It means what the search trained with
(`children.tensor_aug.BatchedPipeline`, parity-tested against albumentations; for the batch ops the
training batches' own code, `children.batch_ops`), so a user who trains the final model in plain
PyTorch, Lightning or timm gets the policy that was searched, batch ops and schedules included,
without albumentations' per-image CPU path. The plain albumentations export (`best_policy.json`)
stays the way to augment single images without augsearch.

The batch's device is the only device: every augmentation draw comes from one generator there;
the batch ops' plan (a few numbers and index arrays, drawn on the host as the search's training
batches draw it) crosses to it in one transfer per batch; nothing is read back to the host while
a batch is augmented, but for one check of the first batch's values on an accelerator
(`PolicyAugment`'s docstring). Its `state_dict()` carries the seed, the epoch and the
generators' states, so a training resumed from a checkpoint draws the augmentations the
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from children.batch_ops import mix_on_device
from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from spaces.errors import SpaceError
from spaces.policy import (
    Policy,
    policy_from_dict,
    policy_space,
    read_policy_file,
    scale_schedule,
    schedule_from_dict,
)
from spaces.schema import BaseAug, Space, load_space

__all__ = ["PolicyAugment", "load_augment", "mix_on_device", "soft_labels"]

Schedule = Sequence[tuple[int, Policy]]
Stats = float | Sequence[float]  # a normalisation's mean or std: one value, or one per channel
HALF_LEVEL = 0.5 / 255  # a float batch's values may stray this far from [0, 1]: still levels


def load_augment(path: str | Path, *, space: Space | str | Path | None = None,
                 base: BaseAug | Mapping[str, Any] | None = None, image_size: int | None = None,
                 num_classes: int | None = None, seed: int = 0,
                 total_epochs: int | None = None, mean: Stats | None = None,
                 std: Stats | None = None) -> PolicyAugment:
    """A `PolicyAugment` for a policy file augsearch wrote.

    `path`: `best_policy.yaml` / `candidate_policy.yaml` / `merged_policy.yaml` (or their JSON
    form written by `spaces.policy.save_policy`), or a pbt `schedule.json`. A plain
    albumentations file (`best_policy.json`) is refused: it has lost the op names and the batch
    ops; pass the `.yaml` beside it. `space`: the space the policy was searched in (default: the
    `space.yaml` beside the file, else the space its provenance names); it gives the crop/flip,
    the image size and the number of classes, each of which `base` (a `BaseAug`, or a mapping
    of the keys to change), `image_size` and `num_classes` override. `total_epochs` stretches a
    schedule to a longer (or shorter) training, as `search.evaluate --epochs` does. `mean` and
    `std`: the normalisation of your float batches, if they are normalised (`PolicyAugment`).
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
        seed=seed, schedule_epochs=epochs, total_epochs=total_epochs, source=str(path),
        mean=mean, std=std)


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
    same shape, dtype and device. A float batch holds values in [0, 1], as albumentations reads
    float images; one normalised with a mean and std is refused, unless `mean` and `std` (one
    value, or one per channel) say so: it is then un-normalised, augmented and normalised again.
    The values are checked on every CPU batch; on an accelerator the first batch is checked
    (one host read for the module's lifetime, none per step), on `meta` none. A uint8 batch that
    the batch ops mix is rounded back to whole levels: give floats to keep the exact mixture.
    `forward(x, targets)` returns `(x, soft_targets)`: integer labels become one-hot rows
    (`num_classes`; `soft_labels`), N×K soft targets are taken as they are, and mixup and
    cutmix mix them with the images (sample pairing keeps each image's own); a policy with mixup
    or cutmix refuses `forward(x)` alone in training mode, since the labels would no longer
    match the images. Like dropout, it augments in training mode only; in eval mode the batch
    passes through.

    `set_epoch(e)` picks a schedule's policy of epoch e (entries starting at scaled epochs when
    `total_epochs` differs from the schedule's own `schedule_epochs`) and reseeds the draws from
    (seed, e), so an epoch's augmentation repeats whatever ran before it. Same seed, same epoch,
    same batches: same output. Give each data-parallel rank its own seed. `state_dict()` holds
    the seed, the epoch and each device's generator state: `load_state_dict` continues the
    draws where they stopped (until the next `set_epoch`).
    """

    def __init__(self, policy: Policy | Schedule, *, base: BaseAug | None, image_size: int,
                 num_classes: int | None = None, seed: int = 0,
                 schedule_epochs: int | None = None, total_epochs: int | None = None,
                 source: str = "policy", mean: Stats | None = None,
                 std: Stats | None = None) -> None:
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
        self.mean, self.std = _normalisation(mean, std, source)
        self.schedule = tuple(entries)
        self._pipelines = [BatchedPipeline(p, base, image_size, ops=BATCHED) for _, p in entries]
        self._streams: dict[torch.device, tuple[Draws, np.random.Generator]] = {}
        self._saved: dict[str, tuple[Any, Any]] = {}  # generator states loaded, not yet used
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._first_checked = False  # an accelerator's first batch was checked
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
        self._streams.clear()
        self._saved.clear()

    def draws(self, device: torch.device | str) -> Draws:
        """The random source of the pipeline for batches on `device` (one generator there, per
        epoch)."""
        return self._stream(device)[0]

    def mixes(self, device: torch.device | str) -> np.random.Generator:
        """The random source of the batch ops for batches on `device` (host draws, one plan
        moved per batch: `children.batch_ops`), per epoch."""
        return self._stream(device)[1]

    def _stream(self, device: torch.device | str) -> tuple[Draws, np.random.Generator]:
        device = torch.device(device)
        if device not in self._streams:
            seeds = np.random.SeedSequence((self.seed, self.epoch)).generate_state(2)
            draws, mixes = Draws(int(seeds[0]), device), np.random.default_rng(int(seeds[1]))
            saved, mix = self._saved_state(draws.device)
            if saved is not None and draws.generator is not None:
                draws.generator.set_state(saved)
            if mix is not None:
                mixes.bit_generator.state = mix
            self._streams[device] = (draws, mixes)
        return self._streams[device]

    def get_extra_state(self) -> dict[str, Any]:
        """The seed, the epoch and each device's generator states (`state_dict()`'s entry)."""
        states = {k: v for k, (v, _) in self._saved.items() if v is not None}
        mixes = {k: m for k, (_, m) in self._saved.items() if m is not None}
        for draws, rng in self._streams.values():
            if draws.generator is not None:
                states[str(draws.device)] = draws.generator.get_state()
            mixes[str(draws.device)] = rng.bit_generator.state
        return {"version": 2, "seed": self.seed, "epoch": self.epoch, "generators": states,
                "mixes": mixes}

    def set_extra_state(self, state: Any) -> None:
        """Continue from `get_extra_state()`'s: its seed and epoch, and each device's draws
        where they stopped (restored when a batch on that device first needs them; a version 1
        state, without the batch ops' generators, restarts those at the epoch's seed)."""
        try:
            seed, epoch = int(state["seed"]), int(state["epoch"])
            states = {str(k): v.detach().to("cpu", torch.uint8)
                      for k, v in state["generators"].items()}
            mixes = {str(k): dict(v) for k, v in state.get("mixes", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{self.source}: not a PolicyAugment state (expected seed, epoch "
                             f"and generators); load the state_dict() of a PolicyAugment"
                             ) from None
        self.seed = seed
        self.set_epoch(epoch)
        self._saved = {k: (states.get(k), mixes.get(k)) for k in {*states, *mixes}}

    def _saved_state(self, device: torch.device) -> tuple[torch.Tensor | None, Any]:
        """Loaded generator states for `device`: its own, or the only ones of its type (a
        checkpoint of cuda:1 loaded on cuda:0)."""
        key = str(device)
        if key not in self._saved:
            same = [k for k in self._saved if torch.device(k).type == device.type]
            key = same[0] if len(same) == 1 else key
        return self._saved.pop(key, (None, None))

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
            unit = self._pipelines[self._at](self._unit(x), self.draws(x.device))
            unit, soft = mix_on_device(unit, soft, batch, self.mixes(x.device))
            x = self._normalised(unit) if x.is_floating_point() else unit
        return x if soft is None else (x, soft)

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch as values in [0, 1] (un-normalised when `mean` and `std` are given),
        checked on every CPU batch and an accelerator's first; a uint8 batch as it is."""
        first, self._first_checked = not self._first_checked, True
        if not x.is_floating_point():
            return x
        if self.mean is not None:
            mean, std = self._device_stats(x)
            x = x * std + mean
        if x.device.type == "cpu" or (first and x.device.type != "meta"):
            _check_unit(x, self.source, self.mean is not None)
        return x

    def _normalised(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        mean, std = self._device_stats(x)
        return (x - mean) / std

    def _device_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`mean` and `std` as 1×C×1×1 tensors in x's dtype on x's device (moved there once)."""
        if len(self.mean) not in (1, x.shape[1]):
            raise ValueError(f"{self.source}: mean and std have {len(self.mean)} values but the "
                             f"batch has {x.shape[1]} channels; give one value per channel")
        if x.device not in self._stats:
            self._stats[x.device] = (torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1),
                                     torch.tensor(self.std, device=x.device).view(1, -1, 1, 1))
        mean, std = self._stats[x.device]
        return mean.to(x.dtype), std.to(x.dtype)

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
        return soft_labels(targets, self.num_classes)

    def extra_repr(self) -> str:
        base = self.base.model_dump() if self.base is not None else None
        starts = [start for start, _ in self.schedule]
        norm = "" if self.mean is None else f", mean={self.mean}, std={self.std}"
        return (f"source={self.source!r}, base={base}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, seed={self.seed}, epoch={self.epoch}, "
                f"schedule_starts={starts}{norm}")


def soft_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels as float32 one-hot rows on their device; a label outside
    [0, num_classes) becomes a row of NaN, so the loss on it is NaN at once instead of training
    on an all-zero target. No host read: on an accelerator this is the whole label check."""
    classes = torch.arange(num_classes, device=labels.device)
    rows = (labels.view(-1, 1) == classes).to(torch.float32)
    outside = (labels < 0) | (labels >= num_classes)
    return torch.where(outside.view(-1, 1), torch.nan, rows)


def _check_unit(x: torch.Tensor, source: str, normalised: bool) -> None:
    """Refuse a float batch whose values are not levels in [0, 1] (one host read)."""
    if not x.numel():
        return
    low, high = torch.stack(torch.aminmax(x)).float().tolist()
    if low >= -HALF_LEVEL and high <= 1 + HALF_LEVEL:  # NaN fails both
        return
    if normalised:
        raise ValueError(f"{source}: the float batch un-normalised with the mean and std given "
                         f"holds values in [{low:.3g}, {high:.3g}], not [0, 1]; pass the mean "
                         f"and std the batch was normalised with")
    raise ValueError(f"{source}: a float batch must hold values in [0, 1], got values in "
                     f"[{low:.3g}, {high:.3g}] (a normalised batch?); augment before "
                     f"normalising, or pass mean= and std= of the normalisation so the batch "
                     f"is un-normalised, augmented and normalised again")


def _normalisation(mean: Stats | None, std: Stats | None, source: str
                   ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """`mean` and `std` as tuples of floats, checked: both or neither, as many values each,
    finite, every std above 0."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError(f"{source}: mean and std go together (the normalisation of the float "
                         f"batches); pass both or neither")
    try:
        values = [tuple(float(v) for v in np.asarray(s, dtype=float).reshape(-1))
                  for s in (mean, std)]
    except (TypeError, ValueError):
        values = [(), ()]
    if not values[0] or len(values[0]) != len(values[1]) or min(values[1]) <= 0 or \
            not np.isfinite(values[0] + values[1]).all():
        raise ValueError(f"{source}: mean and std must hold as many finite values each (one, "
                         f"or one per channel), every std above 0; got mean={mean}, std={std}")
    return values[0], values[1]


def _refuse_missing(entries: Schedule, source: str) -> None:
    """One line naming every op of the schedule without a batched kernel."""
    missing = sorted({name for _, p in entries for name in p.op_names() if name not in BATCHED})
    if missing:
        raise SpaceError(f"{source}: op(s) {', '.join(missing)} have no batched kernel, so "
                         f"PolicyAugment cannot apply this policy to batches; use its "
                         f"albumentations export per image (without the batch ops)")
