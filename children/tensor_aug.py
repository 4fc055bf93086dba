"""A policy's training augmentation on whole batches of N×C×H×W tensors, on the child's device.

`BatchedPipeline(policy, base, image_size)` means what `spaces.policy.build_pipeline` means: the
base pad-and-random-crop and horizontal flip, then one sub-policy picked uniformly per image whose
ops each apply with their probability, signed ops with a random sign, strengths from the op
table (`spaces.ops.OpDef.strength`). Every random choice is drawn per sample from `Draws`, so a
batch is one call however many policies' ops it mixes. The kernels in `children.tensor_ops`
reproduce albumentations' uint8 arithmetic; `BATCHED` lists the ops that have one. A policy with
an op outside it cannot run here: `choose_path` sends it to the per-image albumentations path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import torch

from children import tensor_ops as T
from spaces.ops import get_op

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import BaseAug

__all__ = ["AUTO", "BATCHED", "BatchedPipeline", "Draws", "PathChoice", "TensorOp", "choose_path"]

Path = Literal["batched", "albumentations"]

AUTO: Mapping[str, Path] = MappingProxyType({"cpu": "batched", "cuda": "batched"})
"""What `augmentation: auto` runs on each device type. CPU: batched, measured faster
(docs/BENCHMARKS.md: ~4x the augmentation images/s per core, and every child trained at least
as fast with less CPU per image). CUDA: batched, which takes augmentation off the trial's one
vCPU; not yet measured (the bench's GPU section) — revisit this entry when it is."""

_NOISE_STREAM = 0x5EED  # the device generator's seed offset from the host generator's


class Draws:
    """The random source of a batched pipeline: per-sample choices, and noise fields.

    Per-sample choices (sub-policy, probabilities, signs, crop offsets, flips, holes) come from a
    CPU generator, so they are the same on every device and need no device-to-host copy; noise
    fields come from a generator on the batch's device. Same seed, same device: same draws.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        self.host = torch.Generator().manual_seed(int(seed))
        self.device = (self.host if dev.type == "cpu"
                       else torch.Generator(dev).manual_seed(int(seed) + _NOISE_STREAM))

    def uniform(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.host, dtype=torch.float64, device="cpu")

    def integers(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.host, device="cpu")

    def normal(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.device, device=like.device, dtype=like.dtype)


Kernel = Callable[[torch.Tensor, float, torch.Tensor, Draws], torch.Tensor]


@dataclass(frozen=True)
class TensorOp:
    """One op on a batch: `apply(x, strength, signs, draws)` on the rows it fired for."""

    name: str
    apply: Kernel


def _unchanged(x: torch.Tensor, *_: object) -> torch.Tensor:
    return x


def _affine(which: str) -> Kernel:
    def apply(x: torch.Tensor, s: float, signs: torch.Tensor, _d: Draws) -> torch.Tensor:
        if s == 0.0:  # albumentations returns the image itself for an identity matrix
            return x
        h, w = x.shape[2:]
        grids = [T.affine_grid(h, w, *(sign * s if which == key else 0.0
                                       for key in ("rotate", "shear_x", "shear_y")), x.device)
                 for sign in (1.0, -1.0)]
        positive = (signs > 0).to(x.device).view(-1, 1, 1, 1)
        return T.sample(x, torch.where(positive, grids[0], grids[1]))

    return apply


def _translate(axis: int) -> Kernel:
    def apply(x: torch.Tensor, s: float, signs: torch.Tensor, _d: Draws) -> torch.Tensor:
        pixels = signs.long() * int(s * x.shape[axis])  # int(): albumentations truncates
        return T.translate(x, pixels, axis) if s > 0 else x

    return apply


def _jitter(kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Kernel:
    def apply(x: torch.Tensor, s: float, signs: torch.Tensor, _d: Draws) -> torch.Tensor:
        return kernel(x, 1.0 + signs * s)

    return apply


def _sharpness(x: torch.Tensor, s: float, _signs: torch.Tensor, _d: Draws) -> torch.Tensor:
    return T.sharpen(x, s) if s > 0 else x


def _posterize(x: torch.Tensor, s: float, _signs: torch.Tensor, _d: Draws) -> torch.Tensor:
    return T.posterize(x, int(s)) if s < 8 else x


def _solarize(x: torch.Tensor, s: float, _signs: torch.Tensor, _d: Draws) -> torch.Tensor:
    return T.solarize(x, s) if s < 1.0 else x


def _cutout(x: torch.Tensor, s: float, _signs: torch.Tensor, draws: Draws) -> torch.Tensor:
    if s == 0.0:
        return x
    n, _, h, w = x.shape
    hole_h, hole_w = T.cutout_size(s, h, w)
    top, left = draws.integers(h - hole_h + 1, n), draws.integers(w - hole_w + 1, n)
    return T.cutout(x, top, left, hole_h, hole_w)


def _noise(x: torch.Tensor, s: float, _signs: torch.Tensor, draws: Draws) -> torch.Tensor:
    if s == 0.0:
        return x
    return T.noise(x, draws.normal(x.shape, x) * (s * 255.0))


def _blur(x: torch.Tensor, s: float, _signs: torch.Tensor, _d: Draws) -> torch.Tensor:
    return T.blur(x, s) if s > 0 else x


_TABLE = [
    TensorOp("Identity", _unchanged),
    TensorOp("ShearX", _affine("shear_x")),
    TensorOp("ShearY", _affine("shear_y")),
    TensorOp("TranslateX", _translate(3)),
    TensorOp("TranslateY", _translate(2)),
    TensorOp("Rotate", _affine("rotate")),
    TensorOp("Brightness", _jitter(T.brightness)),
    TensorOp("Color", _jitter(T.saturation)),
    TensorOp("Contrast", _jitter(T.contrast)),
    TensorOp("Sharpness", _sharpness),
    TensorOp("Posterize", _posterize),
    TensorOp("Solarize", _solarize),
    TensorOp("AutoContrast", lambda x, *_: T.auto_contrast(x)),
    TensorOp("Equalize", lambda x, *_: T.equalize(x)),
    TensorOp("Invert", lambda x, *_: T.invert(x)),
    TensorOp("Cutout", _cutout),
    TensorOp("HorizontalFlip", lambda x, *_: x.flip(3)),
    TensorOp("VerticalFlip", lambda x, *_: x.flip(2)),
    TensorOp("GaussianNoise", _noise),
    TensorOp("GaussianBlur", _blur),
]

BATCHED: Mapping[str, TensorOp] = MappingProxyType({op.name: op for op in _TABLE})
"""The ops with a batched kernel at parity with albumentations (tests/children)."""


@dataclass(frozen=True)
class _Step:
    op: TensorOp
    strength: float
    probability: float


class BatchedPipeline:
    """`build_pipeline(policy, base, image_size)` on batches: uint8 or float N×C×H×W tensors.

    uint8 in, uint8 out; float input is read as albumentations reads float images (values in
    [0, 1]), quantised to 8 bits and returned as float in [0, 1]. `missing` names the policy's
    ops without a batched kernel; such a pipeline refuses to run.
    """

    def __init__(self, policy: Policy, base: BaseAug | None, image_size: int,
                 ops: Mapping[str, TensorOp] = BATCHED) -> None:
        self.crop = base.crop_padding if base is not None and base.crop else 0
        self.flip = bool(base is not None and base.flip)
        self.image_size = image_size
        self.missing = sorted({o.name for s in policy.sub_policies for o in s.ops
                               if o.name not in ops})
        self.subs = [] if self.missing else [
            [_Step(ops[o.name], get_op(o.name).strength(o.magnitude), o.probability)
             for o in s.ops] for s in policy.sub_policies if s.ops]

    def __call__(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        if self.missing:
            raise ValueError(f"ops {', '.join(self.missing)} have no batched kernel; run this "
                             f"policy through albumentations (children.tensor_aug.choose_path)")
        if x.ndim != 4 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected an N×C×{self.image_size}×{self.image_size} batch, got "
                             f"shape {tuple(x.shape)}")
        levels = self._crop_flip(_to_uint8(x), draws)  # a gather: 4x cheaper on bytes
        values = self._policy(levels.float(), draws)
        return _from_levels(values, x.dtype)

    def _crop_flip(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        n = len(x)
        if not self.crop and not self.flip:
            return x
        span = 2 * self.crop + 1
        still = torch.zeros(n, dtype=torch.long, device="cpu")
        dy = self.crop - draws.integers(span, n) if self.crop else still
        dx = self.crop - draws.integers(span, n) if self.crop else still
        flip = draws.uniform(n) < 0.5 if self.flip else None
        return T.shift(x, dy, dx, flip)

    def _policy(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Each sample's sub-policy, op by op: the j-th ops of all sub-policies run before any
        (j+1)-th, so every sample sees its own ops in order, one kernel call per (sub-policy,
        op) on the rows that picked it and whose probability fired."""
        if not self.subs:
            return x
        n, slots = len(x), max(len(steps) for steps in self.subs)
        choice = draws.integers(len(self.subs), n)
        fire = draws.uniform(n * slots).view(n, slots)
        signs = torch.where(draws.uniform(n * slots) < 0.5, 1.0, -1.0).double().view(n, slots)
        for j in range(slots):
            for k, steps in enumerate(self.subs):
                if j < len(steps):
                    rows = torch.nonzero((choice == k) & (fire[:, j] < steps[j].probability))
                    x = _apply(steps[j], x, rows.squeeze(1), signs[:, j], draws)
        return x


def _apply(step: _Step, x: torch.Tensor, rows: torch.Tensor, signs: torch.Tensor,
           draws: Draws) -> torch.Tensor:
    """`step` on `rows` of x (x is the pipeline's own tensor: written in place)."""
    if len(rows) == 0:
        return x
    if len(rows) == len(x):
        return step.op.apply(x, step.strength, signs, draws)
    on_device = rows.to(x.device)
    part = step.op.apply(x.index_select(0, on_device), step.strength, signs[rows], draws)
    return x.index_copy_(0, on_device, part)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"expected a uint8 or float batch, got {x.dtype}")
    return (x.float() * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def _from_levels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return x.to(torch.uint8)
    return (x / 255.0).to(dtype)


# ---------------------------------------------------------------- which path a policy takes


@dataclass(frozen=True)
class PathChoice:
    """The path a policy's batches take, and why when it is not the one asked for."""

    path: Path
    reason: str = ""


def choose_path(setting: str, device: torch.device | str, pipeline: BatchedPipeline | None
                ) -> PathChoice:
    """Resolve `child.augmentation` (auto, albumentations, batched) for a policy on `device`.

    `auto` takes `AUTO`'s path for the device type (batched where it is unknown). A policy with
    an op outside `BATCHED` falls back to albumentations, with the reason.
    """
    if setting not in ("auto", "albumentations", "batched"):
        raise ValueError(f"augmentation must be auto, albumentations or batched, got {setting!r}")
    wanted: Path = (AUTO.get(torch.device(device).type, "batched") if setting == "auto"
                    else setting)  # type: ignore[assignment]
    if wanted == "albumentations" or pipeline is None:
        return PathChoice("albumentations")
    if pipeline.missing:
        return PathChoice("albumentations", f"op(s) {', '.join(pipeline.missing)} have no "
                                            f"batched kernel at parity with albumentations")
    return PathChoice("batched")
