"""`randaugment` (RandAugment, Cubuk et al. 2020): per image, N ops drawn uniformly with
replacement from the space's ops, each applied with probability p at one shared magnitude M, a
fraction of each op's declared range: level = low + M (high - low).

Searched: `n` (ops per image, whole numbers), `magnitude` (M) and `probability` (p), each a range
in `policy.randaugment`; a range [x, x] fixes that number (no dimension). Config keys: `ra_n`,
`ra_magnitude`, `ra_probability`.

Not here: RandAugment's magnitude noise (each application's M drawn around M with an SD). A
continuous normal magnitude has no exact form in plain albumentations, whose ops here take one
strength; a discretised one would need weighted levels in `spaces.drawn.Draw`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from spaces.drawn import MAX_N, Draw, DrawnOp
from spaces.families.base import Dim, Family, number, ranged, text
from spaces.fields import Strict, UnitRange, check_range, pair
from spaces.ops import get_op
from spaces.policy import Policy

if TYPE_CHECKING:
    from spaces.schema import Space

NAME = "randaugment"
KEYS = {"n": "ra_n", "magnitude": "ra_magnitude", "probability": "ra_probability"}


def _count_range(value: tuple[int, int]) -> tuple[int, int]:
    check_range(value[0], value[1], "", lo=1, hi=MAX_N)
    return value


# A searched whole-number range in [1, MAX_N]: ops drawn per image.
CountRange = Annotated[tuple[int, int], BeforeValidator(pair), AfterValidator(_count_range)]


class RandAugmentSpec(Strict):
    """`policy.randaugment`: the ranges N, M and p are searched in ([x, x]: fixed)."""

    n: CountRange = Field((1, 3), description="ops drawn per image, with replacement")
    magnitude: UnitRange = Field((0.0, 1.0), description="M: the shared magnitude, a fraction "
                                 "of each op's declared range")
    probability: UnitRange = Field((0.5, 1.0), description="p: each drawn op's probability")


class RandAugment(Family):
    name = NAME
    summary = "N ops per image drawn with replacement, at one magnitude M, probability p"
    settings_model = RandAugmentSpec

    def dimensions(self, space: Space) -> list[Dim]:
        s = self.settings(space)
        return [*ranged(KEYS["n"], s.n, integer=True),
                *ranged(KEYS["magnitude"], s.magnitude),
                *ranged(KEYS["probability"], s.probability)]

    def decode(self, space: Space, config: dict[str, Any]) -> Policy:
        s = self.settings(space)
        n = round(number(config, KEYS["n"], s.n))
        m = number(config, KEYS["magnitude"], s.magnitude)
        p = round(number(config, KEYS["probability"], s.probability), 6)
        ops = []
        for choice in space.policy.ops:
            low, high = choice.magnitude
            level = round(low + m * (high - low), 6) if get_op(choice.name).has_magnitude else 0.0
            ops.append(DrawnOp(choice.name, (level, level), p))
        return Policy(draw=Draw(tuple(ops), n=n))

    def describe(self, space: Space) -> str:
        s = self.settings(space)
        return (f"randaugment: N {text(s.n)} ops per image from the {len(space.policy.ops)} "
                f"ops, magnitude M {text(s.magnitude)} of each op's range, probability "
                f"{text(s.probability)}")
