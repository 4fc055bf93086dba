"""Everything a search is checked against before anything is created.

`prepare` validates the flags, the space, the searcher, the output directory, the tracking URI,
the data and the resources, without writing a file, opening an MLflow store or starting Ray. A
dry run stops after it; a real search (`search.session`) starts from what it returns, so a bad
input fails the same way in both, and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import SearchError
from search.options import (
    DEFAULT_SEARCHER,
    DEFAULT_SPACE,
    SearchOptions,
    check_options,
    flag,
)
from search.paths import cannot_write, check_creatable, default_output
from search.resume import RUN_FILE, read_record, resume_options, space_key
from search.strategies import Strategy, get_strategy
from spaces.errors import SpaceError
from spaces.schema import Space, load_space, parse_space

SPACE_FILE = "space.yaml"
DB_FILE = "mlflow.db"  # the default store, in the output directory
# What a search leaves in its output directory; any of them means "a search is here".
SEARCH_FILES = (RUN_FILE, SPACE_FILE, "ray", DB_FILE, "leaderboard.csv")
# Search options that override a key of the space.
SPACE_KEYS = {"trials": "search.trials", "concurrency": "search.concurrency",
              "cpus_per_trial": "search.cpus_per_trial",
              "gpus_per_trial": "search.gpus_per_trial", "confirm": "search.confirm",
              "confirm_seeds": "search.confirm_seeds", "augmentation": "child.augmentation",
              "cohort": "search.cohort"}


@dataclass(frozen=True)
class Prepared:
    """A checked search request: what `search.session` runs and a dry run summarises."""

    space: Space
    space_key: str  # how the space was named (recorded for --resume)
    strategy: Strategy
    opts: SearchOptions  # the seed filled in; on --resume, the interrupted search's options
    output: Path
    output_existed: bool
    splits: Any  # children.datasets.Splits


def prepare(space: str | Path | Space | None = None, searcher: str | None = None,
            opts: SearchOptions | None = None) -> Prepared:
    """Check a search request completely; raises SpaceError, DataError or SearchError."""
    opts = opts or SearchOptions()
    check_options(opts)
    if opts.resume:
        searcher, opts, resolved, key, output = _resumed(space, searcher, opts)
    else:
        searcher, opts, resolved, key, output = _fresh(space, searcher, opts)
    strategy = get_strategy(searcher)
    check_strategy(strategy, opts)
    check_reward(resolved, strategy, opts)
    check_cohort(resolved, strategy, opts)
    if not opts.resume:
        _check_new_output(output, given=opts.output is not None)
    check_tracking(opts.tracking_uri, opts.experiment or f"augsearch-{resolved.name}", output)
    splits = load_splits(resolved, opts)
    _check_ray(resolved, opts, output)
    return Prepared(resolved, key, strategy, opts, output, output.exists(), splits)


def _fresh(space: Any, searcher: str | None, opts: SearchOptions
           ) -> tuple[str, SearchOptions, Space, str, Path]:
    """A new search: defaults filled in, the flags applied to the space."""
    searcher = searcher or DEFAULT_SEARCHER
    opts = dataclasses.replace(opts, seed=0 if opts.seed is None else opts.seed)
    space = space if space is not None else DEFAULT_SPACE
    resolved = apply_options(_space(space), opts)
    output = _given_output(opts) or default_output(f"{resolved.name}-{searcher}")
    return searcher, opts, resolved, space_key(space), output


def _resumed(space: Any, searcher: str | None, opts: SearchOptions
             ) -> tuple[str, SearchOptions, Space, str, Path]:
    """An interrupted search: its record's searcher and flags, its saved space."""
    output = _given_output(opts)
    if output is None:
        raise SearchError("--resume needs --output DIR; pass the directory of the "
                          "interrupted search")
    _check_existing_output(output)
    record = read_record(output)
    searcher, opts = resume_options(record, space, searcher, opts, output)
    resolved = _saved_space(output)
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
            "search.confirm_seeds": 2}  # the fewest fresh seeds that give a margin an interval


def check_strategy(strategy: Strategy, opts: SearchOptions) -> None:
    if opts.early_stop and not strategy.supports_early_stop:
        raise SearchError(f"--early-stop {opts.early_stop} cannot be combined with "
                          f"--searcher {strategy.name} (PBT is already a scheduler); drop one")


