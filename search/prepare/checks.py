"""Everything a search is checked against before anything is created.

`prepare` validates the flags, the space, the searcher, the reward kind, the output directory,
the tracking URI, the data and the resources, without writing a file, opening an MLflow store or
starting Ray. A dry run stops after it; a real search (`search.stages.session`) starts from what
it returns, so a bad input fails the same way in both, and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import SearchError, SearchFinished
from search.prepare.options import (
    DEFAULT_SEARCHER,
    DEFAULT_SPACE,
    SearchOptions,
    check_options,
    flag,
)
from search.prepare.output import (
    DB_FILE,
    check_existing_output,
    check_new_output,
    given_output,
    saved_space,
)
from search.prepare.paths import default_output
from search.prepare.resume import (
    finished_message,
    is_finished,
    read_record,
    resume_options,
    space_key,
)
from search.rewards import RewardKind, get_reward_kind
from search.strategies import Strategy, get_strategy
from spaces.errors import SpaceError
from spaces.schema import Space, load_space

# Search options that override a key of the space.
SPACE_KEYS = {"trials": "search.trials", "concurrency": "search.concurrency",
              "cpus_per_trial": "search.cpus_per_trial",
              "gpus_per_trial": "search.gpus_per_trial", "confirm": "search.confirm",
              "confirm_seeds": "search.confirm_seeds", "augmentation": "child.augmentation",
              "cohort": "search.cohort", "headroom_seeds": "search.headroom_seeds"}


@dataclass(frozen=True)
class Prepared:
    """A checked search request: what `search.stages.session` runs and a dry run summarises."""

    space: Space
    space_key: str  # how the space was named (recorded for --resume)
    strategy: Strategy
    opts: SearchOptions  # the seed filled in; on --resume, the interrupted search's options
    output: Path
    output_existed: bool
    splits: Any  # children.datasets.Splits


def prepare(space: str | Path | Space | None = None, searcher: str | None = None,
            opts: SearchOptions | None = None) -> Prepared:
    """Check a search request completely; raises SpaceError, DataError or SearchError, and
    SearchFinished for `--resume` of a search that finished (nothing to do)."""
    opts = opts or SearchOptions()
    check_options(opts)
    if opts.resume:
        searcher, opts, resolved, key, output = _resumed(space, searcher, opts)
    else:
        searcher, opts, resolved, key, output = _fresh(space, searcher, opts)
    strategy = get_strategy(searcher)
    check_strategy(strategy, opts)
    kind = reward_kind_of(resolved)
    kind.check(resolved, strategy, opts)
    check_cohort(resolved, strategy, opts, kind)
    if not opts.resume:
        check_new_output(output, given=opts.output is not None)
    check_tracking(opts.tracking_uri, opts.experiment or f"augsearch-{resolved.name}", output)
    splits = load_splits(resolved, opts)
    _check_ray(resolved, opts, output, kind)
    return Prepared(resolved, key, strategy, opts, output, output.exists(), splits)


def _fresh(space: Any, searcher: str | None, opts: SearchOptions
           ) -> tuple[str, SearchOptions, Space, str, Path]:
    """A new search: defaults filled in, the flags applied to the space."""
    searcher = searcher or DEFAULT_SEARCHER
    opts = dataclasses.replace(opts, seed=0 if opts.seed is None else opts.seed)
    space = space if space is not None else DEFAULT_SPACE
    resolved = apply_options(_space(space), opts)
    output = given_output(opts) or default_output(f"{resolved.name}-{searcher}")
    return searcher, opts, resolved, space_key(space), output


def _resumed(space: Any, searcher: str | None, opts: SearchOptions
             ) -> tuple[str, SearchOptions, Space, str, Path]:
    """An interrupted search: its record's searcher and flags, its saved space."""
    output = given_output(opts)
    if output is None:
        raise SearchError("--resume needs --output DIR; pass the directory of the "
                          "interrupted search")
    if is_finished(output):  # nothing to do: said before any other check of the directory
        raise SearchFinished(finished_message(output))
    check_existing_output(output)
    record = read_record(output)
    searcher, opts = resume_options(record, space, searcher, opts, output)
    resolved = saved_space(output)
    return searcher, opts, resolved, record.space or resolved.name, output


def _space(space: str | Path | Space) -> Space:
    return space if isinstance(space, Space) else load_space(space)


def apply_options(space: Space, opts: SearchOptions) -> Space:
    """The space with the options that override its keys (and the smoke test's) applied."""
    changes: dict[str, Any] = _smoke_changes(space) if opts.smoke_test else {}
    if opts.epochs is not None:  # explicit flags win over the smoke test's settings
        changes["child.epochs"] = opts.epochs
        last = changes.get("reward.last_epochs", space.reward.last_epochs)
        changes["reward.last_epochs"] = min(last, opts.epochs)
    given = [name for name in SPACE_KEYS if getattr(opts, name) is not None]
    changes.update({SPACE_KEYS[name]: getattr(opts, name) for name in given})
    if not changes:
        return space
    try:
        return space.replace(**changes)
    except SpaceError as err:
        flags = ", ".join(flag(n) for n in [*given, *(["epochs"] if opts.epochs else [])])
        raise SearchError(f"{flags or '--smoke-test'} cannot be applied to space "
                          f"{space.name}: {str(err).split(': ', 1)[-1]}") from None


