"""How well does a search use its slots, and does memory grow with concurrency?

Runs the same real search (16 trials of ~15 s children on 2 CPUs) twice, side by side: with one
trial at a time and with two. Reports

- slot efficiency = sum of trial seconds / (search wall seconds x concurrent slots), target
  >= 0.90 (scheduling, checkpointing and logging overhead is what is lost);
- peak memory (proportional set size of the driver and every Ray process it started, sampled
  every 0.5 s) with 2 concurrent trials against 1, target <= 1.3x: the dataset is loaded once in
  the driver and shared through Ray's object store, so only per-trial state should grow. Where
  the added memory went (driver, Ray workers, Ray's own processes) is measured at each peak.

    python bench/search_efficiency.py [--trials 16] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import Sampler, command, process_tree, pss_mb  # noqa: E402
from bench.report import SHARED, machine, write_section  # noqa: E402


def _kind(pid: int) -> str:
    """driver (this process), worker (a Ray worker: trial actors and idle workers) or ray (Ray's
    own processes: raylet, GCS, agents, ...)."""
    if pid == os.getpid():
        return "driver"
    first = command(pid)
    return "worker" if first is not None and first.startswith("ray::") else "ray"


class PeakMemory(Sampler):
    """Samples the PSS of this process tree in a background thread, by kind of process.

    `peak` is the highest total; `at_peak` holds, for that sample, MB and process count by kind.
    """

    def __init__(self) -> None:
        super().__init__(0.5)
        self.peak = 0.0
        self.at_peak: dict[str, tuple[float, int]] = {}

    def sample(self) -> None:
        by_kind: dict[str, tuple[float, int]] = {}
        for pid in process_tree(os.getpid()):
            mb, count = by_kind.get(_kind(pid), (0.0, 0))
            by_kind[_kind(pid)] = (mb + pss_mb(pid), count + 1)
        total = sum(mb for mb, _ in by_kind.values())
        if total > self.peak:
            self.peak, self.at_peak = total, by_kind


WORKER_IMPORTS = ("import os, torch, albumentations, ray.tune, children.train; "
                  "print([ln.split()[1] for ln in open(f'/proc/{os.getpid()}/smaps_rollup') "
                  "if ln.startswith('Pss:')][0])")


def worker_runtime_mb() -> float:
    """PSS of a fresh process holding what every trial worker imports (torch, Ray Tune, ...)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", WORKER_IMPORTS], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def run(concurrency: int, trials: int, epochs: int, data: dict, out: Path) -> dict:
    import ray

    from search.api import search

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1"}})
    try:
        with PeakMemory() as mem:
            start = time.perf_counter()
            search(data["space"], "random", trials=trials, concurrency=concurrency,
                   epochs=epochs, output=out, seed=0, **data["options"])
            wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    with (out / "leaderboard.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    return {"wall": wall, "trial_seconds": sum(seconds), "mean_trial": sum(seconds) / len(seconds),
            "efficiency": sum(seconds) / (wall * concurrency), "peak_mb": mem.peak,
            "at_peak": mem.at_peak, "trials": len(seconds)}


KINDS = (("driver", "driver (the search, Tune, MLflow writer)"),
         ("worker", "Ray workers (trial actors and idle workers)"),
         ("ray", "Ray's own processes (raylet, GCS, agents)"))


def memory_table(one: dict, two: dict) -> list[str]:
    """PSS at each run's peak, by kind of process."""
    lines = ["| at the peak | 1 concurrent trial: MB (processes) | 2 concurrent trials: MB "
             "(processes) | added MB |", "|---|---:|---:|---:|"]
    for kind, label in KINDS:
        (a, na), (b, nb) = one.get(kind, (0.0, 0)), two.get(kind, (0.0, 0))
        lines.append(f"| {label} | {a:.0f} ({na}) | {b:.0f} ({nb}) | {b - a:+.0f} |")
    return lines


