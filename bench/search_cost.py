"""What a scored policy costs: density matching against child training, side by side.

On one local Ray (2 CPUs, 1 per trial, 2 trials at a time), for scikit-learn digits and real
CIFAR-10 (../shared/data/cifar10_small.npz), each at its built-in space's own child budget:

- child training: a TPE search of a few trials (each trains the space's child);
- density matching: the same space with `reward.kind: density_matching`: its fold stage (K child
  trainings) and a TPE search (each trial one scoring pass): 200 trials on digits; on CIFAR-10
  40, projected to 200 (below);
- Tune's fixed cost per trial: trials that do nothing, through the same path (Tune with reused
  actors, the TPE searcher, the driver's event callback and the MLflow record): 40 trials at the
  start of the run, 200 at the end.

Cost is the CPU time of the whole process tree (this driver, Ray's own processes and its
workers), sampled every 0.5 s, per Tune experiment; wall-clock is reported beside it. Policies
scored per CPU-minute in a 200-trial search: child training's measured rate, against
200 / (the fold stage + the 200 trials). Where fewer density-matching trials were run, the 200
are their measured CPU per trial plus how much Tune's fixed cost per trial grows from a 40-trial
to a 200-trial search (TPE's suggestions cost more as trials accumulate). Both kinds search the
same space (batch ops off: density matching cannot score them).

    python bench/search_cost.py            # ~15-20 min on 2 cores
    python bench/search_cost.py --quick    # the whole pipeline at a tiny budget (~3 min)
    python bench/search_cost.py --only digits   # one dataset, printed, not written
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import Sampler, cpu_seconds, process_tree  # noqa: E402
from bench.report import SHARED, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

SECTION = "Search cost: density matching vs child training"
CIFAR = SHARED / "cifar10_small.npz"
PROJECTED_TRIALS = 200
TARGET = 20.0


# ---------------------------------------------------------------- CPU time of the process tree


class TreeCPU(Sampler):
    """CPU seconds used by this process and all its descendants (Ray's processes, workers),
    sampled in a thread: a process that exits keeps its last sample."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(interval)
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()

    def sample(self) -> None:
        found = {}
        for pid in process_tree(os.getpid()):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                found[pid] = seconds
        with self.lock:
            for pid, seconds in found.items():
                self.seen[pid] = max(seconds, self.seen.get(pid, 0.0))

    def total(self) -> float:
        self.sample()
        with self.lock:
            return sum(self.seen.values())


@dataclass
class Phase:
    """One Tune experiment: its trials, CPU seconds (process tree) and wall seconds."""

    name: str
    trials: int
    cpu: float
    wall: float
    score_cpu: list[float] = field(default_factory=list)  # density matching's scoring, CPU s

    @property
    def cpu_per_trial(self) -> float:
        return self.cpu / self.trials

    @property
    def wall_per_trial(self) -> float:
        return self.wall / self.trials


class Phases:
    """Wraps `tune.run_search` to time every Tune experiment a search runs."""

    def __init__(self, meter: TreeCPU) -> None:
        from search import tune

        self.meter = meter
        self.phases: list[Phase] = []
        self._run = tune.run_search

        def timed(plan: Any, listeners: Any, resume: bool = False) -> Any:
            cpu, wall = meter.total(), time.perf_counter()
            outcomes = self._run(plan, listeners, resume)
            self.phases.append(Phase(plan.name, len(outcomes), meter.total() - cpu,
                                     time.perf_counter() - wall,
                                     [float(o.result["score_cpu_seconds"]) for o in outcomes
                                      if "score_cpu_seconds" in o.result]))
            return outcomes

        tune.run_search = timed

    def take(self) -> dict[str, Phase]:
        out = {p.name: p for p in self.phases}
        self.phases.clear()
        return out


# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Budget:
    child_trials: tuple[int, int]  # digits, cifar10
    density_trials: tuple[int, int]
    noop_trials: tuple[int, int]  # at the start, at the end
    epochs: int | None  # None: the space's own
    label: str


FULL = Budget(child_trials=(8, 2), density_trials=(PROJECTED_TRIALS, 40),
              noop_trials=(40, PROJECTED_TRIALS), epochs=None, label="")
QUICK = Budget(child_trials=(2, 2), density_trials=(8, 8), noop_trials=(8, 16), epochs=2,
               label="QUICK DRY RUN (--quick): 2 epochs, figures say nothing about the target")


@dataclass(frozen=True)
class Dataset:
    name: str
    space: Space
    data: str | None
    child_trials: int
    density_trials: int
    note: str


def datasets(b: Budget) -> list[Dataset]:
    digits = load_space("digits").replace(**{"policy.batch_ops": {}})
    out = [Dataset("digits", digits, None, b.child_trials[0], b.density_trials[0],
                   _note("the built-in `digits` space", digits))]
    if CIFAR.exists():
        cifar = load_space("cifar10").replace(**{"policy.batch_ops": {}})
        out.append(Dataset("cifar10", cifar, str(CIFAR), b.child_trials[1], b.density_trials[1],
                           _note("the built-in `cifar10` space on real CIFAR-10 "
                                 "(cifar10_small.npz)", cifar)))
    return out


def _note(what: str, space: Space) -> str:
    d, c = space.dataset, space.child
    return (f"{what}: {d.train_size:,} train images ({d.image_size}x{d.image_size}x"
            f"{d.channels}), validation pool {d.val_pool_size:,}, audit {d.audit_size:,}; "
            f"{c.model} width {c.width}, {c.epochs} epochs, batch {c.batch_size}")


def with_budget(space: Space, b: Budget) -> Space:
    if b.epochs is None:
        return space
    return space.replace(**{"child.epochs": b.epochs, "reward.last_epochs": 1})


def density_space(space: Space) -> Space:
    return space.replace(**{"reward.kind": "density_matching"})


def run_search(space: Space, data: str | None, trials: int, output: Path) -> None:
    from search.api import search

    result = search(space, "tpe", trials=trials, concurrency=2, cpus_per_trial=1, confirm=0,
                    seed=0, data=data, output=output)
    failed = [r for r in result.leaderboard if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} trials failed in {output}: {failed[0]['error']}")


def noop_trainable(config: dict, ctx: Any, splits: Any) -> None:
    from ray import tune

    tune.report({"reward": 0.5, "epoch": 1, "val_accuracy": 0.5, "audit_accuracy": 0.5})


def fixed_cost(trials: int, meter: TreeCPU, phases: Phases, root: Path) -> Phase:
    """Trials that do nothing, through Tune (TPE, reused actors) with the MLflow record."""
    import ray

    from children.datasets import load_dataset, make_splits
    from search import tune
    from search.events import Progress
    from search.prepare.options import SearchOptions
    from search.strategies import get_strategy
    from search.tracking import Tracker
    from search.trials.context import TrialContext

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space = density_space(load_space("digits").replace(**{"policy.batch_ops": {}}))
    splits = make_splits(load_dataset(space.dataset), space.dataset, 0)
    output = Path(tempfile.mkdtemp(dir=root, prefix="noop-"))
    tracker = Tracker.connect(None, None, space, output)
    tracker.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    plan = tune.TunePlan(
        ctx=TrialContext(space, 0), splits=None, strategy=get_strategy("tpe"),
        resources=tune.Resources(1, 0), trials=trials, concurrency=2,
        storage=tune.storage_of(output), seed=0, trainable=noop_trainable, epochs=1)
    tune.run_search(plan, [Progress(trials, stream=open(os.devnull, "w")), tracker])
    tracker.flush()  # the record is part of the cost
    phase = phases.take()["tune"]
    tracker.close()
    return phase


# ---------------------------------------------------------------- the report


@dataclass
class Result:
    dataset: Dataset
    child: Phase
    folds: Phase
    density: Phase
    growth: tuple[float, float] = (0.0, 0.0)  # fixed cost per trial, CPU and wall: 200 - 40

    @property
    def projected(self) -> bool:
        return self.density.trials < PROJECTED_TRIALS

    def per_trial(self) -> tuple[float, float]:
        """Density matching's CPU and wall seconds per trial in a 200-trial search."""
        cpu, wall = self.density.cpu_per_trial, self.density.wall_per_trial
        return (cpu + self.growth[0], wall + self.growth[1]) if self.projected else (cpu, wall)

    def rate_child(self) -> float:
        return 60.0 / self.child.cpu_per_trial

    def rate_density(self) -> float:
        cpu = self.per_trial()[0]
        return PROJECTED_TRIALS / ((self.folds.cpu + PROJECTED_TRIALS * cpu) / 60.0)

    def wall_ratio(self) -> float:
        """The same ratio in wall-clock slot time (2 trials at a time throughout)."""
        wall = self.folds.wall + PROJECTED_TRIALS * self.per_trial()[1]
        return (PROJECTED_TRIALS / wall) / (1.0 / self.child.wall_per_trial)


def tables(results: list[Result], noops: list[Phase]) -> str:
    lines = ["| data | reward | stage | trials | CPU s (process tree) | wall s | CPU s per "
             "trial | wall s per trial (2 at a time) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        name = r.dataset.name
        for kind, stage, p in (("child training", "search", r.child),
                               ("density matching", "fold models (K trainings)", r.folds),
                               ("density matching", "search", r.density)):
            lines.append(f"| {name} | {kind} | {stage} | {p.trials} | {p.cpu:.0f} | "
                         f"{p.wall:.0f} | {p.cpu_per_trial:.2f} | {p.wall_per_trial:.2f} |")
    lines += ["", f"Policies scored per CPU-minute in a {PROJECTED_TRIALS}-trial search, the "
                  f"fold models included for density matching:", "",
              "| data | child training | density matching | ratio (CPU time) | ratio (wall-clock) "
              "| density matching's 200 trials |", "|---|---:|---:|---:|---:|---|"]
    for r in results:
        ratio = r.rate_density() / r.rate_child()
        how = (f"{r.density.trials} measured, projected (+{r.growth[0]:.3f} CPU s per trial)"
               if r.projected else "measured")
        lines.append(f"| {r.dataset.name} | {r.rate_child():.2f} | {r.rate_density():.1f} | "
                     f"**{ratio:.1f}x** | {r.wall_ratio():.1f}x | {how} |")
    lines += ["", "Tune's fixed cost per trial (trials that do nothing; TPE, reused actors, "
                  "the MLflow record):", "", "| when | trials | CPU s per trial | wall s per "
                  "trial (2 at a time) |", "|---|---:|---:|---:|"]
    for when, p in zip(("start of the run", "end of the run"), noops, strict=False):
        lines.append(f"| {when} | {p.trials} | {p.cpu_per_trial:.3f} | {p.wall_per_trial:.3f} |")
    return "\n".join(lines)


def conclusions(results: list[Result], noops: list[Phase]) -> list[str]:
    out = []
    for r in results:
        ratio = r.rate_density() / r.rate_child()
        verdict = "met" if ratio >= TARGET else "NOT met"
        basis = (f"**projected** from {r.density.trials} measured density-matching trials and "
                 f"{r.child.trials} child trainings" if r.projected else
                 f"measured: {r.density.trials} density-matching trials against "
                 f"{r.child.trials} child trainings")
        if r.projected:
            verdict += ", projected"
        score = statistics.mean(r.density.score_cpu) if r.density.score_cpu else 0.0
        overhead = r.density.cpu_per_trial - score
        out.append(
            f"- {r.dataset.name}: a child-training trial costs {r.child.cpu_per_trial:.1f} CPU "
            f"s, a density-matching trial {r.density.cpu_per_trial:.2f} CPU s ({score:.2f} s of "
            f"it scoring the policy in the trial, {overhead:.2f} s everything else: Tune, the "
            f"searcher, the MLflow record, Ray); the fold models cost {r.folds.cpu:.0f} CPU s "
            f"({r.folds.cpu / r.child.cpu_per_trial:.1f} child-training trials). For "
            f"{PROJECTED_TRIALS} trials density matching scores **{ratio:.1f}x** the policies "
            f"per CPU-minute ({basis}; one run, no interval) (target >= {TARGET:g}x: "
            f"**{verdict}**).")
    if len(noops) == 2:
        out.append(f"- Tune's fixed cost, trials that do nothing: {noops[0].cpu_per_trial:.3f} "
                   f"CPU s per trial over {noops[0].trials} trials, {noops[1].cpu_per_trial:.3f} "
                   f"over {noops[1].trials} (the searcher's suggestions grow with the trials).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["digits", "cifar10"],
                        help="measure one dataset; the figures are printed, not written")
    args = parser.parse_args()
    b = QUICK if args.quick else FULL
    import ray

    from search.tune import WORKER_ENV

    load_start, started = os.getloadavg(), time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(WORKER_ENV)})
    results, noops = [], []
    root = Path(tempfile.mkdtemp(prefix="search-cost-"))
    with TreeCPU() as meter:
        phases = Phases(meter)
        noops.append(fixed_cost(b.noop_trials[0], meter, phases, root))
        for d in [d for d in datasets(b) if args.only in (None, d.name)]:
            space = with_budget(d.space, b)
            print(f"[bench] {d.name}: child training, {d.child_trials} trials", flush=True)
            run_search(space, d.data, d.child_trials, root / f"{d.name}-child")
            child = phases.take()["tune"]
            print(f"[bench] {d.name}: density matching, {d.density_trials} trials", flush=True)
            run_search(density_space(space), d.data, d.density_trials, root / f"{d.name}-dm")
            dm = phases.take()
            results.append(Result(d, child, dm["folds"], dm["tune"]))
            print(tables(results[-1:], []), flush=True)
        noops.append(fixed_cost(b.noop_trials[1], meter, phases, root))
    ray.shutdown()
    growth = (noops[1].cpu_per_trial - noops[0].cpu_per_trial,
              noops[1].wall_per_trial - noops[0].wall_per_trial)
    for r in results:
        r.growth = (max(0.0, growth[0]), max(0.0, growth[1]))
    minutes = (time.perf_counter() - started) / 60
    body = [(f"**{b.label}**\n\n" if b.label else "")
            + f"`python bench/search_cost.py{' --quick' if args.quick else ''}` — {machine()}, "
            f"Ray 2 CPUs, 1 CPU per trial, 2 trials at a time, TPE, no confirmation; "
            f"{minutes:.0f} min; load average {load_start[0]:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (the machine is shared).", ""]
    body += [f"- {r.dataset.name}: {r.dataset.note}; density matching with its defaults "
             f"({json.dumps(density_space(r.dataset.space).reward.matching().model_dump())})."
             for r in results]
    body += ["", tables(results, noops), "", *conclusions(results, noops)]
    if args.only is None:
        write_section(SECTION, "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
