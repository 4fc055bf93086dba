"""Ops drawn per image: the compact policy form of RandAugment- and TrivialAugment-style families.

`Draw(ops, n, levels)`: for each image, `n` ops are drawn uniformly *with replacement* from
`ops` and applied in the order drawn, each with its own probability. An op's magnitude is fixed
(`DrawnOp.magnitude == (m, m)`) or a range (low, high): then each application takes one of
`levels` evenly spaced values from low to high, all equally likely (TrivialAugment's grid of
magnitude bins). RandAugment with N = 3 over 14 ops is 14 entries here, where sub-policies would
need all 2,744 ordered triples.

Both augmentation paths read this meaning from here: the albumentations pipeline
(`draw_transform`: `RandomOrder(ops, n, replace=True)`, a ranged op as a `OneOf` over its level
values) and the batched one (`children.tensor_aug`, from `Draw.magnitudes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spaces.errors import SpaceError
from spaces.ops import build_op, get_op

if TYPE_CHECKING:
    import albumentations as A

MAX_N = 16  # ops drawn per image
MAX_LEVELS = 256  # values a ranged magnitude takes


@dataclass(frozen=True)
class DrawnOp:
    """An op a `Draw` may draw: applied with `probability` at `magnitude`, a (low, high) pair in
    [0, 1]; low == high is a fixed magnitude, else one of the draw's levels per application."""

    name: str
    magnitude: tuple[float, float] = (0.0, 0.0)
    probability: float = 1.0

    @property
    def ranged(self) -> bool:
        """Whether the magnitude is drawn per application (an op without one never is)."""
        return self.magnitude[0] < self.magnitude[1] and get_op(self.name).has_magnitude


@dataclass(frozen=True)
class Draw:
    """`n` ops per image, drawn uniformly with replacement from `ops`, applied in the order
    drawn; a ranged magnitude is one of `levels` evenly spaced values, equally likely."""

    ops: tuple[DrawnOp, ...]
    n: int = 1
    levels: int = 1

    def __post_init__(self) -> None:
        if not self.ops:
            raise ValueError("a draw needs at least one op")
        if not 1 <= self.n <= MAX_N or not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"`1 <= n <= {MAX_N}` and `1 <= levels <= {MAX_LEVELS}` must hold, "
                             f"but got n={self.n}, levels={self.levels}")
        if self.levels < 2 and any(op.ranged for op in self.ops):
            raise ValueError(f"a ranged magnitude needs `levels >= 2`, but got "
                             f"levels={self.levels}; give levels or fixed magnitudes")

    def magnitudes(self, op: DrawnOp) -> tuple[float, ...]:
        """The magnitudes `op` takes, each equally likely: one when fixed, else `levels`."""
        low, high = op.magnitude
        if not op.ranged:
            return (low,)
        step = (high - low) / (self.levels - 1)
        return tuple(high if k == self.levels - 1 else low + k * step for k in range(self.levels))


def draw_text(draw: Draw, per_line: int = 3) -> list[str]:
    """`describe()`'s lines: the draw, then its ops, `per_line` to a line."""
    grid = f", ranged magnitudes uniform on {draw.levels} levels" if any(
        op.ranged for op in draw.ops) else ""
    texts = []
    for op in draw.ops:
        low, high = op.magnitude
        m = ("" if not get_op(op.name).has_magnitude else
             f"m={low:.2f}..{high:.2f}," if op.ranged else f"m={low:.2f},")
        texts.append(f"{op.name}({m}p={op.probability:.2f})")
    return [f"{draw.n} op(s) per image, drawn with replacement from {len(draw.ops)}{grid}:",
            *(", ".join(texts[k:k + per_line]) for k in range(0, len(texts), per_line))]


def draw_to_dict(draw: Draw) -> dict[str, Any]:
    """The dict form: a fixed magnitude as a number, a ranged one as [low, high]."""
    ops = [{"op": op.name,
            "magnitude": list(op.magnitude) if op.magnitude[0] != op.magnitude[1]
            else op.magnitude[0],
            "probability": op.probability} for op in draw.ops]
    return {"n": draw.n, "levels": draw.levels, "ops": ops}


def draw_params(draw: Draw) -> dict[str, Any]:
    """`flat_params`' entries for a draw: `draw.n`, `draw.op3.name`, ..."""
    out: dict[str, Any] = {"draw.n": draw.n, "draw.levels": draw.levels}
    for k, op in enumerate(draw.ops):
        out[f"draw.op{k}.name"] = op.name
        low, high = op.magnitude
        if low == high:
            out[f"draw.op{k}.magnitude"] = round(low, 4)
        else:
            out[f"draw.op{k}.magnitude_low"] = round(low, 4)
            out[f"draw.op{k}.magnitude_high"] = round(high, 4)
        out[f"draw.op{k}.probability"] = round(op.probability, 4)
    return out


def parse_draw(raw: Any, where: str) -> Draw:
    """The dict form read back; errors name `where` and the key path."""
    if not isinstance(raw, dict) or set(raw) - {"n", "levels", "ops"} or "ops" not in raw:
        raise SpaceError(f"{where}: expected a mapping with keys n, levels, ops")
    if not isinstance(raw["ops"], list) or not raw["ops"]:
        raise SpaceError(f"{where}.ops: expected a non-empty list of ops")
    ops = tuple(_parse_drawn_op(op, f"{where}.ops[{k}]") for k, op in enumerate(raw["ops"]))
    n, levels = raw.get("n", 1), raw.get("levels", 1)
    for key, value in (("n", n), ("levels", levels)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"{where}.{key}: expected a whole number, got {value!r}")
    try:
        return Draw(ops, n, levels)
    except ValueError as err:
        raise SpaceError(f"{where}: {err}") from None


def _parse_drawn_op(raw: Any, where: str) -> DrawnOp:
    if not isinstance(raw, dict) or "op" not in raw or set(raw) - {"op", "magnitude",
                                                                  "probability"}:
        raise SpaceError(f"{where}: expected a mapping with keys op, magnitude ([low, high] or "
                         f"one number), probability")
    value = raw.get("magnitude", 0.0)
    pair = value if isinstance(value, list) and len(value) == 2 else [value, value]
    try:
        name = get_op(str(raw["op"])).name
        low, high = (float(v) for v in pair)
        prob = float(raw.get("probability", 1.0))
        build_op(name, low, prob), build_op(name, high, prob)  # each value checked in [0, 1]
    except SpaceError as err:
        raise SpaceError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise SpaceError(f"{where}: {err}") from None
    if low > high:
        raise SpaceError(f"{where}: `low <= high` must hold for magnitude, but got low={low:g}, "
                         f"high={high:g}")
    return DrawnOp(name, (low, high), prob)


def draw_transform(draw: Draw, size: tuple[int, int] | None = None) -> A.BaseCompose:
    """The albumentations form: `RandomOrder(ops, n, replace=True)` draws `n` ops with
    replacement and applies them in the order drawn (`SomeOf` would sort them into list order),
    each with its own probability; a ranged op is a `OneOf` over its level values (each built
    at p=1: `OneOf` picks one uniformly and applies it), carrying the op's probability. `size`:
    the images' (height, width), for the ops that resize (`spaces.ops.OpDef.build`)."""
    import albumentations as A

    transforms = []
    for op in draw.ops:
        values = draw.magnitudes(op)
        if len(values) == 1:
            transforms.append(build_op(op.name, values[0], op.probability, size))
        else:
            transforms.append(A.OneOf([build_op(op.name, m, 1.0, size) for m in values],
                                      p=op.probability))
    return A.RandomOrder(transforms, n=draw.n, replace=True, p=1.0)
