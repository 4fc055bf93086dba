"""Does each built-in space's child budget sit where augmentation pays?

A search can only find useful policies if its child overfits without augmentation; a child that
is too small or trained too briefly rewards weak policies, and the search finds the identity.
For each built-in space whose data is available here, this trains the space's child (its model,
width, epochs, optimiser) on the space's train subset with no augmentation at all and with the
space's base crop(+flip), several seeds, side by side, and reports the validation accuracy the
reward would see, the audit accuracy and the train-val gap.

    python bench/child_budget.py [--seeds 2] [--spaces digits,cifar10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402
from children.datasets import load_dataset, make_splits  # noqa: E402
from children.errors import DataError  # noqa: E402
from children.train import train_child  # noqa: E402
from spaces.policy import identity_policy  # noqa: E402
from spaces.schema import BaseAug, Space, builtin_spaces, load_space  # noqa: E402

# Where the machine has no copy of a built-in dataset, real stand-ins from ../shared/data with
# the split sizes they can hold (cifar10_small: 5,000 train images).
STAND_INS = {"cifar10": ("cifar10_small.npz", {"dataset.train_size": 2000,
                                              "dataset.val_pool_size": 1500,
                                              "dataset.audit_size": 1500})}


def space_and_data(name: str) -> tuple[Space, str | None, str]:
    space = load_space(name)
    if name in STAND_INS and (SHARED / STAND_INS[name][0]).exists():
        file, sizes = STAND_INS[name]
        return space.replace(**sizes), str(SHARED / file), f"{file} (real CIFAR-10)"
    return space, None, "built-in"


def run_space(name: str, seeds: int) -> list[str] | None:
    space, data, source = space_and_data(name)
    try:
        splits = make_splits(load_dataset(space.dataset, data=data, download=False),
                             space.dataset, seed=0)
    except DataError as err:
        print(f"{name}: skipped ({err})", file=sys.stderr)
        return None
    base = space.child.base_augmentation
    arms = {"none": BaseAug(crop=False, flip=False), "base crop/flip": base}
    results: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in arms}
    for seed in range(seeds):
        for arm, aug in arms.items():
            child = space.child.model_copy(update={"base_augmentation": aug})
            m = train_child(child, space.reward, identity_policy(), splits, seed=seed, threads=2)
            results[arm].append((m.reward, m.audit_accuracy, m.train_val_gap))
            print(f"{name} seed {seed} {arm}: reward {m.reward:.4f} audit "
                  f"{m.audit_accuracy:.4f} gap {m.train_val_gap:+.3f} ({m.wall_seconds:.0f} s)",
                  file=sys.stderr, flush=True)
    c = space.child
    head = (f"| {name} | {source}, train {space.dataset.train_size} | {c.model} w{c.width}, "
            f"{c.epochs} ep |")
    rows = []
    for arm, vals in results.items():
        reward, audit, gap = (statistics.mean(v[k] for v in vals) for k in range(3))
        rows.append(f"{head} {arm} (crop={arms[arm].crop}, flip={arms[arm].flip}) | "
                    f"{reward:.4f} | {audit:.4f} | {gap:+.3f} |")
    none, based = (statistics.mean(v[1] for v in results[a]) for a in arms)
    rows.append(f"{head} **audit gain of base augmentation** | | **{based - none:+.4f}** | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--spaces", default=",".join(builtin_spaces()))
    args = parser.parse_args()
    lines = ["| space | data | child | augmentation | reward (val) | audit acc | train-val gap |",
             "|---|---|---|---|---:|---:|---:|"]
    missing = []
    for name in args.spaces.split(","):
        rows = run_space(name, args.seeds)
        if rows is None:
            missing.append(name)
        else:
            lines += rows
    note = (f"Not measured (no copy of the dataset on this offline machine): "
            f"{', '.join(missing)}." if missing else "")
    body = "\n".join([
        f"`python bench/child_budget.py --seeds {args.seeds}` — each space's own child and "
        f"budget, identity policy, with no augmentation vs the space's base augmentation; mean "
        f"of {args.seeds} seeds. {machine()}.", "", *lines, "", note,
        "A positive audit gain means the child overfits without augmentation, so the search's "
        "reward can tell useful augmentation from none."])
    print(body)
    write_section("Child budget: does augmentation pay?", body)


if __name__ == "__main__":
    main()