def _smoke_changes(space: Space) -> dict[str, Any]:
    d = space.dataset
    pool = min(d.val_pool_size, 60)
    sample = space.reward.val_sample_size
    return {"dataset.train_size": min(d.train_size, 100), "dataset.val_pool_size": pool,
            "dataset.audit_size": min(d.audit_size, 40),
            "reward.val_sample_size": min(sample, pool) if sample else None,
            "child.epochs": 2, "reward.last_epochs": 1, "search.trials": 4,
            "search.concurrency": 2, "search.confirm": 1,
            "search.confirm_seeds": 2,  # the fewest fresh seeds that give a margin an interval
            "search.headroom_seeds": 0,  # the smoke test checks the set-up, not the proxy
            **({"dataset.labelled_size": min(d.labelled_size, 100)}
               if d.labelled_size is not None else {})}


def check_strategy(strategy: Strategy, opts: SearchOptions) -> None:
    if opts.early_stop and not strategy.supports_early_stop:
        raise SearchError(f"--early-stop {opts.early_stop} cannot be combined with "
                          f"--searcher {strategy.name} (PBT is already a scheduler); drop one")


def reward_kind_of(space: Space) -> RewardKind:
    """The space's reward kind from the registry; an unknown name is one line listing them."""
    try:
        return get_reward_kind(space.reward.kind)
    except SearchError as err:
        name, _, rest = str(err).partition("; ")
        raise SearchError(f"{name} (space {space.name}); {rest}") from None


def check_cohort(space: Space, strategy: Strategy, opts: SearchOptions,
                 kind: RewardKind) -> None:
    """A cohort trains its children in lockstep from one batch order and one dropout stream:
    it needs common random numbers, whole trainings (no scheduler that stops or swaps a member)
    and a child per trial (not density matching's scoring)."""
    k, trials = space.search.cohort, space.search.trials
    if k == 1:
        return
    if k > trials:
        raise SearchError(f"--cohort {k} (search.cohort, space {space.name}) is more than the "
                          f"search's {trials} trials (search.trials): a cohort trains trials "
                          f"together; pass --cohort {trials} or less, or --trials {k} or more")
    why = ("--searcher pbt changes a member's policy and weights on its own schedule"
           if strategy.population_based else
           f"--early-stop {opts.early_stop} would stop single members" if opts.early_stop else
           f"reward.kind: {kind.name} trains no child per trial"
           if not kind.child_per_trial else
           "its members share one batch order and dropout stream, which needs "
           "reward.common_random_numbers: true" if not space.reward.common_random_numbers
           else "")
    if why:
        raise SearchError(f"--cohort {k} (search.cohort, space {space.name}) cannot be used: "
                          f"{why}; use --cohort 1")


def load_splits(space: Space, opts: SearchOptions) -> Any:
    """Load the dataset once in the driver, check it against the space, and split it; each
    split must hold the classes the space declares (`children.datasets.check_classes`)."""
    from children.datasets import check_classes, load_dataset, make_splits

    data = load_dataset(space.dataset, data=opts.data, data_dir=opts.data_dir)
    splits = make_splits(data, space.dataset, seed=opts.seed or 0)
    check_classes(data, splits, space.dataset)
    return splits


# ---------------------------------------------------------------- tracking and Ray


def check_tracking(uri: str | None, experiment: str, output: Path) -> None:
    """A tracking URI MLflow can use, a server that answers, and, in a store that exists
    already, an experiment that was not deleted; nothing is created."""
    local = output / DB_FILE
    if uri is None and not local.is_file():
        return  # a new SQLite store inside the output directory
    from search.tracking import check_experiment, check_uri, default_uri

    if uri is not None:
        check_uri(uri)
    check_experiment(uri or default_uri(output), experiment)


def _check_ray(space: Space, opts: SearchOptions, output: Path, kind: RewardKind) -> None:
    """The resources one trial needs exist (a local Ray, or the one already running), and a
    cluster address answers; Ray is not started. A resumed search needs Tune's state of the
    search, of the headroom check before it, or of the reward kind's own stage (density
    matching's fold models)."""
    from search import tune
    from search.stages.headroom import HEADROOM

    storage = tune.storage_of(output)
    if opts.resume and not (tune.can_resume(storage) or tune.can_resume(storage, HEADROOM)
                            or kind.resumable(output)):
        raise SearchError(f"nothing to resume in {output}: Ray Tune kept no state there (the "
                          f"search stopped before its first trial); start a new search with "
                          f"another --output")
    if opts.address:
        tune.probe_address(opts.address)
    s = space.search
    tune.precheck_resources(tune.Resources(s.cpus_per_trial, s.gpus_per_trial), opts.address)
