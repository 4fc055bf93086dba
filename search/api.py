"""The search as one function call: `search("cifar10", "tpe", trials=64) -> SearchResult`.

The CLI is a thin layer over `search`; both validate everything that can be validated before
Ray starts or a child trains.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import SearchError
from search.outputs import SearchResult
from search.strategies import Strategy, get_strategy
from spaces.schema import Space, load_space

DEFAULT_RUNS = Path("augsearch-runs")


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search can be told besides its space and searcher."""

    trials: int | None = None
    concurrency: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    epochs: int | None = None
    augmentation: str | None = None  # auto | albumentations | batched (child.augmentation)
    data: str | None = None
    data_dir: str | None = None
    seed: int = 0
    output: str | Path | None = None
    address: str | None = None
    resume: bool = False
    early_stop: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    smoke_test: bool = False
    max_failures: int = 2
    crash_once: str | None = None  # test hook: a worker dies once (see search.trial)


def search(space: str | Path | Space = "digits", searcher: str = "tpe",
           **options: Any) -> SearchResult:
    """Search augmentation policies for `space` with `searcher` (tpe, random, pbt).

    Keyword options are those of `SearchOptions` (the CLI flags). Returns the best policy, the
    leaderboard and the paths of the files written to the output directory.
    """
    try:
        opts = SearchOptions(**options)
    except TypeError as err:
        raise SearchError(f"{err}; valid options: {', '.join(SearchOptions.__dataclass_fields__)}"
                          ) from None
    return _search(space, searcher, opts)


def search_from_args(args: argparse.Namespace) -> SearchResult:
    """The CLI entry: map parsed flags onto `search`."""
    names = set(SearchOptions.__dataclass_fields__) - {"max_failures", "crash_once"}
    opts = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    return search(args.space, args.searcher, **opts)


# ---------------------------------------------------------------- preparing a search


def prepare_space(space: str | Path | Space, opts: SearchOptions) -> Space:
    """The space with the command line's overrides applied and re-validated."""
    space = space if isinstance(space, Space) else load_space(space)
    changes: dict[str, Any] = _smoke_changes(space) if opts.smoke_test else {}
    if opts.epochs is not None:  # explicit flags win over the smoke test's settings
        changes["child.epochs"] = opts.epochs
        last = changes.get("reward.last_epochs", space.reward.last_epochs)
        changes["reward.last_epochs"] = min(last, opts.epochs)
    for key, value in (("search.trials", opts.trials), ("search.concurrency", opts.concurrency),
                       ("search.cpus_per_trial", opts.cpus_per_trial),
                       ("search.gpus_per_trial", opts.gpus_per_trial),
                       ("child.augmentation", opts.augmentation)):
        if value is not None:
            changes[key] = value
    return space.replace(**changes) if changes else space


def _smoke_changes(space: Space) -> dict[str, Any]:
    d = space.dataset
    pool = min(d.val_pool_size, 60)
    return {"dataset.train_size": min(d.train_size, 100), "dataset.val_pool_size": pool,
            "dataset.audit_size": min(d.audit_size, 40),
            "reward.val_sample_size": min(space.reward.val_sample_size, pool),
            "child.epochs": 2, "reward.last_epochs": 1, "search.trials": 4,
            "search.concurrency": 2}


def output_dir(space: Space, searcher: str, opts: SearchOptions) -> Path:
    if opts.output is not None:
        return Path(opts.output).resolve()
    if opts.resume:
        raise SearchError("--resume needs --output DIR: the directory of the interrupted search")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (DEFAULT_RUNS / f"{space.name}-{searcher}-{stamp}").resolve()


def _check_strategy(strategy: Strategy, opts: SearchOptions) -> None:
    if opts.early_stop and not strategy.supports_early_stop:
        raise SearchError(f"--early-stop {opts.early_stop} cannot be combined with "
                          f"--searcher {strategy.name} (PBT is already a scheduler); drop one")
    if opts.trials is not None and opts.trials < 1:
        raise SearchError(f"--trials must be at least 1, got {opts.trials}")


def load_splits(space: Space, opts: SearchOptions) -> Any:
    """Load the dataset once in the driver and split it (train, validation pool, audit, test)."""
    from children.datasets import load_dataset, make_splits

    data = load_dataset(space.dataset, data=opts.data, data_dir=opts.data_dir)
    splits = make_splits(data, space.dataset, seed=opts.seed)
    return splits


# ---------------------------------------------------------------- running it


def _search(space_arg: str | Path | Space, searcher: str, opts: SearchOptions) -> SearchResult:
    strategy = get_strategy(searcher)
    _check_strategy(strategy, opts)
    space = prepare_space(space_arg, opts)
    out = output_dir(space, searcher, opts)
    from search.session import SearchSession

    session = SearchSession(space, strategy, opts, out)
    return session.run()


__all__ = ["SearchOptions", "SearchResult", "search"]
