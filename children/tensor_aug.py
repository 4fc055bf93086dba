"""A policy's training augmentation on whole batches of N×C×H×W tensors, on the child's device.

`BatchedPipeline(policy, base, image_size)` means what `spaces.policy.build_pipeline` means: the
base pad-and-random-crop and horizontal flip, then one sub-policy picked uniformly per image whose
ops each apply with their probability, or the policy's ops drawn per image (`spaces.drawn.Draw`,
run by `children.tensor_draw`), signed ops with a random sign, strengths from the op table
(`spaces.ops.OpDef.strength`). Every random choice is drawn per sample from `Draws`, so a batch
is one call however many policies' ops it mixes. The kernels in `children.tensor_ops`
reproduce albumentations' uint8 arithmetic; `BATCHED` lists the ops that have one. A policy with
an op outside it cannot run here: `choose_path` sends it to the per-image albumentations path.

The batch's device is the only device: the draws come from one generator there, each op's
per-sample parameters are drawn for the whole batch, and on an accelerator each (sub-policy, op)
runs on the whole batch and is kept where it fired (`torch.where`), so nothing waits for the
host. On the CPU the same draws pick the rows that fired and only those are computed (cheaper,
the same images).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import torch

from children import tensor_crop
from children import tensor_ops as T
from children.tensor_draw import DrawnRounds
from children.tensor_draw import Step as _Step
from spaces.ops import get_op

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import BaseAug

__all__ = ["AUTO", "BATCHED", "BatchedPipeline", "Draws", "PathChoice", "TensorOp", "choose_path"]

Path = Literal["batched", "albumentations"]

AUTO: Mapping[str, Path] = MappingProxyType({"cpu": "batched", "cuda": "batched"})
"""What `augmentation: auto` runs on each device type. CPU: batched, for its CPU time
(docs/BENCHMARKS.md): augmentation alone made 3.8x the albumentations path's images/s on one
thread ("Augmentation throughput"); a whole child epoch with a policy took 0.84x to 0.91x the
CPU time per image, while its wall-clock images/s ranged from 0.92x to 1.04x the albumentations
path's, within the runs' 17% spread: not shown faster per trial ("Child throughput"). CUDA:
batched, which takes augmentation off the trial's one vCPU; not yet measured (the bench's GPU
section) — revisit this entry when it is."""


class Draws:
    """The random source of a batched pipeline: one generator on the batch's device.

    Every draw (sub-policy, probabilities, signs, crop offsets, flips, holes, noise fields) is
    made on `device` from it, so nothing crosses to or from the host: a CPU generator for CPU
    batches, a CUDA generator for CUDA ones. On `meta` (shapes without data, for tests) there is
    no generator: torch cannot make one there. Same seed, same device: same draws.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.device = _indexed(torch.device(device))
        self.generator = (None if self.device.type == "meta"
                          else torch.Generator(self.device).manual_seed(int(seed)))

    def uniform(self, n: int) -> torch.Tensor:
        """n float32 values in [0, 1)."""
        return torch.rand(n, generator=self.generator, device=self.device)

    def integers(self, high: int, n: int) -> torch.Tensor:
        """n int64 values in [0, high)."""
        return torch.randint(high, (n,), generator=self.generator, device=self.device)

    def normal(self, shape: Sequence[int], like: torch.Tensor | None = None) -> torch.Tensor:
        """A standard normal field of `shape` (float32, or `like`'s dtype)."""
        dtype = torch.float32 if like is None else like.dtype
        return torch.randn(tuple(shape), generator=self.generator, device=self.device,
                           dtype=dtype)


