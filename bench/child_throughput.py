"""Child training throughput with each augmentation path, on this CPU and (when there is one) a GPU.

For each CPU-practical child, trains on real 32x32 images with the identity policy (base
crop/flip only) and with a sampled 5x2 policy (plus mixup), each on the per-image albumentations
path and on the batched tensor path, side by side in one run: the four configurations alternate
A B C D D C B A so machine noise hits all alike. Reports training images/s (wall-clock) and CPU
time per image, the policy's overhead on each path, and the batched path's speed-up. Target: a
policy adds <= 15% to a basiccnn epoch, judged on wall-clock and on CPU time from the per-round
overheads (each policy run against the identity run beside it) with a Student-t 95% CI: met or
not only where the CI lies on one side of the target (`--rounds` adds rounds until it does).

On a CUDA machine it also fills the GPU section: the child's images/s on each path with one CPU
thread (as `cluster.yaml` gives a GPU trial), and the GPU's utilisation while it trains. Without
a GPU the section is reported unmeasured.

    python bench/child_throughput.py [--epochs 2] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import BENCHMARKS, SHARED, machine, write_section  # noqa: E402
from children.datasets import Arrays, ImageData, Splits, load_dataset, make_splits  # noqa: E402
from children.tensor_aug import BatchedPipeline, Draws  # noqa: E402
from children.train import train_child  # noqa: E402
from search.stats import estimate  # noqa: E402
from spaces.policy import (  # noqa: E402
    BatchOps,
    Op,
    Policy,
    SubPolicy,
    build_pipeline,
    identity_policy,
)
from spaces.schema import DatasetSpec, Space, load_space  # noqa: E402

TARGET = 15.0  # % a policy may add to a basiccnn epoch
EVAL_IMAGES = 100
PATHS = ("albumentations", "batched")
POLICIES = ("identity", "policy")
GPU_TITLE = "Child throughput on GPU"


@dataclass(frozen=True)
class Case:
    model: str
    threads: int
    images: int  # training images per epoch
    rounds: int  # 2 -> A B C D D C B A


CASES = (
    Case("basiccnn", 1, 2000, 2),
    Case("basiccnn", 2, 2000, 2),
    Case("resnet_fast", 2, 768, 1),
)
GPU_CASES = (Case("basiccnn", 1, 4000, 2), Case("resnet_fast", 1, 4000, 2))


def sampled_policy(space: Space, seed: int = 0) -> Policy:
    """A 5x2 policy drawn uniformly from the space's ops, magnitudes and probabilities."""
    rng = np.random.default_rng(seed)
    names = [op.name for op in space.policy.ops]
    subs = tuple(
        SubPolicy(tuple(Op(str(rng.choice(names)), round(float(rng.uniform()), 2),
                           round(float(rng.uniform()), 2)) for _ in range(2)))
        for _ in range(5)
    )
    return Policy(subs, BatchOps(mixup_alpha=0.2))


def real_data(space: Space) -> tuple[ImageData, DatasetSpec, str]:
    """cifar10_small (5,000 real CIFAR-10 images), else digits upscaled to 32x32 RGB."""
    path = SHARED / "cifar10_small.npz"
    if path.exists():
        spec = DatasetSpec(name="npz", path=str(path), train_size=4000, val_pool_size=500,
                           audit_size=500, image_size=32, channels=3, num_classes=10)
        return load_dataset(spec), spec, "CIFAR-10 (cifar10_small.npz, Krizhevsky 2009)"
    spec = DatasetSpec(name="digits", train_size=1000, val_pool_size=200, audit_size=200,
                       image_size=32, channels=3, num_classes=10)
    return load_dataset(spec), spec, "sklearn digits upscaled to 32x32 RGB"


