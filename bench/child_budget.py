"""Does each built-in space's child budget sit where augmentation pays?

A search can only find useful policies if its child overfits without augmentation; a child that
is too small or trained too briefly rewards weak policies, and the search finds the identity.
For each built-in space whose data is available here, this trains the space's child (its model,
width, epochs, optimiser, train subset) with no augmentation at all and with the space's base
crop(+flip), over several seeds, side by side (the same seed gives both arms the same initial
weights and batch order, so the difference pairs up by seed). Reported: the audit accuracy of
each arm, the paired gain of the base with its Student-t 95% CI, the train-val gap, and what a
default search over the space costs on this machine's CPUs.

    python bench/child_budget.py [--seeds 3] [--spaces digits,cifar10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402
from spaces.schema import BaseAug, Space, builtin_spaces, load_space  # noqa: E402

TARGET_GAIN = 0.02  # crop/flip must beat no augmentation by 2 audit points, CI above 0
# Where the machine has no copy of a built-in dataset: real stand-ins from ../shared/data.
STAND_INS = {"cifar10": "cifar10_small.npz"}
ARMS = ("none", "base")


@dataclass(frozen=True)
class Job:
    space: Space
    data: str | None
    arm: str
    seed: int


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    audit: float
    reward: float
    gap: float
    seconds: float


def train(job: Job) -> Run:
    """One child training with the identity policy, on one thread."""
    import torch

    from children.datasets import load_dataset, make_splits
    from children.train import train_child
    from spaces.policy import identity_policy

    torch.set_num_threads(1)
    space = job.space
    splits = make_splits(load_dataset(space.dataset, data=job.data, download=False),
                         space.dataset, seed=0)
    base = space.child.base_augmentation if job.arm == "base" else BaseAug(crop=False,
                                                                             flip=False)
    child = space.child.model_copy(update={"base_augmentation": base})
    started = time.perf_counter()
    m = train_child(child, space.reward, identity_policy(), splits, seed=job.seed, threads=1)
    return Run(job.arm, job.seed, m.audit_accuracy, m.reward, m.train_val_gap,
               time.perf_counter() - started)


def source(name: str) -> tuple[str | None, str] | None:
    """(data path or None, description) for a space, or None when no data is available."""
    if name == "digits":
        return None, "built-in"
    stand_in = STAND_INS.get(name)
    if stand_in and (SHARED / stand_in).exists():
        return str(SHARED / stand_in), f"{stand_in} (real CIFAR-10, Krizhevsky 2009)"
    return None


def measure(space: Space, data: str | None, seeds: int, workers: int) -> list[Run]:
    jobs = [Job(space, data, arm, seed) for seed in range(seeds) for arm in ARMS]
    with ProcessPoolExecutor(workers) as pool:
        runs = list(pool.map(train, jobs))
    for r in runs:
        print(f"{space.name} seed {r.seed} {r.arm}: audit {r.audit:.4f} reward {r.reward:.4f} "
              f"gap {r.gap:+.3f} ({r.seconds:.0f} s)", file=sys.stderr, flush=True)
    return runs


def search_minutes(space: Space, seconds: float, cpus: int) -> tuple[int, float]:
    """Child trainings of a default search (trials + confirmation) and its wall minutes here."""
    from search.stages.confirm import DEFAULT_REPLICATES, DEFAULT_TOP

    trainings = space.search.trials + (DEFAULT_TOP + 1) * DEFAULT_REPLICATES
    per_cpu = space.search.cpus_per_trial
    slots = max(1, int(cpus // per_cpu))
    return trainings, trainings * seconds / slots / 60


def rows_for(space: Space, described: str, runs: list[Run]) -> tuple[list[str], str]:
    from search.evaluate.statistics import paired
    from search.stats import estimate

    by = {(r.arm, r.seed): r for r in runs}
    seeds = sorted({r.seed for r in runs})
    gain = paired([by[("base", s)].audit for s in seeds], [by[("none", s)].audit for s in seeds])
    c, d = space.child, space.dataset
    seconds = statistics.mean(r.seconds for r in runs if r.arm == "base")
    trainings, minutes = search_minutes(space, seconds, os.cpu_count() or 1)
    head = (f"| {space.name} | {described}, train {d.train_size} | {c.model} w{c.width}, "
            f"{c.epochs} ep, batch {c.batch_size} |")
    lines = []
    for arm in ARMS:
        rs = [by[(arm, s)] for s in seeds]
        audit = estimate([r.audit for r in rs])
        lines.append(f"{head} {_arm(space, arm)} | {audit.mean:.4f} ± {audit.std:.4f} | "
                     f"{statistics.mean(r.gap for r in rs):+.3f} | | |")
    pays = gain.mean >= TARGET_GAIN and gain.ci_low > 0
    lines.append(f"{head} **gain of the base** | **{gain.mean:+.4f}** [{gain.ci_low:+.4f}, "
                 f"{gain.ci_high:+.4f}] | | {seconds:.0f} s | {trainings} × → "
                 f"{minutes:.0f} min |")
    why = ("pays" if pays else "does NOT pay: " + (
        f"the gain {gain.mean:+.4f} is below {TARGET_GAIN:.2f}" if gain.mean < TARGET_GAIN
        else f"the 95% CI [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}] contains 0"))
    verdict = (f"- {space.name}: crop/flip vs none {gain.mean:+.4f} audit accuracy over "
               f"{len(seeds)} seeds (95% CI [{gain.ci_low:+.4f}, {gain.ci_high:+.4f}]): "
               f"target (≥ {TARGET_GAIN:+.2f}, CI above 0) **{why}**. A default search "
               f"({space.search.trials} trials + confirmation, {trainings} trainings of "
               f"~{seconds:.0f} s on 1 thread) would take ~{minutes:.0f} min on "
               f"{os.cpu_count()} idle CPUs (projected from the training time, not measured).")
    return lines, verdict


def _arm(space: Space, arm: str) -> str:
    if arm == "none":
        return "none (no augmentation)"
    b = space.child.base_augmentation
    parts = ([f"crop pad {b.crop_padding}"] if b.crop else []) + (["flip"] if b.flip else [])
    return "base: " + (" + ".join(parts) or "nothing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    supervised = [n for n in builtin_spaces()  # a self-supervised space trains no classifier
                  if load_space(n).reward.kind == "child_training"]
    parser.add_argument("--spaces", default=",".join(supervised))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = ["| space | data | child | augmentation | audit accuracy (mean ± sd) | train-val gap "
             "| s per training (1 thread) | search cost here |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    verdicts, missing = [], []
    for name in args.spaces.split(","):
        found = source(name)
        if found is None:
            missing.append(name)
            continue
        space = load_space(name)
        rows, verdict = rows_for(space, found[1], measure(space, found[0], args.seeds,
                                                          args.workers))
        lines += rows
        verdicts.append(verdict)
    minutes = (time.perf_counter() - started) / 60
    note = (f"- Unmeasured (no copy of the dataset on this offline machine): "
            f"{', '.join(missing)}." if missing else "")
    body = "\n".join([
        f"`python bench/child_budget.py --seeds {args.seeds}` — each built-in space's own child "
        f"and budget, identity policy, no augmentation vs the space's base augmentation, "
        f"{args.seeds} seeds (paired: same initial weights and batch order per seed), "
        f"{args.workers} trainings at a time, {minutes:.0f} min. {machine()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end.", "", *lines, "", *verdicts, note])
    print(body)
    write_section("Child budget: does augmentation pay?", body)


if __name__ == "__main__":
    main()
