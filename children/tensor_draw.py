"""Ops drawn per image (`spaces.drawn.Draw`: RandAugment, TrivialAugment) on whole batches.

`build_pipeline`'s `RandomOrder(ops, n, replace=True)` on batches: `n` rounds; in each, every
sample draws one op uniformly, whether it fires (its probability), a sign and, for a ranged
magnitude, one of the draw's levels, all from the pipeline's `Draws` on the batch's device. Each
(op, strength) then runs over the batch, kept on the rows that drew it (`BatchedPipeline`'s
masked or row-subset application): off the CPU every one, a fixed sequence of kernel calls with
nothing waiting for the host; on the CPU only those some row drew. Both make the same draws and
give the same images. Neighbouring levels of one strength (Posterize's rounded bits) are one
call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from spaces.ops import get_op

if TYPE_CHECKING:
    from children.tensor_aug import Draws, TensorOp
    from spaces.drawn import Draw


@dataclass(frozen=True)
class Step:
    """An op at one strength, applied with a probability."""

    op: TensorOp
    strength: float
    probability: float


@dataclass(frozen=True)
class Variant:
    """A drawn op at one strength: its index in the draw and the levels (first, last) giving
    that strength."""

    step: Step
    index: int
    levels: tuple[int, int]


def variants(draw: Draw, ops: Mapping[str, TensorOp]) -> list[Variant]:
    """Each drawn op at each strength its levels give: one kernel call per distinct strength."""
    out = []
    for k, drawn in enumerate(draw.ops):
        strengths = [get_op(drawn.name).strength(m) for m in draw.magnitudes(drawn)]
        first = 0
        for i, strength in enumerate(strengths):
            if i + 1 == len(strengths) or strengths[i + 1] != strength:
                last = i if len(strengths) > 1 else draw.levels - 1  # fixed: every level
                out.append(Variant(Step(ops[drawn.name], strength, drawn.probability), k,
                                   (first, last)))
                first = i + 1
    return out


Apply = Callable[[Step, torch.Tensor, torch.Tensor, torch.Tensor, tuple], torch.Tensor]


class DrawnRounds:
    """A draw's rounds on batches: per round and sample, the variant it drew (-1: none fired)
    looked up in a (op, level) table kept on each device the pipeline meets (made there once)."""

    def __init__(self, draw: Draw, ops: Mapping[str, TensorOp]) -> None:
        self.draw = draw
        self.variants = variants(draw, ops)
        self.table = [[0] * draw.levels for _ in draw.ops]  # (op, level) -> variant
        for j, v in enumerate(self.variants):
            for level in range(v.levels[0], v.levels[1] + 1):
                self.table[v.index][level] = j
        self.probabilities = [op.probability for op in draw.ops]
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (torch.tensor(self.table, device=device),
                                torch.tensor(self.probabilities, device=device))
        return self._on[device]

    def __call__(self, x: torch.Tensor, draws: Draws, apply: Apply,
                 masked: bool) -> torch.Tensor:
        """`draw.n` rounds over the batch `x` (levels 0..255, float). Masked, every variant runs
        on every row; else only the variants some row drew (one host read per round: CPU)."""
        draw, n = self.draw, len(x)
        table, probabilities = self._tables(x.device)
        for _ in range(draw.n):
            choice = draws.integers(len(draw.ops), n)
            fire = draws.uniform(n) < probabilities[choice]
            signs = torch.where(draws.uniform(n) < 0.5, 1.0, -1.0)
            level = draws.integers(draw.levels, n) if draw.levels > 1 else 0
            drawn = torch.where(fire, table[choice, level], -1)
            present = None if masked else set(drawn.tolist())
            shared: dict[int, tuple] = {}  # per op, a draw its strengths share (noise)
            for j, v in enumerate(self.variants):
                params = self._params(v, draws, x.shape, shared)  # for every row
                if present is None or j in present:
                    x = apply(v.step, x, drawn == j, signs, params)
        return x

    @staticmethod
    def _params(v: Variant, draws: Draws, shape: torch.Size, shared: dict[int, tuple]) -> tuple:
        """The variant's per-sample draws: its own, or its op's shared one."""
        op, strength = v.step.op, v.step.strength
        if not op.shared or strength == 0.0:
            return op.draw(draws, shape, strength)
        if v.index not in shared:
            shared[v.index] = op.draw(draws, shape, strength)
        return shared[v.index]
