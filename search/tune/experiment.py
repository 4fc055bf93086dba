"""The Ray Tune adapter: the only module that imports `ray.tune`.

Ray renamed its report/checkpoint API several times; keeping every call here means the next
rename touches one file. Everything else in augsearch speaks in plain Python objects.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, Checkpoint, CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator

from search import cohort
from search.errors import SearchError
from search.events import SearchListener
from search.strategies import Strategy
from search.trial import Checkpointed, TrialContext, run_child
from search.trials.config import (
    TrialConfig,
    cohort_config,
    decode,
    encode,
    fixed_runs,
    flat,
    with_fields,
)

METRIC, MODE = "reward", "max"
EXPERIMENT = "tune"
STATE_FILE = "trial_state.pkl"
WORKER_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


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
    # reward kind's `trial`; default `search.trial.run_child`), run by `trainable` below
    trainable: Callable[..., None] | None = None  # in place of `trainable` (tests swap it)
    references: bool = True  # the first trials are the reference arms (search.references)
    configs: list[dict[str, Any]] | None = None  # fixed configs to run instead of searching
    name: str = "tune"  # the Tune experiment's name under `storage`
    shared: dict[str, Any] = field(default_factory=dict)  # more trainable arguments, put in
    # Ray's object store once (density matching's fold models)
    epochs: int | None = None  # epochs a finished trial has reported (default child.epochs)
    cohort: int | None = None  # members per Tune trial (default: the space's search.cohort
    # for our trainable, 1 for one swapped in)


# ---------------------------------------------------------------- Ray lifecycle and resources


@dataclass(frozen=True)
class Connection:
    started: bool  # this process started Ray, and so owns its shutdown
    cluster: bool  # attached to a cluster by address, whose autoscaler may add nodes


PROBE_TIMEOUT_S = 5.0


def cluster_address(address: str | None) -> str | None:
    """The cluster to attach to: --address, else RAY_ADDRESS (set inside a Ray job)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds when nothing listens at HOST:PORT.

    `ray.init` retries an unreachable address for minutes and ignores SIGTERM meanwhile; a plain
    TCP connection says at once whether anything is there. `auto` is left to Ray, which fails
    at once when no cluster runs on this machine.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SearchError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; "
                          f"pass the address `ray start --head` printed")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (
            err.strerror or type(err).__name__).lower()
        raise SearchError(f"cannot reach the Ray cluster at {address} ({reason} within "
                          f"{timeout:g} s); start it with 'ray start --head' or drop --address "
                          f"to run locally") from None


def connect(address: str | None) -> Connection:
    """Attach to a running Ray (address, or RAY_ADDRESS inside a Ray job) or start a local one.

    A local Ray gets the CPU count Ray itself detects, which honours cgroup (container) limits
    where `os.cpu_count()` does not.
    """
    address = cluster_address(address)
    if ray.is_initialized():
        return Connection(started=False, cluster=bool(address))
    env = {"env_vars": dict(WORKER_ENV)}
    try:
        if address:
            probe_address(address)
            ray.init(address=address, runtime_env=env, log_to_driver=False)
            return Connection(started=False, cluster=True)
        ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
    except ConnectionError as err:
        raise SearchError(f"cannot reach the Ray cluster at {address!r} ({_first_line(err)}); "
                          f"start it with 'ray start --head' or drop --address to run "
                          f"locally") from None
    return Connection(started=True, cluster=False)


def shutdown() -> None:
    ray.shutdown()


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def local_node() -> dict[str, float]:
    """What a local Ray would have, without starting it: Ray's own CPU and GPU detection."""
    from ray._private import accelerators, utils

    gpus = 0
    manager = accelerators.get_accelerator_manager_for_resource("GPU")
    if manager is not None:
        gpus = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        if visible is not None:
            gpus = min(gpus, len(visible))
    return {"CPU": float(utils.get_num_cpus()), "GPU": float(gpus)}


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _shortfall(res: Resources, nodes: list[dict[str, float]]) -> str:
    """Why none of `nodes` can run one trial ('' if one can)."""
    if any(n.get("CPU", 0.0) >= res.cpus and n.get("GPU", 0.0) >= min(res.gpus, 1.0)
           for n in nodes):
        return ""
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if res.gpus > 0 and gpus == 0:
        return (f"--gpus-per-trial {res.gpus:g} asks for GPUs but this Ray cluster has none; "
                f"use --gpus-per-trial 0 or connect to a GPU cluster with --address")
    biggest = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    return (f"no node has {res.cpus:g} CPUs and {res.gpus:g} GPUs for one trial (the largest "
            f"has {biggest:g} CPUs); lower --cpus-per-trial / --gpus-per-trial")