def _indexed(device: torch.device) -> torch.device:
    """`cuda` as the `cuda:k` a tensor made there reports."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


Params = tuple[torch.Tensor, ...]
Kernel = Callable[[torch.Tensor, float, torch.Tensor, Params], torch.Tensor]
Sampler = Callable[[Draws, Sequence[int], float], Params]


def _nothing(_draws: Draws, _shape: Sequence[int], _s: float) -> Params:
    return ()


@dataclass(frozen=True)
class TensorOp:
    """One op on a batch: `kernel(x, strength, signs, params)`, where `params` are the op's own
    per-sample draws, made for the whole batch by `draw(draws, x.shape, strength)` (a hole's
    corner, a noise field; none for most ops). Every parameter has the batch's rows along its
    first dimension, so a subset of rows takes the same rows of each. `shared`: the draw is the
    same at every strength above 0 (a noise field), so one drawn op's strengths, which no row
    takes two of in a round, share one (`children.tensor_draw`)."""

    name: str
    kernel: Kernel
    draw: Sampler = _nothing
    shared: bool = False

    def apply(self, x: torch.Tensor, strength: float, signs: torch.Tensor,
              draws: Draws) -> torch.Tensor:
        """The op on every row of x, its parameters drawn from `draws`."""
        return self.kernel(x, strength, signs, self.draw(draws, x.shape, strength))


def _unchanged(x: torch.Tensor, *_: object) -> torch.Tensor:
    return x


def _affine(which: str) -> Kernel:
    def kernel(x: torch.Tensor, s: float, signs: torch.Tensor, _p: Params) -> torch.Tensor:
        if s == 0.0:  # albumentations returns the image itself for an identity matrix
            return x
        h, w = x.shape[2:]
        grids = [T.affine_grid(h, w, *(sign * s if which == key else 0.0
                                       for key in ("rotate", "shear_x", "shear_y")), x.device)
                 for sign in (1.0, -1.0)]  # cached per strength and device
        positive = (signs > 0).view(-1, 1, 1, 1)
        return T.sample(x, torch.where(positive, grids[0], grids[1]))

    return kernel


def _translate(axis: int) -> Kernel:
    def kernel(x: torch.Tensor, s: float, signs: torch.Tensor, _p: Params) -> torch.Tensor:
        pixels = signs.long() * int(s * x.shape[axis])  # int(): albumentations truncates
        return T.translate(x, pixels, axis) if s > 0 else x

    return kernel


def _factor(signs: torch.Tensor, s: float, complement: bool = False) -> torch.Tensor:
    """Per sample, float32: 1 + s where the sign is positive, else 1 - s, each rounded once from
    its float64 value as albumentations rounds it (or 1 minus that float64 factor)."""
    up, down = 1.0 + s, 1.0 - s
    if complement:
        up, down = 1.0 - up, 1.0 - down
    return torch.where(signs > 0, up, down)


def _brightness(x: torch.Tensor, s: float, signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.brightness(x, _factor(signs, s))


def _color(x: torch.Tensor, s: float, signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.saturation(x, _factor(signs, s), _factor(signs, s, complement=True))


def _contrast(x: torch.Tensor, s: float, signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.contrast(x, 1.0 + signs.double() * s)  # N float64 values: see T.contrast


def _sharpness(x: torch.Tensor, s: float, _signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.sharpen(x, s) if s > 0 else x


def _posterize(x: torch.Tensor, s: float, _signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.posterize(x, int(s)) if s < 8 else x


def _solarize(x: torch.Tensor, s: float, _signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.solarize(x, s) if s < 1.0 else x


def _hole(draws: Draws, shape: Sequence[int], s: float) -> Params:
    """Cutout's top-left corner per sample (row, then column)."""
    if s == 0.0:
        return ()
    n, _, h, w = shape
    hole_h, hole_w = T.cutout_size(s, h, w)
    return draws.integers(h - hole_h + 1, n), draws.integers(w - hole_w + 1, n)


def _cutout(x: torch.Tensor, s: float, _signs: torch.Tensor, p: Params) -> torch.Tensor:
    if s == 0.0:
        return x
    return T.cutout(x, p[0], p[1], *T.cutout_size(s, *x.shape[2:]))


def _field(draws: Draws, shape: Sequence[int], s: float) -> Params:
    """GaussianNoise's standard normal field, N×C×H×W."""
    return () if s == 0.0 else (draws.normal(shape),)


def _noise(x: torch.Tensor, s: float, _signs: torch.Tensor, p: Params) -> torch.Tensor:
    if s == 0.0:
        return x
    return T.noise(x, p[0] * (s * 255.0))


def _blur(x: torch.Tensor, s: float, _signs: torch.Tensor, _p: Params) -> torch.Tensor:
    return T.blur(x, s) if s > 0 else x


_TABLE = [
    TensorOp("Identity", _unchanged),
    TensorOp("ShearX", _affine("shear_x")),
    TensorOp("ShearY", _affine("shear_y")),
    TensorOp("TranslateX", _translate(3)),
    TensorOp("TranslateY", _translate(2)),
    TensorOp("Rotate", _affine("rotate")),
    TensorOp("Brightness", _brightness),
    TensorOp("Color", _color),
    TensorOp("Contrast", _contrast),
    TensorOp("Sharpness", _sharpness),
    TensorOp("Posterize", _posterize),
    TensorOp("Solarize", _solarize),
    TensorOp("AutoContrast", lambda x, *_: T.auto_contrast(x)),
    TensorOp("Equalize", lambda x, *_: T.equalize(x)),
    TensorOp("Invert", lambda x, *_: T.invert(x)),
    TensorOp("Cutout", _cutout, _hole),
    TensorOp("HorizontalFlip", lambda x, *_: x.flip(3)),
    TensorOp("VerticalFlip", lambda x, *_: x.flip(2)),
    TensorOp("GaussianNoise", _noise, _field, shared=True),
    TensorOp("GaussianBlur", _blur),
    TensorOp("RandomResizedCrop", tensor_crop.kernel, tensor_crop.draw),
]

BATCHED: Mapping[str, TensorOp] = MappingProxyType({op.name: op for op in _TABLE})
"""The ops with a batched kernel at parity with albumentations (tests/children)."""


