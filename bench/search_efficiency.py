"""How well does a search use its slots, and does memory grow with concurrency?

Runs the same real search (16 trials of ~15 s children on 2 CPUs) twice, side by side: with one
trial at a time and with two. Reports

- slot efficiency = sum of trial seconds / (search wall seconds x concurrent slots), target
  >= 0.90 (scheduling, checkpointing and logging overhead is what is lost);
- peak memory (proportional set size of the driver and every Ray process it started, sampled
  every 0.5 s) with 2 concurrent trials against 1, target <= 1.3x: the dataset is loaded once in
  the driver and shared through Ray's object store, so only per-trial state should grow.

    python bench/search_efficiency.py [--trials 16] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakMemory:
    """Samples the total PSS of this process tree in a background thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(_pss_mb(p) for p in _tree(os.getpid())))
            time.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
            "trials": len(seconds)}


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
        f"What a second concurrent trial adds ({two['peak_mb'] - one['peak_mb']:.0f} MB) is "
        f"a second worker process, not data: a fresh process that only imports what a trial "
        f"worker imports (torch, albumentations, Ray Tune, the trainer) already holds "
        f"{runtime:.0f} MB PSS, while the dataset is loaded once in the driver and shared "
        f"read-only through the object store. Trial seconds include time the two trials spent "
        f"sharing 2 cores with anything else running on the machine."])
    print(body)
    write_section("Search efficiency and memory", body)


if __name__ == "__main__":
    main()