def pipeline_us(policy: Policy, space: Space, images: np.ndarray, path: str) -> float:
    """CPU cost of the training augmentation (crop/flip + policy) on one thread, µs per image."""
    import cv2

    cv2.setNumThreads(1)
    base, size = space.child.base_augmentation, images.shape[1]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    if path == "batched":
        pipe, draws = BatchedPipeline(policy, base, size), Draws(0)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        batches = [x[s:s + 128] for s in range(0, len(x), 128)]

        def run() -> None:
            for batch in batches:
                pipe(batch, draws)
    else:
        albu = build_pipeline(policy, base, size, seed=0)

        def run() -> None:
            for image in images:
                albu(image=image)
    run()  # warm-up: first calls build caches and import lazily
    start = time.thread_time()
    run()
    spent = time.thread_time() - start
    torch.set_num_threads(before)
    return spent / len(images) * 1e6


@dataclass(frozen=True)
class Speed:
    wall: float  # training images per wall-clock second (from the trainer's Metrics)
    cpu_ms: float  # process CPU milliseconds per training image, all threads
    gpu_util: float | None = None  # mean GPU utilisation (%) while training, when sampled


def _subset(splits: Splits, images: int) -> Splits:
    few = EVAL_IMAGES
    train, val, audit = splits.train, splits.val_pool, splits.audit
    return Splits(Arrays(train.x[:images], train.y[:images]), Arrays(val.x[:few], val.y[:few]),
                  Arrays(audit.x[:few], audit.y[:few]), splits.test, splits.num_classes)


def run_once(case: Case, policy: Policy, path: str, space: Space, splits: Splits, epochs: int,
             device: str = "cpu") -> Speed:
    """Train once; CPU time is read at each batch the model receives, so evaluation is excluded."""
    child = space.replace(**{"child.model": case.model, "child.augmentation": path}).child
    marks: list[float] = []
    spans = {"cpu": 0.0, "images": 0}

    def on_batch(x: object, y: object) -> None:
        marks.append(time.process_time())

    def on_epoch(stats: object, state: object) -> None:
        # from the first to the last batch: len(marks) - 1 whole steps, each with its batch made
        spans["cpu"] += marks[-1] - marks[0]
        spans["images"] += (len(marks) - 1) * child.batch_size
        marks.clear()

    with GpuUtilisation(device) as gpu:
        metrics = train_child(child, space.reward, policy, _subset(splits, case.images), seed=0,
                              threads=case.threads, device=device, epochs=epochs,
                              on_batch=on_batch, on_epoch=on_epoch)
    if metrics.augmentation != path:
        raise RuntimeError(f"asked for the {path} path, the trainer took {metrics.augmentation}")
    return Speed(metrics.images_per_s, 1e3 * spans["cpu"] / max(spans["images"], 1), gpu.mean)


def measure(case: Case, policies: dict[str, Policy], space: Space, splits: Splits, epochs: int,
            device: str = "cpu") -> dict[tuple[str, str], list[Speed]]:
    """Every run of each (policy, path) over A B C D D C B A rounds, after a short warm-up."""
    warm = Case(case.model, case.threads, min(case.images, 256), 1)
    for path in PATHS:
        run_once(warm, policies["identity"], path, space, splits, 1, device)
    configs = [(name, path) for name in POLICIES for path in PATHS]
    order = (configs + configs[::-1]) * (case.rounds // 2) + configs * (case.rounds % 2)
    runs: dict[tuple[str, str], list[Speed]] = {c: [] for c in configs}
    for name, path in order:
        runs[(name, path)].append(run_once(case, policies[name], path, space, splits, epochs,
                                           device))
    return runs


def median(speeds: list[Speed]) -> Speed:
    utils = [s.gpu_util for s in speeds if s.gpu_util is not None]
    return Speed(statistics.median(s.wall for s in speeds),
                 statistics.median(s.cpu_ms for s in speeds),
                 statistics.median(utils) if utils else None)


def spread(runs: dict[tuple[str, str], list[Speed]]) -> tuple[float, float]:
    """Largest relative difference between repeated runs of one configuration (wall, CPU)."""
    def rel(values: list[float]) -> float:
        return (max(values) - min(values)) / statistics.mean(values) if len(values) > 1 else 0.0

    return (max(rel([s.wall for s in v]) for v in runs.values()),
            max(rel([s.cpu_ms for s in v]) for v in runs.values()))


# ---------------------------------------------------------------- GPU utilisation


class GpuUtilisation:
    """Samples the GPU's utilisation (%) in a background thread while the block runs.

    Reads `torch.cuda.utilization` (NVML), else `nvidia-smi`; on a CPU device, or where neither
    answers, `mean` is None.
    """

    def __init__(self, device: str, period: float = 0.2) -> None:
        dev = torch.device(device)
        self.index = (dev.index or 0) if dev.type == "cuda" else None
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilisation:
        if self.index is not None and self.read() is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            value = self.read()
            if value is not None:
                self.samples.append(value)

    def read(self) -> float | None:
        if self.index is None:
            return None
        try:
            return float(torch.cuda.utilization(self.index))
        except Exception:  # noqa: BLE001 - NVML missing or refusing: try nvidia-smi
            pass
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits", f"--id={self.index}"],
                                 capture_output=True, text=True, timeout=5, check=True)
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


