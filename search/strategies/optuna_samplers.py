"""Optuna's samplers over the define-by-run space: TPE and random search."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Strategy, register_strategy


def tpe_sampler(seed: int) -> Any:
    """Multivariate grouped TPE with a constant liar (concurrent trials), 8 random startups."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      constant_liar=True, n_startup_trials=8)


def random_sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


TPE = register_strategy(Strategy(
    "tpe", "Optuna TPE (multivariate, constant liar) over the define-by-run space", tpe_sampler))
RANDOM = register_strategy(Strategy(
    "random", "Optuna's random sampler over the same define-by-run space", random_sampler))
