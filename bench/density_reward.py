"""Density matching's score: accuracy or negative log-likelihood, and how many copies?

Fast AutoAugment scores a policy by how well fold models classify augmented held-out images; its
paper mentions accuracy and minus the loss. Which should augsearch's reward be? A reward a
searcher can use ranks policies (1) the way the quantity it stands for does and (2) the same way
each time it is measured. Here K fold models are trained once, a set of random policies from the
space (and the base) is scored, and for each score and number of augmented copies:

- validity: Spearman rank correlation across policies between the density-matching score and
  the audit accuracy of a child trained under that policy (the child-training search's own
  measure, mean of 2 seeds) — digits only, where training a child per policy is affordable;
- reliability: Spearman correlation across policies between two scorings with independent
  augmentation draws (the reward's noise, relative to the spread between policies);
- cost: images scored per policy.

    python bench/density_reward.py [--policies 24] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

SECTION = "Density matching: accuracy or NLL as the reward"
COPIES = (1, 2, 4, 8)
SCORES = ("accuracy", "nll")
CIFAR = SHARED / "cifar10_small.npz"


@dataclass(frozen=True)
class Setting:
    name: str
    space: Space
    data: str | None
    copies: tuple[int, ...]
    validity: bool  # train a child per policy (affordable on digits only)
    note: str


def settings(quick: bool) -> list[Setting]:
    dm = {"reward.kind": "density_matching", "policy.batch_ops": {}}
    short = {"child.epochs": 4, "reward.last_epochs": 1} if quick else {}
    digits = load_space("digits").replace(**dm, **short)
    out = [Setting("digits", digits, None, COPIES, True, _note("the built-in digits space",
                                                               digits))]
    if CIFAR.exists():
        cifar = load_space("cifar10").replace(**dm, **short)
        out.append(Setting("cifar10", cifar, str(CIFAR), (1, 2, 4), False, _note(
            "the built-in cifar10 space on real CIFAR-10 (cifar10_small.npz)", cifar)))
    return out


def _note(what: str, space: Space) -> str:
    d, c = space.dataset, space.child
    return (f"{what} ({d.train_size:,} train images, audit {d.audit_size:,}, {c.model} width "
            f"{c.width}, {c.epochs} epochs)")


def splits_of(s: Setting):
    from children.datasets import load_dataset, make_splits

    return make_splits(load_dataset(s.space.dataset, data=s.data, download=False),
                       s.space.dataset, seed=0)


def fold_state(job: tuple[Setting, int]) -> dict:
    """Fold k's model of seed 0 (base augmentation only), trained on one thread."""
    import torch

    from children.density import fold_training_splits, held_out_rows
    from children.train import train_child
    from spaces.policy import identity_policy

    s, k = job
    torch.set_num_threads(1)
    splits = splits_of(s)
    held = held_out_rows(s.space.reward.matching(), splits.train.y, seed=0)[k]
    reward = s.space.reward.model_copy(update={"validation": "pool"})
    kept: list = []
    train_child(s.space.child, reward, identity_policy(), fold_training_splits(splits, held),
                seed=0, threads=1, on_epoch=lambda _s, state: kept.append(state.model))
    return kept[-1]


def fold_models(s: Setting, splits, workers: int):
    """The K fold models of seed 0, trained here in `workers` processes."""
    from children.density import FoldModels, held_out_rows

    rows = held_out_rows(s.space.reward.matching(), splits.train.y, seed=0)
    with ProcessPoolExecutor(workers) as pool:
        states = list(pool.map(fold_state, [(s, k) for k in range(len(rows))]))
    return FoldModels.from_states(s.space.child, splits, rows, states)


def policies(space: Space, n: int):
    from search.trials.compile import sample_policies
    from spaces.policy import identity_policy

    return [identity_policy(), *sample_policies(space, n, seed=7)]


def child_audit(job: tuple[Setting, object, int]) -> float:
    """Audit accuracy of a child trained under the policy (one seed, one thread)."""
    import torch

    from children.train import train_child

    s, policy, seed = job
    torch.set_num_threads(1)
    splits = splits_of(s)
    child = s.space.reward.model_copy(update={"kind": "child_training"})
    return train_child(s.space.child, child, policy, splits, seed=seed, threads=1).audit_accuracy


def spearman(a: list[float], b: list[float]) -> float:
    from bench.ranks import spearman as rho

    return rho(a, b)


def measure(s: Setting, n: int, workers: int) -> dict:
    from children.density import score_policy

    splits = splits_of(s)
    started = time.perf_counter()
    models = fold_models(s, splits, workers)
    fold_s = time.perf_counter() - started
    pols = policies(s.space, n)
    base_spec = s.space.reward.matching()
    scores: dict[tuple[str, int, int], list[float]] = {}
    images: dict[int, int] = {}
    for copies in s.copies:
        spec = base_spec.model_copy(update={"copies": copies})
        for draw in (0, 1):
            runs = [score_policy(p, models, splits, spec, s.space.child.base_augmentation,
                                 seed=1000 + draw, threads=1) for p in pols]
            images[copies] = runs[0].images
            scores[("accuracy", copies, draw)] = [r.accuracy for r in runs]
            scores[("nll", copies, draw)] = [-r.nll for r in runs]
    truth = None
    if s.validity:
        jobs = [(s, p, seed) for p in pols for seed in (0, 1)]
        with ProcessPoolExecutor(workers) as pool:
            audits = list(pool.map(child_audit, jobs))
        truth = [(audits[2 * i] + audits[2 * i + 1]) / 2 for i in range(len(pols))]
    rows = []
    for score in SCORES:
        for copies in s.copies:
            a, b = scores[(score, copies, 0)], scores[(score, copies, 1)]
            rows.append({"score": score, "copies": copies, "images": images[copies],
                         "reliability": spearman(a, b),
                         "validity": spearman(a, truth) if truth else None})
    return {"setting": s, "rows": rows, "fold_s": fold_s, "policies": len(pols),
            "truth_range": (min(truth), max(truth)) if truth else None,
            "seconds": time.perf_counter() - started}


def table(results: list[dict]) -> str:
    lines = ["| data | score | copies | images scored per policy | reliability (two draws) | "
             "validity (vs child-trained audit accuracy) |", "|---|---|---:|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            valid = f"{r['validity']:+.3f}" if r["validity"] is not None else "—"
            lines.append(f"| {res['setting'].name} | {r['score']} | {r['copies']} | "
                         f"{r['images']:,} | {r['reliability']:+.3f} | {valid} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = []
    for s in settings(args.quick):
        print(f"[bench] {s.name}: fold models, {args.policies + 1} policies", flush=True)
        results.append(measure(s, args.policies, args.workers))
        print(table(results[-1:]), flush=True)
    body = [f"`python bench/density_reward.py{' --quick' if args.quick else ''}` — "
            f"{machine()}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
            f"the end (the machine is shared).", ""]
    for res in results:
        s = res["setting"]
        body.append(f"- {s.name}: {s.note}; {res['policies']} policies (the base and "
                    f"{res['policies'] - 1} random ones from the space), 5 fold models trained "
                    f"in {res['fold_s']:.0f} s (2 processes); {res['seconds'] / 60:.1f} min in "
                    f"all"
                    + (f"; child-trained audit accuracy of the policies "
                       f"{res['truth_range'][0]:.3f} to {res['truth_range'][1]:.3f}"
                       if res["truth_range"] else "") + ".")
    body += ["", table(results), ""]
    if args.quick:
        body.insert(0, "**QUICK DRY RUN (--quick): figures say nothing.**\n")
    write_section(SECTION, "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
