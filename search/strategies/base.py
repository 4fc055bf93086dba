"""The strategy plug-in contract.

A strategy returns what Ray Tune needs: a search algorithm or None, a scheduler or None, and
whether trials must checkpoint (PBT is a Tune scheduler and cannot be combined with a search
algorithm). Strategies are described here without importing Ray; the Ray adapter builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.errors import SearchError


@dataclass(frozen=True)
class Strategy:
    """A registered search strategy."""

    name: str
    summary: str
    sampler: str | None  # Optuna sampler for define-by-run search ("tpe", "random"), or None
    population_based: bool  # a PBT scheduler drives the search (no search algorithm)
    needs_checkpoints: bool
    supports_early_stop: bool


_REGISTRY: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("tpe", "Optuna TPE (multivariate, constant liar) over the define-by-run space",
                 "tpe", False, False, True),
        Strategy("random", "Optuna's random sampler over the same define-by-run space",
                 "random", False, False, True),
        Strategy("pbt", "population-based augmentation (PBA): exploit/explore a population, "
                 "result is a policy schedule", None, True, True, False),
    )
}


def strategy_names() -> list[str]:
    return list(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """The strategy called `name`; an unknown name is a user error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SearchError(f"unknown searcher '{name}'; choose one of: "
                          f"{', '.join(strategy_names())}") from None
