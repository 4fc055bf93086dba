"""One Tune experiment: build the Tuner from a plan (or restore it), run it, and return every
trial as a `TrialOutcome`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback, CheckpointConfig, FailureConfig, RunConfig, TuneConfig

from search.errors import SearchError
from search.events import SearchListener
from search.trials import cohorts
from search.trials.config import flat
from search.tune.callbacks import LISTENERS, STATUSES, Events
from search.tune.plan import EXPERIMENT, METRIC, MODE, TrialOutcome, TunePlan, cohort_size
from search.tune.schedulers import param_space, scheduler
from search.tune.searchers import search_alg
from search.tune.trainables import trainable


def _trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _tuner(plan: TunePlan, resume: bool) -> tune.Tuner:
    params = {"ctx": plan.ctx, "splits": plan.splits, **plan.shared}
    if plan.trainable is None and plan.trial is not None:
        params["trial"] = plan.trial
    wrapped = tune.with_resources(tune.with_parameters(plan.trainable or trainable, **params),
                                  {"cpu": plan.resources.cpus, "gpu": plan.resources.gpus})
    path = experiment_path(plan.storage, plan.name)
    if resume:
        if not can_resume(plan.storage, plan.name):
            raise SearchError(f"nothing to resume in {plan.storage}: no interrupted search "
                              f"there; drop --resume to start a new one")
        return tune.Tuner.restore(str(path), trainable=wrapped, resume_unfinished=True,
                                  resume_errored=True)
    return tune.Tuner(
        wrapped, param_space=param_space(plan),
        tune_config=TuneConfig(
            metric=METRIC, mode=MODE, search_alg=search_alg(plan), scheduler=scheduler(plan),
            num_samples=1 if plan.configs is not None else cohorts.trials_of(
                plan.trials, cohort_size(plan)),
            # the concurrency limit is inside the search algorithm (`search_alg`)
            trial_dirname_creator=_trial_dirname, reuse_actors=True),
        run_config=RunConfig(
            name=plan.name, storage_path=str(plan.storage.resolve()), verbose=0,
            callbacks=[Events(str(path)), *_loggers()],
            checkpoint_config=CheckpointConfig(
                num_to_keep=4 if plan.strategy.population_based else 1),
            failure_config=FailureConfig(max_failures=plan.max_failures)),
    )


def _loggers() -> list[Callback]:
    """Tune's JSON and CSV result files (`result.json`, `progress.csv`), not its TensorBoard
    event files: nothing reads those, and writing them is a fixed cost of every trial (short
    density-matching trials feel it); `run_search` turns Tune's automatic loggers off."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def storage_of(output: Path) -> Path:
    """Where Tune keeps a search's experiment state and checkpoints: `<output>/ray`."""
    return Path(output) / "ray"


def experiment_path(storage: Path, name: str = EXPERIMENT) -> Path:
    return storage / name


def can_resume(storage: Path, name: str = EXPERIMENT) -> bool:
    return tune.Tuner.can_restore(str(experiment_path(storage, name)))


def run_search(plan: TunePlan, listeners: list[SearchListener],
               resume: bool = False) -> list[TrialOutcome]:
    """Run (or resume) the Tune experiment; every trial comes back as a TrialOutcome."""
    # Trials checkpoint every epoch by design (fault tolerance, PBT); Tune's warning about
    # frequent experiment snapshots is noise for that.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A failing trial reaches the console as one line with the path of its log (the listeners
    # print it), not as Tune's full traceback.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # Tune's own console reporter (its configuration box, its error blocks) would repeat what
    # the Progress listener prints; the legacy reporter is silent at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # see _loggers
    key = str(experiment_path(plan.storage, plan.name))
    LISTENERS[key] = listeners
    quiet = _NoMissingMetrics()
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    analysis.addFilter(quiet)
    try:
        results = _tuner(plan, resume).fit()
        statuses = STATUSES.pop(key, {})  # from Tune's `on_experiment_end` (callbacks.Events)
    finally:
        LISTENERS.pop(key, None)
        STATUSES.pop(key, None)
        analysis.removeFilter(quiet)
    # After Ctrl-C, Tune marks the trials it stopped TERMINATED in memory (its saved state,
    # which a resume reads, keeps them unfinished): a trial short of its last epoch that no
    # scheduler could have stopped was interrupted.
    last_epoch = 0 if plan.early_stop and plan.configs is None else (
        plan.epochs or plan.ctx.space.child.epochs)
    outcomes = []
    for res in results:
        metrics = dict(res.metrics or {})
        trial_id = metrics.get("trial_id") or _trial_id(res.path)
        tune_status = statuses.get(trial_id, "TERMINATED")
        config = flat(res.config or {})
        whole = cohorts.members(config) is None  # a cohort's checkpoint is no member's
        for tid, mine_config, mine in cohorts.expand(trial_id, config, metrics):
            outcomes.append(TrialOutcome(
                tid, mine_config, mine, _status(tune_status, mine, res.error, last_epoch),
                _short_error(res.error) or str(mine.get("error", "")),
                res.checkpoint if whole else None))
    return outcomes


def _trial_id(path: str | None) -> str:
    """A trial's id from its directory (`_trial_dirname`), for a trial that never reported."""
    name = Path(path or "").name
    return name.removeprefix("trial_") if name.startswith("trial_") else ""


class _NoMissingMetrics(logging.Filter):
    """After Ctrl-C, Tune's result grid tries to read every trial's result files, and a trial
    stopped before its first report has none: it logs one FileNotFoundError per such trial.
    Nothing reads those data frames (outcomes come from each result's metrics), and a resume
    runs those trials, so the lines only alarm the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to fetch metrics" not in record.getMessage()


def _status(tune_status: str, metrics: dict[str, Any], error: Any, last_epoch: int) -> str:
    """A trial's (or cohort member's) outcome: error (the trial raised, or the member's own
    work did), diverged, interrupted (unfinished, or short of its last epoch), or ok."""
    if error is not None or tune_status == "ERROR":
        return "error"
    if metrics.get("status") in cohorts.FAILED:
        return str(metrics["status"])
    if tune_status != "TERMINATED" or int(metrics.get("epoch") or 0) < last_epoch:
        return "interrupted"
    return "ok"


def _short_error(error: Any) -> str:
    if error is None:
        return ""
    lines = [ln for ln in str(error).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(error).__name__
