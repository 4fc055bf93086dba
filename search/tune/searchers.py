"""Strategies as Tune search algorithms: the Optuna searcher a strategy's sampler drives, with the
reference arms first (`_ReferencesFirst`) and cohorts of suggestions (`_Cohorts`); PBT's seeded
population and fixed runs as Tune's variant generator; each saving whole snapshots only."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator

from search.trials import cohorts
from search.trials.config import TrialConfig, decode, encode, with_fields
from search.tune.plan import METRIC, MODE, TunePlan, cohort_size


def search_alg(plan: TunePlan) -> Any:
    """The search algorithm, wrapped so that its snapshots reach Tune's synced directory only
    as whole files (`_WholeSnapshots`), with the concurrency limit Tune would have added."""
    size = cohort_size(plan)
    limit = cohorts.trials_of(plan.concurrency, size) if plan.concurrency else 0
    if plan.configs is not None:  # a fixed list of runs (the confirmation stage): a grid
        return _Variants(max_concurrent=limit)
    if plan.strategy.population_based:  # PBT: a seeded initial population, base arm first
        return _Variants(points_to_evaluate=_population(plan), random_state=plan.seed,
                         max_concurrent=limit)
    from ray.tune.search import ConcurrencyLimiter

    searcher = _searcher(plan)
    if size > 1:
        searcher = _Cohorts(searcher, size, plan.trials)
    return _Generator(ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher)


def _searcher(plan: TunePlan) -> Searcher:
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search.trials.compile import define_by_run
    from search.trials.references import BASE, identity_config, reference_policies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = plan.ctx.space
    identity = identity_config(space) if plan.references else None
    inner = OptunaSearch(define_by_run(space), metric=METRIC, mode=MODE,
                         sampler=plan.strategy.make_sampler(plan.seed),
                         points_to_evaluate=[identity] if identity else None)
    if not plan.references:
        return _ReferencesFirst(inner, [], set())
    refs = [encode(TrialConfig(reference=name)) for name in reference_policies(space)]
    told = {BASE} if identity else set()
    return _ReferencesFirst(inner, refs, told)


def _population(plan: TunePlan) -> list[dict[str, Any]]:
    from search.trials.pbt import initial_population
    from search.trials.references import BASE, identity_config

    population = initial_population(plan.ctx.space, plan.trials, plan.seed)
    identity = identity_config(plan.ctx.space) if plan.references else None
    if identity and population:  # PBA starts from the base; so does one member here
        population[0] = with_fields({**population[0], **identity}, reference=BASE)
    return [{**member, **plan.extra_config} for member in population]


class _WholeState(Searcher):
    """A searcher wrapper whose checkpoint is its whole state, the wrapped searcher included."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class _ReferencesFirst(_WholeState):
    """The reference arms first, then the wrapped searcher's suggestions.

    A reference in `told` takes the wrapped searcher's next suggestion (its enqueued in-space
    config, e.g. every slot Identity for the base), so the searcher learns from its reward; the
    others (TrivialAugment, which a searched shape cannot hold) bypass the searcher entirely.
    """

    def __init__(self, inner: Any, references: list[dict[str, Any]], told: set[str]) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.pending = list(references)
        self.told = set(told)
        self.own: set[str] = set()  # trial ids the wrapped searcher never saw

    def set_search_properties(self, metric: Any, mode: Any, config: dict[str, Any],
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.inner.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.pending:
            return self.inner.suggest(trial_id)
        ref = self.pending.pop(0)
        if decode(ref).reference in self.told:
            config = self.inner.suggest(trial_id)
            return None if config is None else {**config, **ref}
        self.own.add(trial_id)
        return dict(ref)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self.own:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.own:
            self.inner.on_trial_complete(trial_id, result=result, error=error)



class _Cohorts(_WholeState):
    """Cohort trials for the wrapped searcher: each member one suggestion under its own trial
    id, told its own results; a member that fails is told so alone, the others go on
    (`search.trials.cohorts.Suggestions` keeps the books)."""

    def __init__(self, inner: Searcher, size: int, total: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.books = cohorts.Suggestions(size, total)

    def set_search_properties(self, metric: Any, mode: Any, config: dict[str, Any],
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        def one(member: str) -> dict[str, Any] | None:
            config = self.inner.suggest(member)
            return None if config is None or config == Searcher.FINISHED else config

        return self.books.suggest(trial_id, one)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        ongoing, failed = self.books.results(trial_id, result)
        for mid, mine in ongoing:
            self.inner.on_trial_result(mid, mine)
        for mid in failed:
            self.inner.on_trial_complete(mid, result=None, error=True)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        for mid, mine, bad in self.books.completions(trial_id, result, error):
            self.inner.on_trial_complete(mid, result=mine, error=bad)


SNAPSHOT_SCRATCH = ".augsearch-snapshot"  # beside Tune's synced staging directory, not in it


class _WholeSnapshots:
    """Search-algorithm snapshots that appear in Tune's synced directory only as whole files.

    Tune saves the experiment state into a driver staging directory and copies that directory
    to the storage path in a background process. Ray's savers write each snapshot to a
    transient `.<uuid>-tmp-...` file in that directory and rename it; when the background copy
    lists the directory while such a file exists and reads it after the rename, it fails with
    `FileNotFoundError` and Tune logs "Saving experiment state to storage ... failed" with a
    traceback. Here Ray's savers write into a scratch directory beside the staging directory,
    and each finished file is renamed into place (atomic on one filesystem): the copy sees the
    old file or the new one, never a transient one.
    """

    def save_to_dir(self, dirpath: str, session_str: str) -> Any:
        scratch = Path(dirpath).parent / SNAPSHOT_SCRATCH
        scratch.mkdir(parents=True, exist_ok=True)
        saved = super().save_to_dir(str(scratch), session_str)  # type: ignore[misc]
        for path in scratch.iterdir():
            if path.is_file() and not path.name.startswith("."):
                os.replace(path, Path(dirpath) / path.name)
        return saved


class _Generator(_WholeSnapshots, SearchGenerator):
    """Tune's wrapper of a `Searcher`, saving whole snapshots."""


class _Variants(_WholeSnapshots, BasicVariantGenerator):
    """Tune's generator of fixed and random variants, saving whole snapshots."""
