"""What a Tune experiment is asked to run (`TunePlan`) and what comes back (`TrialOutcome`), as
plain data: the session and the reward kinds build plans without touching Ray."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.strategies import Strategy
from search.trials import cohorts
from search.trials.context import TrialContext

METRIC, MODE = "reward", "max"
EXPERIMENT = "tune"  # the search's Tune experiment, under `<output>/ray`


@dataclass
class Resources:
    cpus: float
    gpus: float


@dataclass
class TrialOutcome:
    """A finished (or failed) trial as the driver saw it."""

    trial_id: str
    config: dict[str, Any]
    result: dict[str, Any]
    status: str
    error: str = ""
    checkpoint: Any = None  # the trial's last checkpoint (read with `final_state`)


@dataclass
class TunePlan:
    """Everything `run_search` needs; built by the API from the space, strategy and flags."""

    ctx: TrialContext
    splits: Any
    strategy: Strategy
    resources: Resources
    trials: int
    concurrency: int | None
    storage: Path
    seed: int
    early_stop: bool = False
    max_failures: int = 2
    extra_config: dict[str, Any] = field(default_factory=dict)
    trial: Callable[..., Any] | None = None  # how a trial scores its policy, without Ray (a
    # reward kind's `trial`; default `search.trials.trial.run_child`), run by `trainable` below
    trainable: Callable[..., None] | None = None  # in place of `trainable` (tests swap it)
    references: bool = True  # the first trials are the reference arms (search.trials.references)
    configs: list[dict[str, Any]] | None = None  # fixed configs to run instead of searching
    name: str = "tune"  # the Tune experiment's name under `storage`
    shared: dict[str, Any] = field(default_factory=dict)  # more trainable arguments, put in
    # Ray's object store once (density matching's fold models)
    epochs: int | None = None  # epochs a finished trial has reported (default child.epochs)
    cohort: int | None = None  # members per Tune trial (default: the space's search.cohort
    # for our trainable, 1 for one swapped in)


def cohort_size(plan: TunePlan) -> int:
    """Members per Tune trial (`search.trials.cohorts.cohort_size`)."""
    return cohorts.cohort_size(plan.cohort, plan.ctx.space, plan.trainable is not None)
