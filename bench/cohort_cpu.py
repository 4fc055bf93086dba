"""Cohorts on the CPU: do K children trained as one cohort cost less CPU than K lone children?

For both built-in CIFAR-10 children (basiccnn width 16, the cifar10 space's; resnet_fast width
8), on one thread, trains K children as one cohort (`children.cohort.train_cohort`, as a search
with `search.cohort: K` does) and the same K children one after another
(`children.train.train_child`), for K = 1, 2, 4, 8: the same data, the same K policies (sampled
from the cifar10 space, member k = lone child k), the same common seed and augmentation seeds,
the same epochs. Each reports training images per second per core: K × training images ×
epochs / the process's CPU seconds (`time.process_time`: every thread of the process, the
prefetch thread included; model building and each epoch's validation included, alike for both),
side by side, with the ratio cohort / lone. The two runs of each K alternate which goes first,
so the machine's drift hits both alike.

Data: real CIFAR-10 (../shared/data/cifar10_small.npz, Krizhevsky 2009) when present, else
scikit-learn digits upscaled to 32x32 RGB.

    python bench/cohort_cpu.py                          # ~10 min, projected (writes its section)
    python bench/cohort_cpu.py --epochs 1 --images 128 --ks 1,2 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402

SECTION = "Cohorts on the CPU"
CHILDREN = (("basiccnn", 16), ("resnet_fast", 8))  # the cifar10 space's child; the larger one
KS = (1, 2, 4, 8)
VAL_IMAGES = 200  # validation pool: scored in the last epoch, alike for both


@dataclass(frozen=True)
class Row:
    """One child model and K: both ways' images per second per core, and the training paths."""

    model: str
    width: int
    k: int
    cohort: float  # images / CPU second, the cohort
    lone: float  # images / CPU second, K lone children one after another
    path: str = ""  # the augmentation path(s) the trainers took

    @property
    def ratio(self) -> float:
        return ratio(self.cohort, self.lone)


def rate(k: int, images: int, epochs: int, cpu_seconds: float) -> float:
    """Training images per CPU second: K children × `images` × `epochs` over the CPU time."""
    if cpu_seconds <= 0:
        raise ValueError(f"cpu_seconds must be > 0, got {cpu_seconds}")
    return k * images * epochs / cpu_seconds


def ratio(cohort: float, lone: float) -> float:
    """How many times the lone children's images per CPU second the cohort makes."""
    return cohort / lone if lone > 0 else float("nan")


