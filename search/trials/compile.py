"""Compile a space into search dimensions, and decode a flat trial config into a Policy.

One compiler serves every strategy: Optuna's define-by-run function (TPE and random, with the
magnitude conditional on the chosen op), the flat dimensions PBT perturbs, and sampling for the
dry run. Config keys use underscores only (Ray Tune treats `/` as nesting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spaces.ops import get_op
from spaces.policy import BatchOps, Op, Policy, SubPolicy
from spaces.schema import Space

if TYPE_CHECKING:
    import optuna

BATCH_KEYS = ("mixup_alpha", "cutmix_alpha", "sample_pairing")


@dataclass(frozen=True)
class Dim:
    """One search dimension: a categorical over `choices` or a float in [low, high]."""

    name: str
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0

    @property
    def categorical(self) -> bool:
        return bool(self.choices)


def slot(i: int, j: int) -> str:
    return f"sp{i}_op{j}"


def _bounds(space: Space) -> dict[str, tuple[float, float]]:
    return {o.name: o.magnitude for o in space.policy.ops}


def _slots(space: Space) -> list[tuple[int, int]]:
    p = space.policy
    return [(i, j) for i in range(p.sub_policies) for j in range(p.ops_per_sub_policy)]


def _batch_dims(space: Space) -> list[Dim]:
    ranges = space.policy.batch_ops
    return [Dim(k, low=getattr(ranges, k)[0], high=getattr(ranges, k)[1])
            for k in BATCH_KEYS if getattr(ranges, k) is not None]


class DefineByRun:
    """Optuna define-by-run space: op per slot, then that op's magnitude (conditional).

    A class rather than a closure so Tune can pickle the searcher into its experiment state.
    """

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        policy = self.space.policy
        names = [o.name for o in policy.ops]
        bounds = _bounds(self.space)
        for i, j in _slots(self.space):
            key = slot(i, j)
            name = trial.suggest_categorical(key, names)
            if get_op(name).has_magnitude:
                trial.suggest_float(f"{key}_{name}_mag", *bounds[name])
            if policy.search_probability:
                trial.suggest_float(f"{key}_prob", *policy.probability)
        for dim in _batch_dims(self.space):
            trial.suggest_float(dim.name, dim.low, dim.high)


def define_by_run(space: Space) -> Callable[[optuna.Trial], None]:
    """The define-by-run function TPE and random search share."""
    return DefineByRun(space)


def flat_dimensions(space: Space) -> list[Dim]:
    """Unconditional dimensions (PBT): op per slot, a magnitude level in [0, 1] per slot that
    `decode` rescales into the chosen op's range, and the slot's probability."""
    names = tuple(o.name for o in space.policy.ops)
    plow, phigh = space.policy.probability
    dims: list[Dim] = []
    for i, j in _slots(space):
        key = slot(i, j)
        dims.append(Dim(key, choices=names))
        dims.append(Dim(f"{key}_mag"))
        if space.policy.search_probability:
            dims.append(Dim(f"{key}_prob", low=plow, high=phigh))
    return dims + _batch_dims(space)


def count_dimensions(space: Space) -> int:
    """Number of searched dimensions at their most (every slot holding a magnitude op)."""
    per_slot = 2 + int(space.policy.search_probability)
    return len(_slots(space)) * per_slot + len(_batch_dims(space))


def decode(space: Space, config: dict[str, Any]) -> Policy:
    """Turn a trial's flat config (from any strategy) into a Policy; unknown keys are ignored."""
    bounds = _bounds(space)
    fixed_p = space.policy.probability[1]
    subs = []
    for i in range(space.policy.sub_policies):
        ops = []
        for j in range(space.policy.ops_per_sub_policy):
            key = slot(i, j)
            name = str(config[key])
            low, high = bounds[name]
            magnitude = _magnitude(config, key, name, low, high)
            prob = min(max(float(config.get(f"{key}_prob", fixed_p)), 0.0), 1.0)
            ops.append(Op(name, round(magnitude, 6), round(prob, 6)))
        subs.append(SubPolicy(tuple(ops)))
    batch = BatchOps(**{k: max(float(config.get(k, 0.0)), 0.0) for k in BATCH_KEYS})
    return Policy(tuple(subs), batch)


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


def sample_configs(space: Space, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random configs drawn through the same define-by-run function the searchers use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    suggest = define_by_run(space)
    configs = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial)
        configs.append(dict(trial.params))
        study.tell(trial, 0.0)
    return configs


def sample_policies(space: Space, n: int, seed: int) -> list[Policy]:
    """`n` random policies from the space (dry run, previews, benchmarks)."""
    return [decode(space, c) for c in sample_configs(space, n, seed)]
