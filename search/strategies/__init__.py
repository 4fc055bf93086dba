"""Search strategies, found by name. Each is a small plug-in (see `base.Strategy`)."""

from __future__ import annotations

from search.strategies.base import Strategy, get_strategy, strategy_names

__all__ = ["Strategy", "get_strategy", "strategy_names"]
