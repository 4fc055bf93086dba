"""One GPU, many children: what a GPU worker trains, measured side by side in one run.

On a CUDA machine, for the cifar10 space's default child (basiccnn width 16, batch 32, 1,000
training images; throughput is measured over fewer epochs than the space's 60 and scaled to
them), one run measures:

1. one child alone on each augmentation path (albumentations, batched): images/s and reward,
   and the run-to-run spread of that reward (the same child, same seeds, three times);
2. children sharing the GPU as separate processes (1, 4, 8, 16), the way Ray's fractional GPUs
   share it: aggregate training images/s, trials per GPU-hour at the space's budget, the share
   of time the GPU runs a kernel (NVML), and the achieved FLOP/s against a bf16 matrix product
   measured on the same GPU (the FLOP bound);
3. cohorts (`search.cohort`): K children in one process as one grouped network (1, 4, 8, 16,
   32), and 4 processes of cohorts of 8; with each member's reward beside the lone child's;
4. 32-trial cifar10 searches on the GPU, both paths, counting failed trials.

It writes docs/BENCHMARKS.md's "GPU: many children per GPU" section, and with `--out DIR` a copy
in DIR. Without CUDA it says unmeasured and writes nothing, except with `--smoke`, a tiny run
on any device that checks this script (tests/bench runs it on the CPU).

    python bench/gpu.py [--budget-s 360] [--data cifar10_small.npz] [--out DIR] [--skip-search]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import SHARED, write_section  # noqa: E402

TITLE = "GPU: many children per GPU"
PROCESSES = (1, 4, 8, 16)
COHORTS = (1, 4, 8, 16, 32)
TARGET_SPEEDUP, TARGET_IMAGES, TARGET_TRIALS = 10.0, 50_000.0, 3000.0
ONE_IMAGE = 1 / 1000  # one image of the cifar10 space's validation pool


@dataclass
class Job:
    """What one worker process trains: `cohort` children for `epochs` epochs."""

    data: str
    device: str
    path: str  # augmentation path
    cohort: int
    epochs: int
    train_size: int
    go: str  # the file whose existence starts the timed training
    seed: int = 0


@dataclass
class Done:
    """What a worker measured: its timed span and images, and each member's reward."""

    start: float
    end: float
    images: int
    rewards: list[float]


# ---------------------------------------------------------------- data and the child


def load_space(job: Job):  # noqa: ANN201 - spaces.schema.Space
    from spaces.schema import load_space as load

    space = load("cifar10")
    dataset = {"dataset.train_size": job.train_size, "child.epochs": job.epochs,
               "child.augmentation": job.path, "reward.last_epochs": min(3, job.epochs)}
    if job.data != "synthetic":
        dataset.update({"dataset.name": "npz", "dataset.path": job.data})
    return space.replace(**dataset)


def splits_of(job: Job, space):  # noqa: ANN001, ANN201
    from children.datasets import Arrays, ImageData, Splits, load_dataset, make_splits

    if job.data != "synthetic":
        return make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    rng = np.random.default_rng(0)  # images/s does not depend on the pixels
    x = rng.integers(0, 256, (job.train_size + 2000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x)).astype(np.int64)
    data = ImageData(x, y, x[:500], y[:500], [str(i) for i in range(10)])
    n = job.train_size
    return Splits(Arrays(x[:n], y[:n]), Arrays(x[n:n + 1000], y[n:n + 1000]),
                  Arrays(x[n + 1000:], y[n + 1000:]), Arrays(data.x_test, data.y_test), 10)


def policies(space, k: int) -> list:  # noqa: ANN001
    """The base policy for member 0, then sampled 5x2 policies (TrivialAugment-like spread)."""
    from bench.child_throughput import sampled_policy
    from spaces.policy import identity_policy

    return [identity_policy(), *(sampled_policy(space, seed) for seed in range(1, k))]


# ---------------------------------------------------------------- the worker


