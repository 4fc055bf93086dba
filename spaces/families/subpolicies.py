"""`subpolicies`, the default family (AutoAugment, DeepAugment): S sub-policies of K ops, each
op's name, magnitude and probability searched; one sub-policy is picked per image.

The shape is `policy.sub_policies` x `policy.ops_per_sub_policy`; probabilities are searched in
`policy.probability` with `policy.search_probability`, else fixed at its high end. Define-by-run,
each slot's magnitude is conditional on its op (`sp0_op1_Rotate_mag`, in the op's own range);
the flat dimensions PBT perturbs hold a level in [0, 1] per slot (`sp0_op1_mag`) that `decode`
rescales into the chosen op's range, so no value is ever clamped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.families.base import Dim, Family
from spaces.ops import get_op
from spaces.policy import Op, Policy, SubPolicy

if TYPE_CHECKING:
    import optuna

    from spaces.schema import Space

NAME = "subpolicies"


def slot(i: int, j: int) -> str:
    """The config key of sub-policy i's op j."""
    return f"sp{i}_op{j}"


def slots(space: Space) -> list[tuple[int, int]]:
    p = space.policy
    return [(i, j) for i in range(p.sub_policies) for j in range(p.ops_per_sub_policy)]


def bounds(space: Space) -> dict[str, tuple[float, float]]:
    """Each op's declared magnitude range, by name."""
    return {o.name: o.magnitude for o in space.policy.ops}


class SubPolicies(Family):
    name = NAME
    summary = "S sub-policies x K ops, every op, magnitude and probability searched"

    def suggest(self, space: Space, trial: optuna.Trial) -> None:
        """Op per slot, then that op's magnitude (conditional), then the slot's probability."""
        policy = space.policy
        names = [o.name for o in policy.ops]
        ranges = bounds(space)
        for i, j in slots(space):
            key = slot(i, j)
            name = trial.suggest_categorical(key, names)
            if get_op(name).has_magnitude:
                trial.suggest_float(f"{key}_{name}_mag", *ranges[name])
            if policy.search_probability:
                trial.suggest_float(f"{key}_prob", *policy.probability)

    def dimensions(self, space: Space) -> list[Dim]:
        """Op per slot, a magnitude level in [0, 1] per slot that `decode` rescales into the
        chosen op's range, and the slot's probability."""
        names = tuple(o.name for o in space.policy.ops)
        plow, phigh = space.policy.probability
        dims: list[Dim] = []
        for i, j in slots(space):
            key = slot(i, j)
            dims.append(Dim(key, choices=names))
            dims.append(Dim(f"{key}_mag"))
            if space.policy.search_probability:
                dims.append(Dim(f"{key}_prob", low=plow, high=phigh))
        return dims

    def count_dimensions(self, space: Space) -> int:
        """At their most: every slot holding a magnitude op."""
        return len(slots(space)) * (2 + int(space.policy.search_probability))

    def decode(self, space: Space, config: dict[str, Any]) -> Policy:
        ranges = bounds(space)
        fixed_p = space.policy.probability[1]
        subs = []
        for i in range(space.policy.sub_policies):
            ops = []
            for j in range(space.policy.ops_per_sub_policy):
                key = slot(i, j)
                name = str(config[key])
                low, high = ranges[name]
                magnitude = _magnitude(config, key, name, low, high)
                prob = min(max(float(config.get(f"{key}_prob", fixed_p)), 0.0), 1.0)
                ops.append(Op(name, round(magnitude, 6), round(prob, 6)))
            subs.append(SubPolicy(tuple(ops)))
        return Policy(tuple(subs))

    def identity_config(self, space: Space) -> dict[str, Any] | None:
        """Every slot Identity, if the space lists it."""
        if "Identity" not in {o.name for o in space.policy.ops}:
            return None
        return {slot(i, j): "Identity" for i, j in slots(space)}

    def describe(self, space: Space) -> str:
        p = space.policy
        return (f"{p.sub_policies} sub-policies x {p.ops_per_sub_policy} ops, "
                f"probabilities {'searched' if p.search_probability else 'fixed'}")


def _magnitude(config: dict[str, Any], key: str, name: str, low: float, high: float) -> float:
    """An op's magnitude from a config: its own value (define-by-run), or a slot level in [0, 1]
    rescaled into the op's range (flat dimensions), or the range's low end."""
    if not get_op(name).has_magnitude:
        return 0.0
    own = config.get(f"{key}_{name}_mag")
    if own is not None:
        return min(max(float(own), low), high)
    level = config.get(f"{key}_mag")
    if level is None:
        return low
    return low + (high - low) * min(max(float(level), 0.0), 1.0)
