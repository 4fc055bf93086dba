"""`trivialaugment` (TrivialAugment, Müller & Hutter 2021): per image one op drawn uniformly
from the space's ops, at a magnitude drawn uniformly from [0, C] of its declared range: one of
`levels` evenly spaced values from low to low + C (high - low), all equally likely (TrivialAugment
draws from 31 such bins; the batched path runs one kernel per distinct strength, so fewer levels
cost less there).

Searched: the ceiling C (`ceiling`, key `ta_ceiling`) and, when its range is not one point, the
ops' probability (`probability`, key `ta_probability`; TrivialAugment's own is 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from spaces.drawn import MAX_LEVELS, Draw, DrawnOp
from spaces.families.base import Dim, Family, number, ranged, text
from spaces.fields import Strict, UnitRange
from spaces.ops import get_op
from spaces.policy import Policy

if TYPE_CHECKING:
    from spaces.schema import Space

NAME = "trivialaugment"
KEYS = {"ceiling": "ta_ceiling", "probability": "ta_probability"}


class TrivialAugmentSpec(Strict):
    """`policy.trivialaugment`: the ranges C and p are searched in ([x, x]: fixed)."""

    ceiling: UnitRange = Field((0.1, 1.0), description="C: magnitudes are drawn uniformly from "
                               "[0, C] of each op's declared range")
    probability: UnitRange = Field((1.0, 1.0), description="each drawn op's probability")
    levels: int = Field(11, ge=2, le=MAX_LEVELS, description="evenly spaced magnitudes in "
                        "[0, C], equally likely (TrivialAugment: 31)")


class TrivialAugment(Family):
    name = NAME
    summary = "one op per image, at a magnitude drawn uniformly up to a ceiling C"
    settings_model = TrivialAugmentSpec

    def dimensions(self, space: Space) -> list[Dim]:
        s = self.settings(space)
        return [*ranged(KEYS["ceiling"], s.ceiling), *ranged(KEYS["probability"], s.probability)]

    def decode(self, space: Space, config: dict[str, Any]) -> Policy:
        s = self.settings(space)
        c = number(config, KEYS["ceiling"], s.ceiling)
        p = round(number(config, KEYS["probability"], s.probability), 6)
        ops = []
        for choice in space.policy.ops:
            low, high = choice.magnitude
            if not get_op(choice.name).has_magnitude:
                ops.append(DrawnOp(choice.name, (0.0, 0.0), p))
            else:
                ops.append(DrawnOp(choice.name, (low, round(low + c * (high - low), 6)), p))
        return Policy(draw=Draw(tuple(ops), n=1, levels=s.levels))

    def describe(self, space: Space) -> str:
        s = self.settings(space)
        return (f"trivialaugment: 1 op per image from the {len(space.policy.ops)} ops, magnitude "
                f"uniform on {s.levels} levels in [0, C] of each op's range, C "
                f"{text(s.ceiling)}, probability {text(s.probability)}")
