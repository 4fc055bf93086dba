"""Tune's schedulers for a plan (PBT for population-based strategies, ASHA for `--early-stop`),
their decisions aligned to the epochs that read a fresh reward, and Tune's param space."""

from __future__ import annotations

from typing import Any

from ray import tune

from search.trials import cohorts
from search.trials.config import fixed_runs, with_fields
from search.tune.plan import TunePlan, cohort_size


def scheduler(plan: TunePlan) -> Any:
    epochs = plan.ctx.space.child.epochs
    if plan.configs is not None:  # fixed runs are trained in full
        return None
    if plan.strategy.population_based:
        from ray.tune.schedulers import PopulationBasedTraining

        from search.trials.pbt import Explore

        interval = _aligned(plan, epochs // 5)
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=interval,
            burn_in_period=interval, hyperparam_mutations={},
            custom_explore_fn=Explore(plan.ctx.space, plan.seed),
            quantile_fraction=0.25, synch=False)
    if plan.early_stop:
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                             grace_period=_aligned(plan, epochs // 4), reduction_factor=2)
    return None


def _aligned(plan: TunePlan, epochs: int) -> int:
    """`epochs` rounded down to a multiple of the validation interval (at least one interval),
    so a scheduler's decisions (PBT's perturbations, ASHA's rungs) read a fresh reward."""
    step = plan.ctx.space.reward.interval(plan.ctx.space.child.epochs)
    return step * max(1, epochs // step)


def param_space(plan: TunePlan) -> dict[str, Any]:
    """Tune's param space: the fixed runs as a grid, PBT's dimensions (whose seeded population
    comes as points to evaluate), or nothing for define-by-run searchers."""
    if plan.configs is not None:
        size = cohort_size(plan)
        runs = ([dict(c) for c in plan.configs] if size == 1 else
                cohorts.pack(plan.configs, size))
        return {**fixed_runs(tune.grid_search(runs)), **plan.extra_config}
    if not plan.strategy.population_based:
        return dict(plan.extra_config)
    from search.trials.compile import flat_dimensions
    from search.trials.references import BASE

    dims = {d.name: tune.choice(list(d.choices)) if d.categorical else
            tune.randint(int(d.low), int(d.high) + 1) if d.integer else tune.uniform(d.low, d.high)
            for d in flat_dimensions(plan.ctx.space)}
    return {**with_fields(dims, reference=tune.choice(["", BASE])), **plan.extra_config}
