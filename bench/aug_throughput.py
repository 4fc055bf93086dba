"""Augmentation throughput per core: augsearch policies against torchvision's baselines.

Images/s on one thread for sampled 5x2 policies (through the same albumentations pipeline the
children train with) against torchvision v2 TrivialAugmentWide and RandAugment on the same real
32x32 images. Contenders alternate in rounds so machine noise hits all of them alike; the median
round is reported. Target: policies at least 1.5x TrivialAugmentWide.

    python bench/aug_throughput.py [--images 2000] [--rounds 5]
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
from search.compile import sample_policies  # noqa: E402
from spaces.policy import build_pipeline  # noqa: E402
from spaces.schema import load_space  # noqa: E402


def contenders(n_policies: int) -> dict[str, Callable[[np.ndarray], object]]:
    from torchvision.transforms import v2

    space = load_space("cifar10")
    out: dict[str, Callable[[np.ndarray], object]] = {}
    pipes = [build_pipeline(p, None, 32, seed=k)
             for k, p in enumerate(sample_policies(space, n_policies, seed=0))]
    out[f"augsearch policy (5x2, {n_policies} sampled)"] = _rotate(
        [lambda img, p=p: p(image=img)["image"] for p in pipes])
    pipes_base = [build_pipeline(p, space.child.base_augmentation, 32, seed=k)
                  for k, p in enumerate(sample_policies(space, n_policies, seed=0))]
    out["augsearch policy + crop/flip"] = _rotate(
        [lambda img, p=p: p(image=img)["image"] for p in pipes_base])
    tawide = v2.TrivialAugmentWide()
    randaug = v2.RandAugment(num_ops=2, magnitude=9)
    out["torchvision TrivialAugmentWide"] = lambda img: tawide(_chw(img))
    out["torchvision RandAugment(2, 9)"] = lambda img: randaug(_chw(img))
    return out


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)


def _rotate(fns: list[Callable[[np.ndarray], object]]) -> Callable[[np.ndarray], object]:
    state = {"k": 0}

    def call(img: np.ndarray) -> object:
        state["k"] = (state["k"] + 1) % len(fns)
        return fns[state["k"]](img)

    return call


def measure(fn: Callable[[np.ndarray], object], images: np.ndarray) -> float:
    start = time.perf_counter()
    for img in images:
        fn(img)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    images, source = cifar_images(args.images)
    fns = contenders(8)
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        measure(fn, images[:100])
    for r in range(args.rounds):
        for name, fn in fns.items():
            rates[name].append(measure(fn, images))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    ta = med["torchvision TrivialAugmentWide"]
    lines = ["| pipeline | images/s (1 thread) | vs TrivialAugmentWide |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:,.0f} | {rate / ta:.2f}x |" for name, rate in med.items()]
    ratio = med[next(iter(med))] / ta
    verdict = "met" if ratio >= 1.5 else "NOT met"
    body = "\n".join([
        f"`python bench/aug_throughput.py` — {args.images} real 32x32 images ({source}), "
        f"one thread, median of {args.rounds} alternating rounds. {machine()}.", "",
        *lines, "",
        f"Target (policy >= 1.5x TrivialAugmentWide): **{verdict}** ({ratio:.2f}x). "
        "torchvision ops run per image on a uint8 CHW tensor, as in a DataLoader; "
        "augsearch policies on a uint8 HWC array through albumentations/OpenCV."])
    print(body)
    write_section("Augmentation throughput", body)


if __name__ == "__main__":
    main()