def worker(job: Job) -> Done:
    """Warm up (CUDA, data, one short training), wait for `go`, train, report."""
    from children.cohort import train_cohort
    from children.train import train_child

    space = load_space(job)
    splits = splits_of(job, space)
    pols = policies(space, job.cohort)
    seeds = [1000 + k for k in range(job.cohort)]

    def train(epochs: int) -> list:
        if job.cohort == 1:
            return [train_child(space.child, space.reward, pols[0], splits, seed=job.seed,
                                aug_seed=seeds[0], threads=1, device=job.device,
                                epochs=epochs)]
        return train_cohort(space.child, space.reward, pols, splits, seed=job.seed,
                            aug_seeds=seeds, threads=1, device=job.device, epochs=epochs)

    train(1)  # warm-up: CUDA context, kernels, caches
    while not os.path.exists(job.go):
        time.sleep(0.01)
    start = time.time()
    metrics = train(job.epochs)
    _sync(job.device)
    end = time.time()
    images = sum(m.epochs for m in metrics) * (len(splits.train) // space.child.batch_size
                                               * space.child.batch_size)
    return Done(start, end, images, [m.reward for m in metrics])


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_workers(jobs: list[Job], busy: Busy | None = None) -> tuple[list[Done], float | None]:
    """Start one process per job, let them warm up, start them together, collect."""
    procs = []
    for job in jobs:
        cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(job))]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT))
    time.sleep(_warmup_wait(jobs))
    with busy or Busy(None) as meter:
        Path(jobs[0].go).touch()
        outs = [p.communicate()[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {out[-2000:]}")
    done = [Done(**json.loads(out.strip().splitlines()[-1])) for out in outs]
    return done, meter.mean


def _warmup_wait(jobs: list[Job]) -> float:
    return 8.0 + 0.5 * len(jobs) if jobs[0].device.startswith("cuda") else 2.0 + len(jobs)


class Busy:
    """The share of time the GPU ran a kernel (NVML's utilisation), sampled every 0.1 s."""

    def __init__(self, index: int | None) -> None:
        self.index, self.samples = index, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Busy:
        if self.index is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.index is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(float(torch.cuda.utilization(self.index)))
            except Exception:  # noqa: BLE001 - NVML absent: the figure is reported missing
                return

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


# ---------------------------------------------------------------- measurements


@dataclass
class Row:
    label: str
    children: int
    images_per_s: float
    trials_per_hour: float
    busy: float | None
    flop_share: float | None
    rewards: list[float]


def measure(label: str, jobs: list[Job], ctx: Context) -> Row | None:
    """One configuration, or None (and a line saying so) when the budget cannot hold it: a
    measurement is started only while 1.5x the longest one so far is left."""
    begun = time.perf_counter()
    if ctx.deadline - begun < 1.5 * ctx.longest:
        print(f"  {label:<28} not measured: {ctx.deadline - begun:.0f} s of the budget left",
              flush=True)
        ctx.skipped.append(label)
        return None
    done, busy = run_workers(jobs, Busy(0) if ctx.cuda else None)
    ctx.longest = max(ctx.longest, time.perf_counter() - begun)
    span = max(d.end for d in done) - min(d.start for d in done)
    images = sum(d.images for d in done)
    rate = images / span
    children = sum(j.cohort for j in jobs)
    trial_images = ctx.budget_epochs * ctx.epoch_images
    share = rate * ctx.flops_per_image / ctx.peak if ctx.peak else None
    row = Row(label, children, rate, 3600 * rate / trial_images, busy, share,
              [r for d in done for r in d.rewards])
    print(f"  {label:<28} {children:>3} children  {rate:>9,.0f} img/s  "
          f"{row.trials_per_hour:>7,.0f} trials/GPU-h  busy {_pct(busy)}  "
          f"FLOP bound {_pct(share and 100 * share)}", flush=True)
    return row


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


@dataclass
class Context:
    device: str
    cuda: bool
    data: str
    epochs: int  # epochs each timed training runs
    budget_epochs: int  # the space's epochs (a trial's length)
    epoch_images: int
    train_size: int
    flops_per_image: float
    peak: float | None  # bf16 matrix-product FLOP/s measured here
    go_dir: str
    deadline: float  # time.perf_counter() by which measurements must end
    longest: float = 0.0  # the longest measurement so far (s)
    skipped: list[str] = field(default_factory=list)

    def job(self, path: str, cohort: int, name: str, seed: int = 0) -> Job:
        return Job(self.data, self.device, path, cohort, self.epochs, self.train_size,
                   str(Path(self.go_dir) / name), seed)


def flops_per_image(ctx_device: str) -> float:
    """Training FLOPs per image of the cifar10 child (forward and backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from children.models import build_model

    model = build_model("basiccnn", 10, 3, 32, 16)
    x = torch.randn(32, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 32


def matmul_peak(device: str) -> float | None:
    """bf16 matrix-product FLOP/s on this GPU (the ceiling the children are compared with)."""
    if not device.startswith("cuda"):
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - t)


# ---------------------------------------------------------------- sections


def alone(ctx: Context) -> dict[str, Row | None]:
    """One child alone on each path; the batched one three times (the reward's spread)."""
    rows: dict[str, Row | None] = {}
    for path in ("albumentations", "batched"):
        rows[path] = measure(f"one child, {path}", [ctx.job(path, 1, f"alone-{path}")], ctx)
    repeats = [measure(f"one child, batched, rerun {r}", [ctx.job("batched", 1, f"re{r}")], ctx)
               for r in range(2)]
    runs = [r for r in (rows["batched"], *repeats) if r is not None]
    rows["rewards"] = Row("spread", 1, 0, 0, None, None, [r.rewards[0] for r in runs])
    return rows


def sharing(ctx: Context, counts: tuple[int, ...]) -> list[Row]:
    """n processes of one child each, started together (one `go` file per measurement)."""
    rows = [measure(f"{n} processes", [ctx.job("batched", 1, f"p{n}") for _ in range(n)], ctx)
            for n in counts]
    return [r for r in rows if r is not None]


def cohorts(ctx: Context, sizes: tuple[int, ...], mixed: tuple[int, int]) -> list[Row]:
    """Cohorts of k in one process, then `mixed` = (processes, cohort size) together."""
    rows = [measure(f"cohort of {k}, 1 process", [ctx.job("batched", k, f"c{k}")], ctx)
            for k in sizes]
    n, k = mixed
    rows.append(measure(f"cohorts of {k}, {n} processes",
                        [ctx.job("batched", k, f"c{k}x{n}") for _ in range(n)], ctx))
    return [r for r in rows if r is not None]


def searches(ctx: Context, data: str) -> list[str]:
    """32-trial cifar10 searches on the GPU, both paths: trials failed of 32."""
    from search.api import search

    lines = []
    for path, gpus, cohort in (("albumentations", 1 / 16, 1), ("batched", 1 / 16, 1),
                               ("batched", 1 / 4, 8)):
        out = Path(tempfile.mkdtemp()) / "out"
        started = time.perf_counter()
        extra = {"data": data} if data != "synthetic" else {}
        result = search("cifar10", "tpe", trials=32, output=out, augmentation=path,
                        gpus_per_trial=gpus, cohort=cohort, confirm=0, epochs=ctx.epochs,
                        **extra)
        failed = sum(r["status"] != "ok" for r in result.leaderboard)
        lines.append(f"| {path} | {gpus:g} | {cohort} | {len(result.leaderboard)} | {failed} | "
                     f"{time.perf_counter() - started:.0f} |")
        print(f"  search {path} cohort {cohort}: {failed} failed of "
              f"{len(result.leaderboard)}", flush=True)
    return lines


# ---------------------------------------------------------------- report


def table(rows: list[Row], base: float) -> list[str]:
    out = ["| configuration | children | images/s | vs one albumentations child | trials per "
           "GPU-hour | GPU busy | of the FLOP bound |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = "n/a" if r.flop_share is None else f"{100 * r.flop_share:.2f}%"
        out.append(f"| {r.label} | {r.children} | {r.images_per_s:,.0f} | "
                   f"{r.images_per_s / base:.1f}x | {r.trials_per_hour:,.0f} | {_pct(r.busy)} | "
                   f"{share} |")
    return out


def verdicts(best: Row, base: float, spread: list[float], cohort_rows: list[Row]) -> list[str]:
    speedup = best.images_per_s / base
    lines = [
        f"- Best configuration: {best.label}, {best.images_per_s:,.0f} images/s, "
        f"{speedup:.1f}x one albumentations child alone (target >= {TARGET_SPEEDUP:g}x: "
        f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}; >= {TARGET_IMAGES:,.0f} images/s: "
        f"{'met' if best.images_per_s >= TARGET_IMAGES else 'NOT met'}), "
        f"{best.trials_per_hour:,.0f} trials per GPU-hour (target >= {TARGET_TRIALS:,.0f}: "
        f"{'met' if best.trials_per_hour >= TARGET_TRIALS else 'NOT met'})."]
    if not spread:
        return [*lines, "- The lone child's reward spread: not measured (budget)."]
    lo, hi = min(spread), max(spread)
    width = max(hi - lo, ONE_IMAGE)
    member = [r.rewards[0] for r in cohort_rows if r.rewards]
    inside = [v for v in member if lo - width <= v <= hi + width]
    return [
        *lines,
        f"- The lone batched child's reward over 3 runs spanned [{lo:.4f}, {hi:.4f}]; the base "
        f"policy's member in each cohort scored {', '.join(f'{v:.4f}' for v in member)}: "
        f"{len(inside)} of {len(member)} within that span widened by its width (at least one "
        f"validation image, {ONE_IMAGE:.4f}).",
    ]


def recommend(rows: list[Row]) -> str:
    best = max(rows, key=lambda r: r.images_per_s)
    return (f"Recommended for this GPU: {best.label} (the fastest measured); trials per "
            f"GPU-hour {best.trials_per_hour:,.0f}.")


def header(ctx: Context, data_name: str) -> str:
    name = torch.cuda.get_device_name(0) if ctx.cuda else ctx.device
    peak = "n/a" if ctx.peak is None else f"{ctx.peak / 1e12:.0f} TFLOP/s"
    return (f"`python bench/gpu.py` on {name}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}. Data: {data_name}. The cifar10 space's child "
            f"(basiccnn width 16, batch 32, {ctx.train_size} training images); each timed "
            f"training runs {ctx.epochs} epochs after a one-epoch warm-up in its own process, "
            f"and trials per GPU-hour scale the measured images/s to the space's "
            f"{ctx.budget_epochs}-epoch trial. Training FLOPs per image (torch's counter): "
            f"{ctx.flops_per_image / 1e6:.1f} M; bf16 matrix-product peak measured here: {peak}. "
            f"GPU busy: NVML's share of time a kernel ran, sampled every 0.1 s.")


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, default=360.0)
    p.add_argument("--data", help="cifar10_small.npz (default: ../shared/data's, else "
                                  "synthetic images: throughput only)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="a tiny run on any device; writes "
                                                        "nothing")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--out", help="also write the section to OUT/gpu_bench.md")
    return p.parse_args(argv)


def context(args: argparse.Namespace, go_dir: str, started: float) -> tuple[Context, str]:
    data = args.data or str(SHARED / "cifar10_small.npz")
    if not Path(data).exists():
        data = "synthetic"
    name = "synthetic 32x32 images (no CIFAR-10 here: rewards are not meaningful)" if (
        data == "synthetic") else f"CIFAR-10 ({Path(data).name}, Krizhevsky 2009)"
    cuda = args.device.startswith("cuda")
    epochs, train = (1, 96) if args.smoke else (10, 1000)
    ctx = Context(args.device, cuda, data, epochs, 60, train // 32 * 32, train,
                  flops_per_image(args.device), matmul_peak(args.device) if cuda else None,
                  go_dir, started + args.budget_s)
    return ctx, name


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(asdict(worker(Job(**json.loads(args.worker))))))
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print(f"{TITLE}: unmeasured (no CUDA on this machine); nothing written")
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as go_dir:
        ctx, data_name = context(args, go_dir, started)
        sizes = (1, 2) if args.smoke else PROCESSES
        lone = alone(ctx)
        shared = sharing(ctx, sizes)
        grouped = cohorts(ctx, (2,) if args.smoke else COHORTS, (2, 2) if args.smoke else (4, 8))
        left = args.budget_s - (time.perf_counter() - started)
        search_lines = [] if args.skip_search or args.smoke or left < 150 else searches(
            ctx, ctx.data)
    rows = [r for r in (lone["albumentations"], lone["batched"], *shared, *grouped) if r]
    if lone["albumentations"] is None or not rows:
        print(f"{TITLE}: the budget held no measurement; nothing written")
        return 1
    base = lone["albumentations"].images_per_s
    best = max(rows, key=lambda r: r.images_per_s)
    skipped = [f"Not measured within the {args.budget_s:.0f} s budget: {', '.join(ctx.skipped)}."
               ] if ctx.skipped else []
    body = "\n".join([header(ctx, data_name), "", *table(rows, base), "", *skipped,
                      *verdicts(best, base, lone["rewards"].rewards, grouped), "",
                      recommend(rows), *_search_table(search_lines, left, args)])
    print("\n" + body)
    if not args.smoke:
        write_section(TITLE, body)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_bench.md").write_text(body + "\n", encoding="utf-8")
    print(f"bench/gpu.py: {time.perf_counter() - started:.0f} s")
    return 0


def _search_table(lines: list[str], left: float, args: argparse.Namespace) -> list[str]:
    if lines:
        return ["", "32-trial cifar10 searches on this GPU (the epochs above, no confirmation):",
                "", "| path | GPU per trial | cohort | trials | failed | wall s |",
                "|---|---:|---:|---:|---:|---:|", *lines]
    why = ("--skip-search" if args.skip_search else "--smoke" if args.smoke else
           f"{left:.0f} s of the budget left")
    return ["", f"32-trial searches: not run ({why})."]


if __name__ == "__main__":
    sys.exit(main())