# ---------------------------------------------------------------- report


def _rows(rows: list) -> list[str]:
    lines = ["| child | torch threads | images/epoch | runs each | path | identity img/s | "
             "policy img/s | wall overhead | identity CPU ms/img | policy CPU ms/img | "
             "CPU overhead |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for case, speeds in rows:
        for path in PATHS:
            a, b = speeds[("identity", path)], speeds[("policy", path)]
            lines.append(
                f"| {case.model} | {case.threads} | {case.images:,} | {case.rounds} | {path} | "
                f"{a.wall:,.0f} | "
                f"{b.wall:,.0f} | {overhead(a.wall, b.wall):+.1f}% | {a.cpu_ms:.2f} | "
                f"{b.cpu_ms:.2f} | {(b.cpu_ms / a.cpu_ms - 1) * 100:+.1f}% |")
    return lines


def overhead(identity_rate: float, policy_rate: float) -> float:
    """% the policy adds to the epoch's wall-clock time."""
    return (identity_rate / policy_rate - 1.0) * 100.0


def round_overheads(runs: dict[tuple[str, str], list[Speed]], path: str) -> tuple[list[float],
                                                                                  list[float]]:
    """The policy's overhead (%) on `path` in each round, wall-clock and CPU time: run i of the
    policy against run i of the identity, which ran beside it (A B C D D C B A), so a drift of
    the machine's load cancels in the pair."""
    ident, pol = runs[("identity", path)], runs[("policy", path)]
    walls = [overhead(a.wall, b.wall) for a, b in zip(ident, pol, strict=True)]
    cpus = [(b.cpu_ms / a.cpu_ms - 1) * 100 for a, b in zip(ident, pol, strict=True)]
    return walls, cpus


def judged(values: list[float]) -> tuple[Any, bool | None]:
    """The overheads' mean with a Student-t 95% CI, and the target: met (the CI lies at or
    below it), not met (above it), None (the CI straddles it, or one round gives no CI)."""
    est = estimate(values)
    if not math.isfinite(est.ci_high):
        return est, None
    return est, True if est.ci_high <= TARGET else False if est.ci_low > TARGET else None


def verdicts(measured: list) -> list[str]:
    """The target per path, judged on wall-clock and on CPU time from every basiccnn row's
    per-round overheads (`measured`: (case, runs) pairs): met or not only where the overheads'
    95% CI lies on one side of the target, else unresolved. A path's verdict is its worst row's."""
    lines = []
    for path in PATHS:
        judgements = []
        for case, runs in measured:
            if case.model == "basiccnn":
                walls, cpus = round_overheads(runs, path)
                judgements.append((case, judged(walls), judged(cpus)))
        worst = max(judgements, key=lambda j: j[1][0].mean)
        wall_ok = _all(j[1][1] for j in judgements)
        cpu_ok = _all(j[2][1] for j in judgements)
        if wall_ok is None and cpu_ok is None:
            verdict = "unresolved: the overheads' 95% CIs straddle the target"
        elif wall_ok is None or cpu_ok is None:
            verdict = f"wall-clock {_word(wall_ok)}, CPU time {_word(cpu_ok)}"
        else:
            verdict = ("met" if wall_ok and cpu_ok else "NOT met" if not (wall_ok or cpu_ok)
                       else f"met on {'wall-clock' if wall_ok else 'CPU time'} only")
        case, (wall, _), (cpu, _) = worst
        lines.append(f"Target (policy adds <= {TARGET:.0f}% to a basiccnn epoch), {path} path: "
                     f"**{verdict}** (worst basiccnn row, {case.threads} thread(s), over "
                     f"{wall.n} paired rounds: {_pct(wall)} wall-clock, {_pct(cpu)} CPU time).")
    return lines


def _pct(est: Any) -> str:
    if not math.isfinite(est.ci_low):
        return f"{est.mean:+.1f}% (one round: no CI)"
    return f"{est.mean:+.1f}% [{est.ci_low:+.1f}, {est.ci_high:+.1f}]"


def _all(oks: Any) -> bool | None:
    """Every row met: True; any row not met: False; else (some unresolved): None."""
    oks = list(oks)
    return False if False in oks else True if all(oks) else None


def _word(ok: bool | None) -> str:
    return "met" if ok else "unresolved" if ok is None else "NOT met"


def speedups(rows: list) -> str:
    parts = []
    for case, s in rows:
        a, b = s[("policy", "albumentations")], s[("policy", "batched")]
        parts.append(f"{case.model} on {case.threads} thread(s): {b.wall / a.wall:.2f}x the "
                     f"images/s, {b.cpu_ms / a.cpu_ms:.2f}x the CPU time per image")
    return ("With the policy, the batched path against the albumentations path: "
            + "; ".join(parts) + ".")


def report(rows: list, measured: list, cost: dict[tuple[str, str], float], source: str,
           policy: Policy, epochs: int, load: tuple[float, float],
           noise: tuple[float, float]) -> str:
    return "\n".join([
        f"`python bench/child_throughput.py` — {source}; {epochs} epochs per run; the four "
        f"configurations alternate A B C D D C B A (A B C D for a row with one run each), "
        f"after a warm-up; figures are medians of a row's runs. {machine()}, nproc "
        f"{len(os.sched_getaffinity(0))}; load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (the machine is shared).",
        "",
        "*identity* = base crop+flip only; *policy* = a sampled 5x2 policy over the cifar10 "
        "space's ops plus mixup (alpha 0.2):", "",
        "    " + policy.describe().replace("\n", "\n    "), "",
        *_rows(rows), "",
        *verdicts(measured), "",
        speedups(rows), "",
        f"Wall-clock images/s is what a trial sees; CPU time per image counts every thread of "
        f"the process from the first to the last training batch of each epoch (evaluation "
        f"excluded). Repeated runs of one configuration differed by up to {noise[0]:.0%} in "
        f"wall-clock images/s and {noise[1]:.0%} in CPU time per image in this run. "
        f"Augmentation on one thread, per image: crop/flip "
        f"{cost[('identity', 'albumentations')]:.0f} µs (albumentations) vs "
        f"{cost[('identity', 'batched')]:.0f} µs (batched); crop/flip + policy "
        f"{cost[('policy', 'albumentations')]:.0f} µs vs {cost[('policy', 'batched')]:.0f} µs. "
        f"Both paths make the next batch in a background thread while the model trains.",
    ])


def gpu_report(rows: list, policy_text: str, epochs: int) -> str:
    lines = ["| child | CPU threads | images/epoch | path | identity img/s | policy img/s | "
             "GPU utilisation (policy) |", "|---|---:|---:|---|---:|---:|---:|"]
    for case, speeds in rows:
        for path in PATHS:
            a, b = speeds[("identity", path)], speeds[("policy", path)]
            util = "n/a" if b.gpu_util is None else f"{b.gpu_util:.0f}%"
            lines.append(f"| {case.model} | {case.threads} | {case.images:,} | {path} | "
                         f"{a.wall:,.0f} | {b.wall:,.0f} | {util} |")
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return "\n".join([
        f"`python bench/child_throughput.py` on {name} — {epochs} epochs per run, one CPU "
        f"thread per child as `cluster.yaml` gives a GPU trial; policy as in the CPU section "
        f"({policy_text}). {machine()}.", "", *lines, "", speedups(rows)])


def gpu_section(policies: dict[str, Policy], space: Space, splits: Splits, epochs: int,
                device: str = "cuda", cases: tuple[Case, ...] = GPU_CASES) -> list:
    """Measure the GPU cases on `device` (the same code runs on "cpu" in tests)."""
    return [(case, {k: median(v) for k, v in measure(case, policies, space, splits, epochs,
                                                        device).items()}) for case in cases]


def unmeasured_gpu(path: Path = BENCHMARKS) -> str:
    """Say the GPU section is unmeasured; write a placeholder only where no figures exist yet."""
    text = ("Unmeasured: no CUDA device on the machine that last ran "
            "`python bench/child_throughput.py`. Run it on a GPU worker to fill this section.")
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if f"## {GPU_TITLE}\n" not in existing:
        write_section(GPU_TITLE, text, path)
    return text


def gpu_only(epochs: int) -> None:
    """The GPU section alone: what a GPU machine adds to the CPU sections measured elsewhere."""
    if not torch.cuda.is_available():
        print(f"GPU section: {unmeasured_gpu()}")
        return
    space = load_space("cifar10").replace(**{"reward.val_sample_size": EVAL_IMAGES})
    data, spec, _ = real_data(space)
    splits = make_splits(data, spec, seed=0)
    policy = sampled_policy(space)
    policies = {"identity": identity_policy(), "policy": policy}
    gpu = gpu_report(gpu_section(policies, space, splits, epochs),
                     policy.describe().replace("\n", " | "), epochs)
    print(gpu)
    write_section(GPU_TITLE, gpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; writes no report")
    parser.add_argument("--rounds", type=int,
                        help="runs of each configuration per CPU row (default: 2, 1 for "
                             "resnet_fast); more rounds narrow the verdicts' CIs")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the GPU section (bench/gpu_check.sh on a GPU machine)")
    args = parser.parse_args(argv)
    if args.gpu_only:
        return gpu_only(args.epochs)
    space = load_space("cifar10").replace(**{"reward.val_sample_size": EVAL_IMAGES})
    data, spec, source = real_data(space)
    splits = make_splits(data, spec, seed=0)
    policy = sampled_policy(space)
    policies = {"identity": identity_policy(), "policy": policy}
    cases = [Case(c.model, c.threads, 256, 1) for c in CASES[:1]] if args.quick else CASES
    if args.rounds:
        cases = [Case(c.model, c.threads, c.images, args.rounds) for c in cases]
    sample = splits.train.x[:1024]
    cost = {(name, path): pipeline_us(p, space, sample, path)
            for name, p in policies.items() for path in PATHS}
    print(f"data: {source}; policy:\n{policy.describe()}")
    load_before = os.getloadavg()[0]
    rows, measured, noise = [], [], (0.0, 0.0)
    for case in cases:
        runs = measure(case, policies, space, splits, args.epochs)
        noise = tuple(max(a, b) for a, b in zip(noise, spread(runs), strict=True))
        measured.append((case, runs))
        rows.append((case, {k: median(v) for k, v in runs.items()}))
        print("\n".join(_rows(rows[-1:])[2:]), flush=True)
    load = (load_before, os.getloadavg()[0])
    body = report(rows, measured, cost, source, policy, args.epochs, load, noise)
    print(body)
    if torch.cuda.is_available():
        gpu = gpu_report(gpu_section(policies, space, splits, args.epochs),
                         policy.describe().replace("\n", " | "), args.epochs)
        print(gpu)
    else:
        gpu = None
        print(f"GPU section: {unmeasured_gpu() if not args.quick else 'unmeasured (no CUDA)'}")
    if args.quick:
        return
    write_section("Child throughput", body)
    if gpu is not None:
        write_section(GPU_TITLE, gpu)


if __name__ == "__main__":
    main()