def check_reward(space: Space, strategy: Strategy, opts: SearchOptions) -> None:
    """Density matching scores a policy in one pass: nothing for PBT to evolve during a child's
    training, no epochs for ASHA to stop early."""
    if not space.reward.density_matching:
        return
    if strategy.population_based:
        raise SearchError(f"--searcher {strategy.name} cannot search with reward.kind: "
                          f"density_matching (space {space.name}): it changes policies while a "
                          f"child trains, and density matching trains none per trial; use "
                          f"--searcher tpe or random, or reward.kind: child_training")
    if opts.early_stop:
        raise SearchError(f"--early-stop {opts.early_stop} has nothing to stop with reward.kind: "
                          f"density_matching (a trial is one scoring pass, without epochs); "
                          f"drop --early-stop")


def check_cohort(space: Space, strategy: Strategy, opts: SearchOptions) -> None:
    """A cohort trains its children in lockstep from one batch order and one dropout stream:
    it needs common random numbers, whole trainings (no scheduler that stops or swaps a member)
    and a child per trial (not density matching's scoring)."""
    k = space.search.cohort
    if k == 1:
        return
    why = ("--searcher pbt changes a member's policy and weights on its own schedule"
           if strategy.population_based else
           f"--early-stop {opts.early_stop} would stop single members" if opts.early_stop else
           "reward.kind: density_matching trains no child per trial"
           if space.reward.density_matching else
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


# ---------------------------------------------------------------- the output directory


def _given_output(opts: SearchOptions) -> Path | None:
    return None if opts.output is None else Path(opts.output).expanduser().resolve()


def _saved_space(output: Path) -> Space:
    path = output / SPACE_FILE
    if not path.is_file():
        raise SearchError(f"nothing to resume in {output}: no {SPACE_FILE} there; drop --resume "
                          f"to start a new search")
    return parse_space(path.read_text(encoding="utf-8"), str(path))


def _check_existing_output(output: Path) -> None:
    if not output.is_dir():
        raise SearchError(f"nothing to resume in {output}: no such directory; pass the --output "
                          f"of the interrupted search")
    why = cannot_write(output)
    if why:
        raise SearchError(f"--output {output} is not writable ({why}); fix its permissions to "
                          f"resume")


def _check_new_output(output: Path, given: bool) -> None:
    """A new search needs a directory it can create, or an empty-of-searches one."""
    what = f"--output {output}" if given else f"the output directory {output}"
    if output.exists() and not output.is_dir():
        raise SearchError(f"{what} is a file, not a directory; pass --output with a directory "
                          f"path")
    if output.is_dir():
        found = [name for name in SEARCH_FILES if (output / name).exists()]
        if found:
            raise SearchError(f"{what} already holds a search ({', '.join(found)}); add --resume "
                              f"to continue it, or pass --output with a new directory")
        why = cannot_write(output)
        if why:
            raise SearchError(f"{what} is not writable ({why}); pass --output with a writable "
                              f"directory")
        return
    check_creatable(output, what, "pass --output with a writable path")


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


def _resumable(space: Space, output: Path) -> bool:
    """Tune kept state of the search, or (density matching) of its fold stage."""
    from search import tune_adapter
    from search.density import FOLD_EXPERIMENT, FOLDS_FILE

    storage = tune_adapter.storage_of(output)
    if tune_adapter.can_resume(storage):
        return True
    return space.reward.density_matching and (
        (output / FOLDS_FILE).exists() or tune_adapter.can_resume(storage, FOLD_EXPERIMENT))


def _check_ray(space: Space, opts: SearchOptions, output: Path) -> None:
    """The resources one trial needs exist (a local Ray, or the one already running), and a
    cluster address answers; Ray is not started."""
    from search import tune_adapter

    if opts.resume and not _resumable(space, output):
        raise SearchError(f"nothing to resume in {output}: Ray Tune kept no state there (the "
                          f"search stopped before its first trial); start a new search with "
                          f"another --output")
    if opts.address:
        tune_adapter.probe_address(opts.address)
    s = space.search
    tune_adapter.precheck_resources(tune_adapter.Resources(s.cpus_per_trial, s.gpus_per_trial),
                                    opts.address)
