"""The strategy plug-in contract and its registry: the one place a searcher is named.

A strategy tells the Tune adapter what to build: an Optuna sampler over the define-by-run space
(`make_sampler(seed)`), or a population that a PBT scheduler evolves (`population_based`, no
sampler), and what the trials must do for it (checkpoint, allow early stopping). Strategies are
described here without importing Ray; the adapter (`search.tune`) builds the Tune objects. A new
searcher is one module that calls `register_strategy` (in the manner of Ray Tune's
`ray.tune.search` registry and timm's model registry); `get_strategy` resolves every name a
user gives (the `--searcher` flag, the API's `searcher`, a resumed `run.json`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.registry import Registry

SamplerFactory = Callable[[int], Any]  # seed -> an optuna.samplers.BaseSampler


@dataclass(frozen=True)
class Strategy:
    """A registered search strategy."""

    name: str
    summary: str
    make_sampler: SamplerFactory | None = None  # Optuna sampler from the search seed; None: PBT
    population_based: bool = False  # a PBT scheduler drives the search (no search algorithm)
    needs_checkpoints: bool = False
    supports_early_stop: bool = True

    def __post_init__(self) -> None:
        if (self.make_sampler is None) != self.population_based:
            raise ValueError(f"strategy {self.name!r}: exactly one of `make_sampler` and "
                             f"`population_based` must be given")


_STRATEGIES: Registry[Strategy] = Registry("strategy", "searcher")


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add a strategy to the registry (a plug-in calls this when imported); a name already
    taken is refused unless `replace`."""
    return _STRATEGIES.register(strategy.name, strategy, replace=replace)


unregister_strategy = _STRATEGIES.unregister
strategy_names = _STRATEGIES.names
get_strategy = _STRATEGIES.get
