"""Compile a space into search dimensions, and decode a flat trial config into a Policy.

One compiler serves every strategy: Optuna's define-by-run function (TPE and random), the flat
dimensions PBT perturbs, and sampling for the dry run. What is searched is the space's policy
family's (`spaces.families`: `policy.family`), which this module delegates to; the batch ops
are searched alike in every family, after the family's own numbers. Config keys use underscores
only (Ray Tune treats `/` as nesting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from spaces.families import Dim, family_of
from spaces.families.subpolicies import slot
from spaces.policy import BatchOps, Policy
from spaces.schema import Space

if TYPE_CHECKING:
    import optuna

__all__ = ["BATCH_KEYS", "DefineByRun", "Dim", "count_dimensions", "decode", "define_by_run",
           "flat_dimensions", "sample_configs", "sample_policies", "slot"]

BATCH_KEYS = ("mixup_alpha", "cutmix_alpha", "sample_pairing")


def _batch_dims(space: Space) -> list[Dim]:
    ranges = space.policy.batch_ops
    return [Dim(k, low=getattr(ranges, k)[0], high=getattr(ranges, k)[1])
            for k in BATCH_KEYS if getattr(ranges, k) is not None]


class DefineByRun:
    """Optuna define-by-run space: the family's numbers (for sub-policies, op per slot, then
    that op's magnitude, conditional), then the batch ops.

    A class rather than a closure so Tune can pickle the searcher into its experiment state.
    """

    def __init__(self, space: Space) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        family_of(self.space).suggest(self.space, trial)
        for dim in _batch_dims(self.space):
            trial.suggest_float(dim.name, dim.low, dim.high)


def define_by_run(space: Space) -> Callable[[optuna.Trial], None]:
    """The define-by-run function TPE and random search share."""
    return DefineByRun(space)


def flat_dimensions(space: Space) -> list[Dim]:
    """Unconditional dimensions (PBT): the family's, then the batch ops'."""
    return family_of(space).dimensions(space) + _batch_dims(space)


def count_dimensions(space: Space) -> int:
    """Number of searched dimensions at their most."""
    return family_of(space).count_dimensions(space) + len(_batch_dims(space))


def decode(space: Space, config: dict[str, Any]) -> Policy:
    """Turn a trial's flat config (from any strategy) into a Policy; unknown keys are ignored."""
    batch = BatchOps(**{k: max(float(config.get(k, 0.0)), 0.0) for k in BATCH_KEYS})
    return replace(family_of(space).decode(space, config), batch=batch)


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