def precheck_resources(res: Resources, address: str | None) -> None:
    """Before Ray starts: refuse what a local Ray could never run.

    A cluster (--address or RAY_ADDRESS) is checked once attached, since its autoscaler may
    add nodes (`check_resources`).
    """
    if cluster_address(address):
        return
    nodes = _alive_nodes() if ray.is_initialized() else [local_node()]
    problem = _shortfall(res, nodes)
    if problem:
        raise SearchError(problem)


def check_resources(res: Resources, cluster: bool, wait_s: float = 600.0) -> None:
    """Refuse requests Ray could never satisfy (Tune would otherwise wait forever).

    On a local Ray we started, a shortfall is final. On an attached cluster the autoscaler may
    add nodes (GPU workers that scale from zero): ask it for one trial's worth and wait.
    """
    problem = _shortfall(res, _alive_nodes())
    if not problem:
        return
    if not cluster:
        raise SearchError(problem)
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus else {})}
    print(f"[augsearch] waiting up to {wait_s:.0f} s for the autoscaler to add a node with "
          f"{bundle}", flush=True)
    request_resources(bundles=[bundle])
    deadline = time.monotonic() + wait_s
    try:
        while problem and time.monotonic() < deadline:
            time.sleep(10)
            problem = _shortfall(res, _alive_nodes())
    finally:
        request_resources(bundles=[])  # pending trials keep the nodes wanted from here on
    if problem:
        raise SearchError(f"{problem} (waited {wait_s:.0f} s for the autoscaler; check "
                          f"`ray status`)")


def current_node_id() -> str:
    return ray.get_runtime_context().get_node_id()


# ---------------------------------------------------------------- the trainable