def memory_explanation(one: dict, two: dict, runtime: float) -> str:
    """Where the memory a second concurrent trial adds went, from the figures above."""
    added = two["peak_mb"] - one["peak_mb"]
    parts = {kind: two["at_peak"].get(kind, (0.0, 0))[0] - one["at_peak"].get(kind, (0.0, 0))[0]
             for kind, _ in KINDS}
    workers_one = one["at_peak"].get("worker", (0.0, 0))
    workers_two = two["at_peak"].get("worker", (0.0, 0))
    biggest = max(parts, key=lambda k: parts[k])
    each = workers_two[0] / workers_two[1] if workers_two[1] else float("nan")
    text = (f"A second concurrent trial adds {added:.0f} MB at the peak; the largest part, "
            f"{parts[biggest]:+.0f} MB, is in {dict(KINDS)[biggest].split(' (')[0].lower()}. "
            f"At the peak the Ray workers were {workers_one[1]} process(es) with 1 concurrent "
            f"trial and {workers_two[1]} with 2 ({each:.0f} MB each on average with 2); a fresh "
            f"process that only imports what a trial worker imports (torch, albumentations, Ray "
            f"Tune, the trainer) holds {runtime:.0f} MB.")
    extra = workers_two[1] - workers_one[1]
    if extra > 0 and parts["worker"] > 0:
        per_extra = parts["worker"] / extra
        text += (f" The workers grew by {parts['worker']:.0f} MB for {extra} more process(es), "
                 f"{per_extra:.0f} MB per added process, {per_extra / runtime:.1f}x what the "
                 f"imports alone take: the rest is a trial's own state (model, optimizer, "
                 f"batches, allocator caches).")
    elif parts["worker"] > 0:
        text += (f" The number of worker processes did not change, so the "
                 f"{parts['worker']:.0f} MB the workers gained is inside them: one more of them "
                 f"runs a trial instead of waiting for one, and a running trial holds its model, "
                 f"optimizer state, batches and allocator caches on top of the imports.")
    return text


def data_choice() -> dict:
    small = SHARED / "cifar10_small.npz"
    if small.exists():
        return {"space": "cifar10", "label": "cifar10_small.npz (real CIFAR-10), 1,000 train",
                "options": {"data": str(small)}, "sizes": {"dataset.train_size": 1000,
                                                          "dataset.val_pool_size": 1000,
                                                          "dataset.audit_size": 500,
                                                          "reward.val_sample_size": 500}}
    return {"space": "digits", "label": "sklearn digits", "options": {}, "sizes": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6, help="child epochs (~15 s children)")
    args = parser.parse_args()
    from spaces.schema import load_space

    choice = data_choice()
    space = load_space(choice["space"]).replace(**choice["sizes"]) if choice["sizes"] else None
    data = {"space": space or choice["space"], "options": choice["options"]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for conc in (1, 2):
            results[conc] = run(conc, args.trials, args.epochs, data, Path(tmp) / f"c{conc}")
            r = results[conc]
            print(f"concurrency {conc}: wall {r['wall']:.0f} s, trials {r['trial_seconds']:.0f} s "
                  f"(mean {r['mean_trial']:.1f} s), efficiency {r['efficiency']:.3f}, peak "
                  f"{r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    one, two = results[1], results[2]
    ratio = two["peak_mb"] / one["peak_mb"]
    lines = ["| concurrent trials | wall s | sum of trial s | mean trial s | slot efficiency | "
             "peak PSS MB |", "|---:|---:|---:|---:|---:|---:|"]
    for conc, r in results.items():
        lines.append(f"| {conc} | {r['wall']:.0f} | {r['trial_seconds']:.0f} | "
                     f"{r['mean_trial']:.1f} | {r['efficiency']:.3f} | {r['peak_mb']:.0f} |")
    runtime = worker_runtime_mb()
    verdict_eff = "met" if two["efficiency"] >= 0.90 else "NOT met"
    verdict_mem = "met" if ratio <= 1.3 else "NOT met"
    body = "\n".join([
        f"`python bench/search_efficiency.py --trials {args.trials} --epochs {args.epochs}` — "
        f"random search, {args.trials} trials, {choice['label']}, basiccnn child, MLflow "
        f"logging on, local Ray with 2 CPUs, 1 CPU per trial. {machine()}.", "", *lines, "",
        f"Slot efficiency with 2 concurrent trials: **{two['efficiency']:.3f}** (target >= "
        f"0.90: {verdict_eff}). Peak memory 2 vs 1 concurrent trials: **{ratio:.2f}x** (target "
        f"<= 1.3x: {verdict_mem}). Memory is the proportional set size of the driver and every "
        "Ray process (GCS, raylet, workers, object store pages), sampled every 0.5 s.", "",
        *memory_table(one["at_peak"], two["at_peak"]), "",
        memory_explanation(one, two, runtime)])
    print(body)
    write_section("Search efficiency and memory", body)


if __name__ == "__main__":
    main()
