"""Population-based augmentation (PBA): a Tune PBT scheduler evolves a population of policies
(`search.trials.pbt`'s explore); the result is a policy schedule."""

from __future__ import annotations

from search.strategies.base import Strategy, register_strategy

PBT = register_strategy(Strategy(
    "pbt", "population-based augmentation (PBA): exploit/explore a population, result is a "
    "policy schedule", population_based=True, needs_checkpoints=True, supports_early_stop=False))