def load_checkpoint() -> Checkpointed | None:
    """The trial's checkpoint after a retry, a restore or a PBT exploit (None on a fresh start)."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d, open(os.path.join(d, STATE_FILE), "rb") as f:
        return pickle.load(f)


def report_epoch(metrics: dict[str, Any], saved: Checkpointed | None) -> None:
    """Report one epoch's metrics to Tune with a checkpoint of the trial's state (none for a
    trial with nothing to resume, such as a one-report trial or a diverged child)."""
    metrics = {**metrics, "node_id": current_node_id()}
    if saved is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, STATE_FILE), "wb") as f:
            pickle.dump(saved, f)
        tune.report(metrics, checkpoint=Checkpoint.from_directory(d))


def final_state(outcome: TrialOutcome) -> Checkpointed:
    """What a finished trial saved in its last checkpoint."""
    with outcome.checkpoint.as_directory() as d, open(os.path.join(d, STATE_FILE), "rb") as f:
        return pickle.load(f)


def trainable(config: dict[str, Any], ctx: TrialContext, splits: Any,
              trial: Callable[..., Any] | None = None, **shared: Any) -> None:
    """The Tune function trainable: the plan's trial (a reward kind's; by default one child
    training, or one cohort's, `search.trial.run_child`), reporting through Tune, resumed from
    its last checkpoint after a retry, a restore or a PBT exploit."""
    run = trial or run_child
    run(flat(config), ctx, splits, report=report_epoch, restored=load_checkpoint(), **shared)


# ---------------------------------------------------------------- strategies -> Tune objects


def _search_alg(plan: TunePlan) -> Any:
    """The search algorithm, wrapped so that its snapshots reach Tune's synced directory only
    as whole files (`_WholeSnapshots`), with the concurrency limit Tune would have added."""
    size = _cohort_size(plan)
    limit = cohort.trials_of(plan.concurrency, size) if plan.concurrency else 0
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


def _cohort_size(plan: TunePlan) -> int:
    """Members per Tune trial: the plan's, else the space's `search.cohort` for our trainable
    (a reward kind whose trial is no child training sets 1)."""
    if plan.cohort is not None:
        return plan.cohort
    return plan.ctx.space.search.cohort if plan.trainable is None else 1


def _searcher(plan: TunePlan) -> Searcher:
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search.compile import define_by_run
    from search.references import BASE, identity_config, reference_policies

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
    from search.pbt import initial_population
    from search.references import BASE, identity_config

    population = initial_population(plan.ctx.space, plan.trials, plan.seed)
    identity = identity_config(plan.ctx.space) if plan.references else None
    if identity and population:  # PBA starts from the base; so does one member here
        population[0] = with_fields({**population[0], **identity}, reference=BASE)
    return [{**member, **plan.extra_config} for member in population]


class _ReferencesFirst(Searcher):
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

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class _Cohorts(Searcher):
    """Cohort trials of up to `size` members, each member one suggestion of the wrapped
    searcher under its own trial id (`cohort.member_id`), told its own result; `total` member
    trials in all."""

    def __init__(self, inner: Searcher, size: int, total: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.size, self.left = inner, size, total
        self.ids: dict[str, list[str]] = {}

    def set_search_properties(self, metric: Any, mode: Any, config: dict[str, Any],
                              **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        configs, ids = [], []
        for k in range(min(self.size, self.left)):
            config = self.inner.suggest(cohort.member_id(trial_id, k))
            if config is None or config == Searcher.FINISHED:
                break
            configs.append(config)
            ids.append(cohort.member_id(trial_id, k))
        if not configs:
            return None
        self.left -= len(configs)
        self.ids[trial_id] = ids
        return cohort_config(configs)

    def _members(self, trial_id: str, result: dict[str, Any] | None
                 ) -> list[tuple[str, dict[str, Any] | None]]:
        ids = self.ids.get(trial_id, [])
        return list(zip(ids, cohort.member_results(result, len(ids)), strict=True))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        for mid, mine in self._members(trial_id, result):
            if mine is not None:
                self.inner.on_trial_result(mid, mine)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        for mid, mine in self._members(trial_id, result):
            self.inner.on_trial_complete(mid, result=mine, error=error or mine is None)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


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


def _scheduler(plan: TunePlan) -> Any:
    epochs = plan.ctx.space.child.epochs
    if plan.configs is not None:  # fixed runs are trained in full
        return None
    if plan.strategy.population_based:
        from ray.tune.schedulers import PopulationBasedTraining

        from search.pbt import Explore

        interval = _aligned(plan, epochs // 5)
        return PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=interval,
            burn_in_period=interval, hyperparam_mutations={},
            custom_explore_fn=Explore(plan.ctx.space, plan.seed),
            quantile_fraction=0.25, synch=False)
    if plan.early_stop:
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                             grace_period=_aligned(plan, epochs // 4), reduction_factor=2)
    return None


def _aligned(plan: TunePlan, epochs: int) -> int:
    """`epochs` rounded down to a multiple of the validation interval (at least one interval),
    so a scheduler's decisions (PBT's perturbations, ASHA's rungs) read a fresh reward."""
    step = plan.ctx.space.reward.interval(plan.ctx.space.child.epochs)
    return step * max(1, epochs // step)


def _param_space(plan: TunePlan) -> dict[str, Any]:
    """Tune's param space: the fixed runs as a grid, PBT's dimensions (whose seeded population
    comes as points to evaluate), or nothing for define-by-run searchers."""
    if plan.configs is not None:
        size = _cohort_size(plan)
        runs = ([dict(c) for c in plan.configs] if size == 1 else
                cohort.pack(plan.configs, size))
        return {**fixed_runs(tune.grid_search(runs)), **plan.extra_config}
    if not plan.strategy.population_based:
        return dict(plan.extra_config)
    from search.compile import flat_dimensions
    from search.references import BASE

    dims = {d.name: tune.choice(list(d.choices)) if d.categorical else tune.uniform(d.low, d.high)
            for d in flat_dimensions(plan.ctx.space)}
    return {**with_fields(dims, reference=tune.choice(["", BASE])), **plan.extra_config}


# ---------------------------------------------------------------- events and running


# Listeners of the search running in this driver, by experiment path. Tune pickles its callbacks
# into the experiment state, so the callback holds only the key and finds its listeners here,
# which also lets a resumed search attach fresh listeners.
_LISTENERS: dict[str, list[SearchListener]] = {}


class _Events(Callback):
    """Forwards Tune's driver-side events to plain listeners (progress, MLflow)."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def listeners(self) -> list[SearchListener]:
        return _LISTENERS.get(self.key, [])

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        for tid, config, mine in _trials(trial, result):
            for listener in self.listeners:
                listener.trial_result(tid, config, mine)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, config, mine in _trials(trial, trial.last_result):
            for listener in self.listeners:
                listener.trial_complete(tid, config, mine)

    def on_trial_recover(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, _config, _mine in _trials(trial, None):
            for listener in self.listeners:
                retry = getattr(listener, "trial_retry", None)  # optional for plain listeners
                if retry is not None:
                    retry(tid, _error_text(trial))

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, config, _mine in _trials(trial, None):
            for listener in self.listeners:
                listener.trial_error(tid, config, _error_text(trial))


def _trials(trial: Any, result: dict[str, Any] | None
            ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The trials a Tune trial stands for (a cohort's members, or itself), with their results."""
    return cohort.expand(trial.trial_id, flat(trial.config), dict(result or {}))


def _error_text(trial: Any) -> str:
    """One line: the exception that ended the trial, then where its full traceback is kept.

    Tune writes the log into its driver staging directory first (readable now) and copies it to
    the trial's directory in the experiment storage (`<output>/ray/tune/trial_<id>/`), which
    outlives the Ray session: that is the path users are given.
    """
    staged = getattr(trial, "error_file", None)
    if not staged or not os.path.exists(staged):
        return "error (Tune kept no log)"
    lines = [ln for ln in Path(staged).read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip()[:300] if lines else "error"
    kept = Path(trial.path) / Path(staged).name if getattr(trial, "path", None) else staged
    return f"{last}; full log: {kept}"


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
        wrapped, param_space=_param_space(plan),
        tune_config=TuneConfig(
            metric=METRIC, mode=MODE, search_alg=_search_alg(plan), scheduler=_scheduler(plan),
            num_samples=1 if plan.configs is not None else cohort.trials_of(
                plan.trials, _cohort_size(plan)),
            # the concurrency limit is inside the search algorithm (`_search_alg`)
            trial_dirname_creator=_trial_dirname, reuse_actors=True),
        run_config=RunConfig(
            name=plan.name, storage_path=str(plan.storage.resolve()), verbose=0,
            callbacks=[_Events(str(path)), *_loggers()],
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
    _LISTENERS[key] = listeners
    try:
        results = _tuner(plan, resume).fit()
    finally:
        _LISTENERS.pop(key, None)
    # Tune's ResultGrid keeps each trial's status only on its (private) analysis object; read
    # it here, in the one module that knows Tune, with a safe default.
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None) or []
    # After Ctrl-C, Tune marks the trials it stopped TERMINATED in memory (its saved state,
    # which a resume reads, keeps them unfinished): a trial short of its last epoch that no
    # scheduler could have stopped was interrupted.
    last_epoch = 0 if plan.early_stop and plan.configs is None else (
        plan.epochs or plan.ctx.space.child.epochs)
    outcomes = []
    for k, res in enumerate(results):
        trial = trials[k] if k < len(trials) else None
        metrics = dict(res.metrics or {})
        tune_status = getattr(trial, "status", "TERMINATED")
        trial_id = metrics.get("trial_id") or getattr(trial, "trial_id", "")
        config = flat(res.config or {})
        whole = cohort.members(config) is None  # a cohort's checkpoint is no member's
        for tid, mine_config, mine in cohort.expand(trial_id, config, metrics):
            status = _status(tune_status, mine, res.error, last_epoch)
            outcomes.append(TrialOutcome(
                tid, mine_config, mine, status,
                _short_error(res.error) or str(mine.get("error", "")),
                res.checkpoint if whole else None))
    return outcomes


def _status(tune_status: str, metrics: dict[str, Any], error: Any, last_epoch: int) -> str:
    if error is not None or tune_status == "ERROR":
        return "error"
    if metrics.get("status") == "diverged":
        return "diverged"
    if tune_status != "TERMINATED" or int(metrics.get("epoch") or 0) < last_epoch:
        return "interrupted"
    return "ok"


def _short_error(error: Any) -> str:
    if error is None:
        return ""
    lines = [ln for ln in str(error).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(error).__name__
