"""Density matching's validity: does its reward rank policies as real child training does?

A density-matching trial's `audit_accuracy` is the fold models' accuracy on policy-augmented
audit images: the same quantity its reward measures on held-out images, so the reward–audit
Spearman of a density search says little about whether the policies it prefers train better
children. Here a density-matching search (TPE, the space's density defaults, unconfirmed) is
run, ~12 of its trials are picked evenly over the range of its reward, and a real child (the
space's own child and budget, trained on the search's training images) is trained under each
policy with 2 seeds and tested on the test set no search touched. The figure is the Spearman
rank correlation across the picked policies between the density reward and the children's mean
test accuracy, with a percentile bootstrap 95% CI over policies; the circular figure (density
reward vs the density trial's own audit accuracy, same policies) is printed beside it.

    python bench/density_validity.py                    # digits (~5 min on 2 cores)
    python bench/density_validity.py --spaces digits,cifar10   # + CIFAR-10 (~40 min more)
    python bench/density_validity.py --quick            # the pipeline at a toy budget
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

SECTION = "Density matching's validity: its reward against real child training"
DATA = {"digits": None, "cifar10": SHARED / "cifar10_small.npz"}
TRIALS = {"digits": 200, "cifar10": 128}  # as bench/search_quality.py (8x TPE's, at most 200)
POLICIES = 12
SEEDS = 2
BOOTSTRAP = 10_000
QUICK = {"child.epochs": 3, "reward.last_epochs": 1}


@dataclass(frozen=True)
class Picked:
    trial: str
    reference: str
    reward: float  # the density reward (−NLL of the fold models on augmented held-out images)
    density_audit: float  # the density trial's own audit figure (fold models, augmented audit)
    test: list[float]  # real children's test accuracy, one per seed

    @property
    def test_mean(self) -> float:
        return sum(self.test) / len(self.test)


def density_space(name: str, quick: bool) -> Space:
    space = load_space(name).replace(**{"reward.kind": "density_matching",
                                        "policy.batch_ops": {}})
    return space.replace(**QUICK) if quick else space


def run_search(name: str, space: Space, root: Path, quick: bool) -> Path:
    """The density-matching search, or the finished one already under `root`."""
    out = root / f"{name}-dm-search"
    if (out / "leaderboard.csv").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    from search.api import search

    data = {"data": str(DATA[name])} if DATA[name] else {}
    search(space, "tpe", seed=0, trials=24 if quick else TRIALS[name], confirm=0,
           concurrency=2, output=out, **data)
    return out


def pick(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` distinct policies evenly spaced over the sorted rewards (lowest, highest and
    between); a policy tried twice counts once, at its lower reward."""
    import numpy as np

    ok = sorted((r for r in rows if r["status"] == "ok" and math.isfinite(r["reward"])),
                key=lambda r: r["reward"])
    seen, unique = set(), []
    for r in ok:
        key = json.dumps(r["config"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    index = np.linspace(0, len(unique) - 1, min(n, len(unique))).round().astype(int)
    return [unique[i] for i in index]


def train_children(name: str, space: Space, rows: list[dict[str, Any]], root: Path,
                   quick: bool) -> list[Picked]:
    """A real child per picked policy and seed (search.evaluate: the space's child and budget,
    the search's training images, the test set)."""
    from search.evaluate import evaluate
    from search.trials.references import policy_of
    from spaces.policy import save_policy

    child_space = space.replace(**{"reward.kind": "child_training"})
    folder = root / f"{name}-policies"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for k, r in enumerate(rows):
        files[f"p{k:02d}"] = save_policy(policy_of(space, r["config"]),
                                         folder / f"p{k:02d}.yaml")
    out = root / f"{name}-children"
    if out.exists():
        shutil.rmtree(out)
    data = {"data": str(DATA[name])} if DATA[name] else {}
    ev = evaluate(files, space=child_space, baselines="", seeds=1 if quick else SEEDS,
                  threads=1, workers=2, train_size=space.dataset.train_size, output=out,
                  quiet=False, **data)
    by_arm = {a.name: a.accuracies for a in ev.arms}
    return [Picked(r["trial_id"], str(r.get("reference") or ""), r["reward"],
                   r["audit_accuracy"], by_arm[f"p{k:02d}"]) for k, r in enumerate(rows)]


def spearman(a: list[float], b: list[float]) -> float:
    from bench.ranks import spearman as rho

    return rho(a, b)


def bootstrap_ci(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of Spearman's rho, resampling policies (pairs):
    `bench.ranks.spearman_interval`, scipy's bootstrap."""
    from bench.ranks import spearman_interval

    _, low, high = spearman_interval(a, b, resamples=BOOTSTRAP, seed=seed)
    return low, high


def space_lines(name: str, space: Space, picked: list[Picked], trials: int,
                minutes: float) -> tuple[list[str], str]:
    reward = [p.reward for p in picked]
    test = [p.test_mean for p in picked]
    rho = spearman(reward, test)
    low, high = bootstrap_ci(reward, test)
    circular = spearman(reward, [p.density_audit for p in picked])
    c, d = space.child, space.dataset
    lines = [f"**{name}**: a density-matching TPE search of {trials} trials (the space's density "
             f"defaults: {space.reward.matching().folds} folds, {space.reward.matching().copies} "
             f"copies, score {space.reward.matching().score}); {len(picked)} of its trials "
             f"picked evenly over the sorted rewards; under each, a real child ({c.model} "
             f"w{c.width}, {c.epochs} epochs, batch {c.batch_size}) trained on the search's "
             f"{d.train_size} training images with {len(picked[0].test)} seeds, tested on the "
             f"test set; {minutes:.0f} min.", "",
             "| trial | reference | density reward | density trial's audit accuracy (fold "
             "models) | child test accuracy (mean of seeds) |", "|---|---|---:|---:|---:|"]
    for p in sorted(picked, key=lambda p: p.reward):
        lines.append(f"| {p.trial} | {p.reference or '—'} | {p.reward:+.4f} | "
                     f"{p.density_audit:.4f} | {p.test_mean:.4f} |")
    shown = ("a positive association is shown (the CI lies above 0)" if low > 0 else
             "a negative association (the CI lies below 0)" if high < 0 else
             "no association is shown (the CI contains 0)")
    verdict = (f"- {name}: Spearman(density reward, real child test accuracy) over "
               f"{len(picked)} policies **{rho:+.2f}** (bootstrap 95% CI [{low:+.2f}, "
               f"{high:+.2f}]): {shown}. The circular figure on the same policies (density "
               f"reward vs the density trial's own audit accuracy): {circular:+.2f}. Child test "
               f"accuracies span {min(test):.4f} to {max(test):.4f}.")
    return lines, verdict


def run_space(name: str, root: Path, quick: bool, n: int) -> tuple[list[str], str]:
    from bench.search_quality import read_leaderboard

    started = time.perf_counter()
    space = density_space(name, quick)
    out = run_search(name, space, root, quick)
    rows = read_leaderboard(out / "leaderboard.csv")
    picked = train_children(name, space, pick(rows, n), root, quick)
    minutes = (time.perf_counter() - started) / 60
    return space_lines(name, space, picked, len(rows), minutes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="digits")
    parser.add_argument("--policies", type=int, default=POLICIES)
    parser.add_argument("--root", default="bench-runs/density_validity")
    parser.add_argument("--quick", action="store_true", help="a toy budget; writes no section")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    body, verdicts = [], []
    for name in args.spaces.split(","):
        if DATA[name] is not None and not DATA[name].exists():
            verdicts.append(f"- {name}: unmeasured ({DATA[name]} is absent).")
            continue
        lines, verdict = run_space(name, root, args.quick, args.policies)
        body += [*lines, ""]
        verdicts.append(verdict)
        print("\n".join([*lines, "", verdict]), flush=True)
    minutes = (time.perf_counter() - started) / 60
    label = "QUICK pipeline check (toy budget: figures say nothing). " if args.quick else ""
    text = "\n".join([f"{label}`python bench/density_validity.py --spaces {args.spaces}` — "
                      f"{machine()}; {minutes:.0f} min; load average {load:.1f} at the start, "
                      f"{os.getloadavg()[0]:.1f} at the end.", "", *body, *verdicts])
    print(text)
    (root / "report.md").write_text(text + "\n", encoding="utf-8")
    if not args.quick:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
