"""Augmentation throughput on one core: augsearch's two training paths against torchvision.

Images/s on one thread for the pipeline training really uses (the space's pad-and-crop and flip,
then a sampled 5x2 policy) on the per-image albumentations path and on the batched tensor path,
against torchvision v2 TrivialAugmentWide and RandAugment per image (and kornia's batched
TrivialAugment when kornia is installed), on the same real 32x32 images. Contenders alternate in
rounds so machine noise hits all of them alike; the median round is reported, as wall-clock and
as the thread's CPU time. A second table times every op alone on both paths, and kornia's kernels
where they mean the same as albumentations, with their largest difference from albumentations.
Targets: batched path >= 3x TrivialAugmentWide, per-image path >= 1.5x (both with crop/flip).

    python bench/aug_throughput.py [--images 2048] [--rounds 5] [--batch 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import cifar_images, machine, write_section  # noqa: E402
from children import tensor_ops as T  # noqa: E402
from children.tensor_aug import BATCHED, BatchedPipeline, Draws  # noqa: E402
from search.trials.compile import sample_policies  # noqa: E402
from spaces.ops import OPS, build_op, get_op  # noqa: E402
from spaces.policy import Op, Policy, SubPolicy, build_pipeline  # noqa: E402
from spaces.schema import load_space  # noqa: E402

TARGETS = {"batched": 3.0, "per image": 1.5}  # x TrivialAugmentWide, crop/flip included
TA = "torchvision TrivialAugmentWide (per image)"
PER_IMAGE = "augsearch crop/flip + policy, per image (albumentations)"
Run = Callable[[], None]


def contenders(images: np.ndarray, batch: int, n_policies: int) -> dict[str, Run]:
    """Each contender augments all `images` once per call."""
    from torchvision.transforms import v2

    space = load_space("cifar10")
    base, size = space.child.base_augmentation, images.shape[1]
    policies = sample_policies(space, n_policies, seed=0)
    chw = [torch.from_numpy(i).permute(2, 0, 1).contiguous() for i in images]
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    pipes = [build_pipeline(p, base, size, seed=k) for k, p in enumerate(policies)]
    batched = [BatchedPipeline(p, base, size) for p in policies]
    draws = Draws(0)
    tawide, randaug = v2.TrivialAugmentWide(), v2.RandAugment(num_ops=2, magnitude=9)
    cropflip_ta = v2.Compose([v2.RandomCrop(size, padding=base.crop_padding),
                              v2.RandomHorizontalFlip(), v2.TrivialAugmentWide()])
    batches = [nchw[s:s + batch] for s in range(0, len(nchw), batch)]
    out: dict[str, Run] = {
        TA: _loop(tawide, chw),
        "torchvision crop/flip + TrivialAugmentWide (per image)": _loop(cropflip_ta, chw),
        "torchvision RandAugment(2, 9) (per image)": _loop(randaug, chw),
        PER_IMAGE: _loop(lambda k: pipes[k % len(pipes)](image=images[k]), range(len(images))),
        f"augsearch crop/flip + policy, batched ({batch} per batch)":
            _loop(lambda k: batched[k % len(batched)](batches[k], draws), range(len(batches))),
    }
    kornia_ta = _kornia_trivial_augment()
    if kornia_ta is not None:
        unit = [b.float() / 255.0 for b in batches]
        out[f"kornia TrivialAugment ({batch} per batch, float)"] = _loop(kornia_ta, unit)
    return out


def _loop(fn: Callable[[object], object], items: object) -> Run:
    """A contender: `fn` on every item."""
    def run() -> None:
        for item in items:  # type: ignore[attr-defined]
            fn(item)

    return run


def _kornia_trivial_augment() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from kornia.augmentation.auto import TrivialAugment
    except ImportError:
        return None
    return TrivialAugment()


def _timed(run: Run) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return time.perf_counter() - wall, time.thread_time() - cpu


def measure(runs: dict[str, Run], n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median images/s (wall-clock, CPU time) per contender over alternating rounds."""
    for run in runs.values():  # warm-up
        run()
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            wall, cpu = _timed(run)
            rates[name].append((n / wall, n / cpu))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for name, v in rates.items()}


