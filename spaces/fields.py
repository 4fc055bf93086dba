"""Building blocks of the space's pydantic models, shared by `spaces.schema` and the policy
families' settings (`spaces.families`): strict frozen models and searched ranges whose errors
name the invariant in Optuna's style ("`0 <= low <= high <= 1` must hold, but got ...")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict


class Strict(BaseModel):
    """A section of a space: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_range(low: float, high: float, what: str, lo: float = 0.0, hi: float = 1.0) -> None:
    """Refuse a range outside [lo, hi] or with low > high, naming `what`."""
    if not lo <= low <= high <= hi:
        raise ValueError(
            f"`{lo:g} <= low <= high <= {hi:g}` must hold{f' for {what}' if what else ''}, "
            f"but got low={low:g}, "
            f"high={high:g}"
        )


def _unit_range(value: tuple[float, float]) -> tuple[float, float]:
    check_range(value[0], value[1], "")
    return value


def pair(value: Any) -> Any:
    """A range as YAML writes it, a list of two numbers; anything else says how to write one."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 2):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fix = f"write [{value:g}, {value:g}] for a fixed value or [low, high] to search it"
    else:
        fix = "write [low, high]"
    raise ValueError(f"a range is two numbers [low, high], got {value!r}; {fix}")


# A searched range inside [0, 1] (magnitudes, probabilities); errors carry the key path.
UnitRange = Annotated[tuple[float, float], BeforeValidator(pair), AfterValidator(_unit_range)]
# A batch op's searched range, or null (off).
OptionalRange = Annotated[tuple[float, float] | None, BeforeValidator(pair)]
