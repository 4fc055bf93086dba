"""What a scored policy costs: density matching against child training, side by side.

On one local Ray (2 CPUs, 1 per trial, 2 trials at a time), for scikit-learn digits and real
CIFAR-10 (../shared/data/cifar10_small.npz), each at its built-in space's own child budget:

- child training: a TPE search of a few trials (each trains the space's child);
- density matching: the same space with `reward.kind: density_matching`: its fold stage (K child
  trainings) and a TPE search of many trials (each one scoring pass);
- Tune's fixed cost per trial: trials that do nothing, through the same path (Tune with reused
  actors, the TPE searcher, the driver's event callback and the MLflow record), at the start and
  at the end of the run.

Cost is the CPU time of the whole process tree (this driver, Ray's own processes and its
workers), sampled every 0.5 s, per Tune experiment; wall-clock is reported beside it. Policies
scored per CPU-minute for a 200-trial search: child training's measured rate, against
200 / (the fold stage + 200 x density matching's measured CPU per trial). Both kinds search the
same space (batch ops off: density matching cannot score them).

    python bench/search_cost.py            # ~15-20 min on 2 cores
    python bench/search_cost.py --quick    # the whole pipeline at a tiny budget (~3 min)
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

from bench.report import SHARED, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

SECTION = "Search cost: density matching vs child training"
CIFAR = SHARED / "cifar10_small.npz"
PROJECTED_TRIALS = 200
TARGET = 20.0
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- CPU time of the process tree


class TreeCPU:
    """CPU seconds used by this process and all its descendants (Ray's processes, workers),
    sampled in a thread: a process that exits keeps its last sample."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        todo, found = [os.getpid()], {}
        while todo:
            pid = todo.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                found[pid] = (int(fields[11]) + int(fields[12])) / TICK
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
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
    score_seconds: list[float] = field(default_factory=list)  # density matching's own work

    @property
    def cpu_per_trial(self) -> float:
        return self.cpu / self.trials

    @property
    def wall_per_trial(self) -> float:
        return self.wall / self.trials


class Phases:
    """Wraps `tune_adapter.run_search` to time every Tune experiment a search runs."""

    def __init__(self, meter: TreeCPU) -> None:
        from search import tune_adapter

        self.meter = meter
        self.phases: list[Phase] = []
        self._run = tune_adapter.run_search

        def timed(plan: Any, listeners: Any, resume: bool = False) -> Any:
            cpu, wall = meter.total(), time.perf_counter()
            outcomes = self._run(plan, listeners, resume)
            self.phases.append(Phase(plan.name, len(outcomes), meter.total() - cpu,
                                     time.perf_counter() - wall,
                                     [float(o.result.get("score_seconds", 0.0))
                                      for o in outcomes if "score_seconds" in o.result]))
            return outcomes

        tune_adapter.run_search = timed

    def take(self) -> dict[str, Phase]:
        out = {p.name: p for p in self.phases}
        self.phases.clear()
        return out


# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Budget:
    child_trials: int
    density_trials: int
    noop_trials: int
    epochs: int | None  # None: the space's own
    label: str


FULL = Budget(child_trials=4, density_trials=40, noop_trials=48, epochs=None, label="")
QUICK = Budget(child_trials=2, density_trials=8, noop_trials=8, epochs=2,
               label="QUICK DRY RUN (--quick): 2 epochs, figures say nothing about the target")


@dataclass(frozen=True)
class Dataset:
    name: str
    space: Space
    data: str | None
    child_trials: int
    note: str


def datasets(b: Budget) -> list[Dataset]:
    digits = load_space("digits").replace(**{"policy.batch_ops": {}})
    out = [Dataset("digits", digits, None, b.child_trials,
                   "the built-in `digits` space: 200 train images (16x16 gray), basiccnn "
                   "width 32, 40 epochs, audit 500")]
    if CIFAR.exists():
        cifar = load_space("cifar10").replace(**{
            "policy.batch_ops": {}, "dataset.train_size": 1000, "dataset.val_pool_size": 500,
            "dataset.audit_size": 500, "reward.val_sample_size": 500})
        out.append(Dataset("cifar10", cifar, str(CIFAR), max(2, b.child_trials // 2),
                           "the built-in `cifar10` space on real CIFAR-10 (cifar10_small.npz) "
                           "with its splits cut to 1,000 train images (the issue's example), "
                           "validation sample 500, audit 500; basiccnn width 32, 40 epochs"))
    return out


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
    from search import tune_adapter
    from search.events import Progress
    from search.options import SearchOptions
    from search.strategies import get_strategy
    from search.tracking import Tracker
    from search.trial import TrialContext

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space = density_space(load_space("digits").replace(**{"policy.batch_ops": {}}))
    splits = make_splits(load_dataset(space.dataset), space.dataset, 0)
    output = Path(tempfile.mkdtemp(dir=root, prefix="noop-"))
    tracker = Tracker.connect(None, None, space, output)
    tracker.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    plan = tune_adapter.TunePlan(
        ctx=TrialContext(space, 0), splits=None, strategy=get_strategy("tpe"),
        resources=tune_adapter.Resources(1, 0), trials=trials, concurrency=2,
        storage=tune_adapter.storage_of(output), seed=0, trainable=noop_trainable, epochs=1)
    tune_adapter.run_search(plan, [Progress(trials, stream=open(os.devnull, "w")), tracker])
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

    def rate_child(self) -> float:
        return 60.0 / self.child.cpu_per_trial

    def rate_density(self, trials: int = PROJECTED_TRIALS) -> float:
        return trials / ((self.folds.cpu + trials * self.density.cpu_per_trial) / 60.0)

    def wall_rate(self, kind: str, trials: int = PROJECTED_TRIALS) -> float:
        """Policies per slot-minute (wall-clock x the 2 slots)."""
        if kind == "child":
            return 60.0 / (2 * self.child.wall_per_trial)
        return trials / (2 * (self.folds.wall + trials * self.density.wall_per_trial) / 60.0)

    def measured_density_rate(self) -> float:
        return self.density.trials / ((self.folds.cpu + self.density.cpu) / 60.0)


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
    lines += ["", f"Policies scored per CPU-minute, {PROJECTED_TRIALS}-trial search, fold "
                  f"training included for density matching:", "",
              "| data | child training | density matching | ratio | ratio, wall-clock slots | "
              f"density matching, measured ({results[0].density.trials if results else 0} "
              "trials + folds) |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = r.rate_density() / r.rate_child()
        wall = r.wall_rate("density") / r.wall_rate("child")
        lines.append(f"| {r.dataset.name} | {r.rate_child():.2f} | {r.rate_density():.1f} | "
                     f"**{ratio:.1f}x** | {wall:.1f}x | {r.measured_density_rate():.1f} |")
    lines += ["", "Tune's fixed cost per trial (trials that do nothing; TPE, reused actors, "
                  "the MLflow record):", "", "| when | trials | CPU s per trial | wall s per "
                  "trial (2 at a time) |", "|---|---:|---:|---:|"]
    for when, p in zip(("start", "end"), noops, strict=False):
        lines.append(f"| {when} | {p.trials} | {p.cpu_per_trial:.3f} | {p.wall_per_trial:.3f} |")
    return "\n".join(lines)


def conclusions(results: list[Result], noops: list[Phase]) -> list[str]:
    out = []
    for r in results:
        ratio = r.rate_density() / r.rate_child()
        verdict = "met" if ratio >= TARGET else "NOT met"
        score = statistics.mean(r.density.score_seconds) if r.density.score_seconds else 0.0
        overhead = r.density.cpu_per_trial - score
        out.append(
            f"- {r.dataset.name}: a child-training trial costs {r.child.cpu_per_trial:.1f} CPU "
            f"s, a density-matching trial {r.density.cpu_per_trial:.2f} CPU s ({score:.2f} s of "
            f"it scoring the policy in the trial, {overhead:.2f} s everything else: Tune, the "
            f"searcher, the MLflow record, Ray); the fold models cost {r.folds.cpu:.0f} CPU s "
            f"({r.folds.cpu / r.child.cpu_per_trial:.1f} child-training trials). For "
            f"{PROJECTED_TRIALS} trials density matching scores **{ratio:.1f}x** the policies "
            f"per CPU-minute (target >= {TARGET:g}x: **{verdict}**).")
    if noops:
        mean = statistics.mean(p.cpu_per_trial for p in noops)
        out.append(f"- Tune's fixed cost, trials that do nothing: {mean:.3f} CPU s per trial "
                   f"(mean of {len(noops)} measurements).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    b = QUICK if args.quick else FULL
    import ray

    from search.tune_adapter import WORKER_ENV

    load_start, started = os.getloadavg(), time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(WORKER_ENV)})
    results, noops = [], []
    root = Path(tempfile.mkdtemp(prefix="search-cost-"))
    with TreeCPU() as meter:
        phases = Phases(meter)
        noops.append(fixed_cost(b.noop_trials, meter, phases, root))
        for d in datasets(b):
            space = with_budget(d.space, b)
            print(f"[bench] {d.name}: child training, {d.child_trials} trials", flush=True)
            run_search(space, d.data, d.child_trials, root / f"{d.name}-child")
            child = phases.take()["tune"]
            print(f"[bench] {d.name}: density matching, {b.density_trials} trials", flush=True)
            run_search(density_space(space), d.data, b.density_trials, root / f"{d.name}-dm")
            dm = phases.take()
            results.append(Result(d, child, dm["folds"], dm["tune"]))
            print(tables(results[-1:], []), flush=True)
        noops.append(fixed_cost(b.noop_trials, meter, phases, root))
    ray.shutdown()
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
    write_section(SECTION, "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
