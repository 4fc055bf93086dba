"""Search strategies, found by name: the registry (`base`) and the built-in plug-ins, TPE and
random (`optuna_samplers`) and PBT (`pbt`). A new searcher is one module calling
`register_strategy`."""

from __future__ import annotations

from search.strategies import optuna_samplers, pbt  # noqa: F401  (built-ins register when imported)
from search.strategies.base import (
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)

__all__ = ["Strategy", "get_strategy", "register_strategy", "strategy_names",
           "unregister_strategy"]