def table(rows: Sequence[Row]) -> str:
    """The markdown table: one line per child model and K."""
    lines = ["| child | K | cohort: images/s per core | K lone children: images/s per core | "
             "cohort / lone | augmentation path |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.model} w{r.width} | {r.k} | {r.cohort:,.0f} | {r.lone:,.0f} | "
                     f"{r.ratio:.2f}x | {r.path} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- measuring


def load_splits(images: int) -> tuple[Any, str]:
    """`images` training images (at most what the data holds beside the validation pool) and
    a small validation pool: CIFAR-10 if here, else digits."""
    from children.datasets import load_dataset, make_splits
    from spaces.schema import DatasetSpec

    path = SHARED / "cifar10_small.npz"
    common = dict(train_size=1, val_pool_size=VAL_IMAGES, audit_size=0, image_size=32,
                  channels=3, num_classes=10)
    if path.exists():
        spec = DatasetSpec(name="npz", path=str(path), **common)
        source = "real CIFAR-10 (cifar10_small.npz, Krizhevsky 2009)"
    else:
        spec = DatasetSpec(name="digits", resize=True, **common)
        source = "scikit-learn digits upscaled to 32x32 RGB"
    data = load_dataset(spec)
    spec = spec.model_copy(update={"train_size": min(images, len(data.y_train) - VAL_IMAGES)})
    return make_splits(data, spec, seed=0), source


def space_for(model: str, width: int, epochs: int) -> Any:
    from spaces.schema import load_space

    return load_space("cifar10").replace(**{"child.model": model, "child.width": width,
                                            "child.epochs": epochs, "reward.last_epochs": 1})


def run_cohort(space: Any, policies: list[Any], splits: Any, epochs: int) -> tuple[float, str]:
    """(process CPU seconds, path) of the K policies' children trained as one cohort."""
    from children.cohort import train_cohort

    started = time.process_time()
    metrics = train_cohort(space.child, space.reward, policies, splits, seed=0,
                           aug_seeds=list(range(len(policies))), threads=1, device="cpu",
                           epochs=epochs)
    return time.process_time() - started, metrics[0].augmentation


def run_lone(space: Any, policies: list[Any], splits: Any, epochs: int) -> tuple[float, str]:
    """(process CPU seconds, paths) of the same K children trained one after another."""
    from children.train import train_child

    started = time.process_time()
    paths = [train_child(space.child, space.reward, policy, splits, seed=0, aug_seed=k,
                         threads=1, device="cpu", epochs=epochs).augmentation
             for k, policy in enumerate(policies)]
    return time.process_time() - started, " and ".join(sorted(set(paths)))


def measure(model: str, width: int, ks: Sequence[int], splits: Any, epochs: int) -> list[Row]:
    """Both ways for every K, after a short warm-up of each; the first alternates per K."""
    from children.datasets import Arrays, Splits
    from search.trials.compile import sample_policies

    space = space_for(model, width, epochs)
    policies = sample_policies(space, max(ks), seed=0)
    few = Splits(Arrays(splits.train.x[:64], splits.train.y[:64]), splits.val_pool,
                 splits.audit, splits.test, splits.num_classes)
    run_cohort(space, policies[:2], few, 1)
    run_lone(space, policies[:1], few, 1)
    images = len(splits.train)
    rows = []
    for i, k in enumerate(ks):
        ways = [("cohort", run_cohort), ("lone", run_lone)]
        seconds, paths = {}, {}
        for name, way in ways if i % 2 == 0 else ways[::-1]:
            seconds[name], paths[name] = way(space, policies[:k], splits, epochs)
            print(f"[cohort_cpu] {model} w{width} K={k} {name}: {seconds[name]:.1f} CPU s",
                  file=sys.stderr, flush=True)
        path = paths["cohort"] if paths["cohort"] == paths["lone"] else \
            f"cohort {paths['cohort']}, lone {paths['lone']}"
        rows.append(Row(model, width, k, rate(k, images, epochs, seconds["cohort"]),
                        rate(k, images, epochs, seconds["lone"]), path))
    return rows


def report(rows: Sequence[Row], source: str, images: int, epochs: int, minutes: float,
           command: str) -> str:
    """The section: how it was measured, the table, and the figures' range in one line."""
    ratios = [r.ratio for r in rows]
    batch = space_for(*CHILDREN[0], epochs).child.batch_size
    return "\n".join([
        f"`{command}` — {machine()}; {minutes:.1f} min, load average {os.getloadavg()[0]:.1f} "
        f"at the end (the machine is shared).", "",
        f"{images:,} training images of {source}, {epochs} epoch(s), 1 thread, batch {batch} "
        f"(the cifar10 space's child settings); the K children train under K policies sampled "
        f"from the cifar10 space, as a cohort and one after another, the same seeds for both. "
        f"Images/s per core = K × images × epochs / process CPU seconds (all of its threads; "
        f"model building and validation on {VAL_IMAGES} images included for both).", "",
        table(rows), "",
        f"Cohort / lone ranges from {min(ratios):.2f}x to {max(ratios):.2f}x over these "
        f"{len(rows)} measurements (one run each: no interval)."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per child (default 3)")
    parser.add_argument("--images", type=int, default=2000,
                        help="training images per child (default 2000; at most 4800 of "
                             "CIFAR-10, 1297 of digits)")
    parser.add_argument("--ks", default=",".join(map(str, KS)),
                        help="cohort sizes, comma-separated (default 1,2,4,8)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section only; leave docs/BENCHMARKS.md unchanged")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",") if k.strip().isdigit()]
    if len(ks) != len([k for k in args.ks.split(",") if k.strip()]):
        parser.error(f"--ks takes whole numbers, comma-separated, got {args.ks!r}")
    if args.epochs < 1 or args.images < 1 or not ks or min(ks) < 1:
        parser.error("--epochs, --images and every --ks value must be at least 1")
    started = time.perf_counter()
    splits, source = load_splits(args.images)
    rows = [row for model, width in CHILDREN
            for row in measure(model, width, ks, splits, args.epochs)]
    command = (f"python bench/cohort_cpu.py --epochs {args.epochs} --images {args.images} "
               f"--ks {','.join(map(str, ks))}")
    text = report(rows, source, len(splits.train), args.epochs,
                  (time.perf_counter() - started) / 60, command)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