# ---------------------------------------------------------------- op by op


def _kornia_kernels() -> dict[str, Callable[[torch.Tensor, float], torch.Tensor]]:
    """kornia's kernels that mean what the op table's albumentations transforms mean."""
    try:
        from kornia.filters import filter2d, filter2d_separable
        from kornia.geometry.transform import warp_affine
    except ImportError:
        return {}

    def warp(kind: str) -> Callable[[torch.Tensor, float], torch.Tensor]:
        def run(x: torch.Tensor, s: float) -> torch.Tensor:
            n, (h, w) = len(x), x.shape[2:]
            angle = torch.full((n,), s, dtype=torch.float64)
            zero = torch.zeros_like(angle)
            args = [angle if kind == k else zero for k in ("rotate", "shear_x", "shear_y")]
            m = T.affine_matrices(h, w, *args).float()
            return warp_affine(x, m, (h, w), mode="bilinear", padding_mode="zeros",
                               align_corners=True).round_().clamp_(0, 255)
        return run

    def sharpen(x: torch.Tensor, a: float) -> torch.Tensor:
        kernel = torch.full((1, 3, 3), -a)
        kernel[0, 1, 1] = 1.0 + 8.0 * a
        return filter2d(x, kernel, border_type="reflect").round_().clamp_(0, 255)

    def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
        k = T.gaussian_kernel(sigma).float().unsqueeze(0)
        return filter2d_separable(x, k, k, border_type="reflect").round_().clamp_(0, 255)

    return {"Rotate": warp("rotate"), "ShearX": warp("shear_x"), "ShearY": warp("shear_y"),
            "Sharpness": sharpen, "GaussianBlur": blur}


def _best_cpu_us(run: Run, n: int, reps: int = 3) -> float:
    run()
    return min(_timed(run)[1] for _ in range(reps)) / n * 1e6


def op_costs(images: np.ndarray, batch: int, magnitude: float = 0.5) -> list[tuple]:
    """Per op: albumentations µs/image, batched µs/image, and kornia's µs/image with its
    largest difference (levels) from albumentations at the same fixed sign."""
    x = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).float().contiguous()
    kornia = _kornia_kernels()
    return [_op_cost(name, images[:batch], x, magnitude, kornia.get(name)) for name in OPS]


def _op_cost(name: str, images: np.ndarray, x: torch.Tensor, magnitude: float,
             kornia: Callable[[torch.Tensor, float], torch.Tensor] | None) -> tuple:
    n = len(images)
    alone = build_pipeline(Policy((SubPolicy((Op(name, magnitude, 1.0),)),)), None,
                           images.shape[1], seed=0)
    albu = _best_cpu_us(_loop(lambda i: alone(image=i), images), n)
    s, op = get_op(name).strength(magnitude), BATCHED[name]
    signs = torch.ones(n, dtype=torch.float64)
    ours = _best_cpu_us(_loop(lambda _: op.apply(x.clone(), s, signs, Draws(0)), [0]), n)
    if kornia is None:
        return name, albu, ours, None, None
    theirs = _best_cpu_us(_loop(lambda _: kornia(x, s), [0]), n)
    positive = build_op(name, magnitude, 1.0)
    positive = positive.transforms[0].transforms[0] if get_op(name).signed else positive
    reference = np.stack([positive(image=i)["image"] for i in images]).astype(np.int16)
    ours_k = kornia(x, s).permute(0, 2, 3, 1).numpy().astype(np.int16)
    return name, albu, ours, theirs, int(np.abs(ours_k - reference).max())


# ---------------------------------------------------------------- report