class BatchedPipeline:
    """`build_pipeline(policy, base, image_size)` on batches: uint8 or float N×C×H×W tensors.

    uint8 in, uint8 out; float input is read as albumentations reads float images (values in
    [0, 1]), quantised to 8 bits and returned as float in [0, 1]. `missing` names the policy's
    ops without a batched kernel; such a pipeline refuses to run. `masked` chooses how an op
    reaches the rows it fired for: computed on every row and kept where it fired (True: nothing
    for the host to wait on), or computed on those rows only (False: cheaper, but their index is
    read on the host). Both consume the same draws and give the same images; the default (None)
    masks on every device but the CPU.
    """

    def __init__(self, policy: Policy, base: BaseAug | None, image_size: int,
                 ops: Mapping[str, TensorOp] = BATCHED, masked: bool | None = None) -> None:
        self.crop = base.crop_padding if base is not None and base.crop else 0
        self.flip = bool(base is not None and base.flip)
        self.image_size = image_size
        self.masked = masked
        self.missing = sorted(name for name in policy.op_names() if name not in ops)
        self.subs = [] if self.missing else [
            [_Step(ops[o.name], get_op(o.name).strength(o.magnitude), o.probability)
             for o in s.ops] for s in policy.sub_policies if s.ops]
        self.drawn = (None if self.missing or policy.draw is None
                      else DrawnRounds(policy.draw, ops))

    def __call__(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        if self.missing:
            raise ValueError(f"ops {', '.join(self.missing)} have no batched kernel; run this "
                             f"policy through albumentations (children.tensor_aug.choose_path)")
        if x.ndim != 4 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected an N×C×{self.image_size}×{self.image_size} batch, got "
                             f"shape {tuple(x.shape)}")
        if draws.device != x.device:
            raise ValueError(f"the draws are made on {draws.device} but the batch is on "
                             f"{x.device}; make them with Draws(seed, batch.device)")
        levels = self._crop_flip(_to_uint8(x), draws)  # a gather: 4x cheaper on bytes
        values = self._policy(levels.float(), draws)
        return _from_levels(values, x.dtype)

    def _crop_flip(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        n = len(x)
        if not self.crop and not self.flip:
            return x
        span = 2 * self.crop + 1
        still = torch.zeros(n, dtype=torch.long, device=x.device)
        dy = self.crop - draws.integers(span, n) if self.crop else still
        dx = self.crop - draws.integers(span, n) if self.crop else still
        flip = draws.uniform(n) < 0.5 if self.flip else None
        return T.shift(x, dy, dx, flip)

    def _policy(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Each sample's sub-policy, op by op: the j-th ops of all sub-policies run before any
        (j+1)-th, so every sample sees its own ops in order, one kernel call per (sub-policy,
        op), kept on the rows that picked it and whose probability fired. A policy of ops drawn
        per image runs its rounds instead (`children.tensor_draw.DrawnRounds`)."""
        masked = self.masked if self.masked is not None else x.device.type != "cpu"
        apply = _masked if masked else _rows
        if self.drawn is not None:
            return self.drawn(x, draws, apply, masked)
        if not self.subs:
            return x
        n, slots = len(x), max(len(steps) for steps in self.subs)
        choice = draws.integers(len(self.subs), n)
        fire = draws.uniform(n * slots).view(n, slots)
        signs = torch.where(draws.uniform(n * slots) < 0.5, 1.0, -1.0).view(n, slots)
        for j in range(slots):
            for k, steps in enumerate(self.subs):
                if j < len(steps):
                    step = steps[j]
                    params = step.op.draw(draws, x.shape, step.strength)  # for every row
                    on = (choice == k) & (fire[:, j] < step.probability)
                    x = apply(step, x, on, signs[:, j], params)
        return x


def _masked(step: _Step, x: torch.Tensor, on: torch.Tensor, signs: torch.Tensor,
            params: Params) -> torch.Tensor:
    """`step` on every row of x, kept on the rows `on` (a boolean N mask)."""
    out = step.op.kernel(x, step.strength, signs, params)
    return x if out is x else torch.where(on.view(-1, 1, 1, 1), out, x)


def _rows(step: _Step, x: torch.Tensor, on: torch.Tensor, signs: torch.Tensor,
          params: Params) -> torch.Tensor:
    """`step` on the rows `on` of x only, with those rows of its signs and parameters (x is the
    pipeline's own tensor: written in place). Reads the rows' index on the host: CPU only."""
    rows = torch.nonzero(on).squeeze(1)
    if len(rows) == 0:
        return x
    if len(rows) == len(x):
        return step.op.kernel(x, step.strength, signs, params)
    part = step.op.kernel(x.index_select(0, rows), step.strength, signs.index_select(0, rows),
                          tuple(p.index_select(0, rows) for p in params))
    return x.index_copy_(0, rows, part)


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