def verdicts(med: dict[str, tuple[float, float]], batched: str) -> list[str]:
    """One line per target, from the measured ratios (wall-clock and CPU time)."""
    ta_wall, ta_cpu = med[TA]
    lines = []
    for path, name in (("batched", batched), ("per image", PER_IMAGE)):
        wall, cpu = med[name][0] / ta_wall, med[name][1] / ta_cpu
        target = TARGETS[path]
        met = [label for label, r in (("wall-clock", wall), ("CPU time", cpu)) if r >= target]
        verdict = ("met" if len(met) == 2 else f"met on {met[0]} only" if met else "NOT met")
        lines.append(f"Target ({path} path with crop/flip >= {target:g}x TrivialAugmentWide): "
                     f"**{verdict}** ({wall:.2f}x wall-clock, {cpu:.2f}x CPU time).")
    return lines


def report(med: dict[str, tuple[float, float]], ops: list[tuple], batched: str, source: str,
           args: argparse.Namespace, load: tuple[float, float]) -> str:
    ta_wall, ta_cpu = med[TA]
    lines = ["| pipeline | images/s wall-clock | vs TA | images/s CPU time | vs TA |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {w:,.0f} | {w / ta_wall:.2f}x | {c:,.0f} | {c / ta_cpu:.2f}x |"
              for name, (w, c) in sorted(med.items(), key=lambda kv: -kv[1][0])]
    speedup = med[batched][0] / med[PER_IMAGE][0]
    op_lines = ["| op | albumentations µs/image | batched µs/image | batched speed-up | "
                "kornia µs/image | kornia max diff (levels) |", "|---|---:|---:|---:|---:|---:|"]
    for name, albu, ours, theirs, diff in ops:
        k = "" if theirs is None else f"{theirs:.1f}"
        d = "" if diff is None else str(diff)
        op_lines.append(f"| {name} | {albu:.1f} | {ours:.1f} | {albu / ours:.1f}x | {k} | {d} |")
    kornia_ops = [(name, ours, theirs) for name, _, ours, theirs, _ in ops if theirs is not None]
    faster = [name for name, ours, theirs in kornia_ops if theirs < ours]
    choice = (f"kornia's kernels were faster for {', '.join(faster)}." if faster else
              f"kornia's kernels were slower than augsearch's own for all {len(kornia_ops)} "
              f"ops where they mean the same (by {min(t / o for _, o, t in kornia_ops):.1f}x to "
              f"{max(t / o for _, o, t in kornia_ops):.1f}x), so the batched path uses its own."
              if kornia_ops else "kornia is not installed: its kernels were not timed.")
    return "\n".join([
        f"`python bench/aug_throughput.py` — {args.images} real 32x32 images ({source}), one "
        f"thread, median of {args.rounds} alternating rounds. {machine()}; load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end (the machine is shared).", "",
        *lines, "",
        *verdicts(med, batched), "",
        f"The batched path made {speedup:.1f}x the per-image path's images/s (wall-clock) on "
        f"the same policies. Per-image contenders take a uint8 CHW tensor (torchvision) or HWC "
        f"array (albumentations) per call, as a DataLoader worker does; batched ones a uint8 "
        f"N×C×H×W tensor (kornia: float in [0, 1]). CPU time is this thread's; wall-clock also "
        f"counts time the thread waited for the shared cores.", "",
        f"Each op alone at magnitude 0.5, probability 1, on {args.batch} images (best of 3, "
        f"CPU time); kornia's differences are against albumentations at the same sign:", "",
        *op_lines, "",
        choice,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_before = os.getloadavg()[0]
    images, source = cifar_images(args.images)
    runs = contenders(images, args.batch, 8)
    med = measure(runs, len(images), args.rounds)
    ops = op_costs(images, args.batch)
    batched = next(name for name in med if name.startswith("augsearch crop/flip + policy, batch"))
    body = report(med, ops, batched, source, args, (load_before, os.getloadavg()[0]))
    print(body)
    write_section("Augmentation throughput", body)


if __name__ == "__main__":
    main()
