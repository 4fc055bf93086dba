"""Search quality: does the policy augsearch hands a user beat what the user gets for free?

For each built-in space whose data is here (the digits space on scikit-learn's digits; the
cifar10 space on real CIFAR-10 from ../shared/data/cifar10_small.npz, Krizhevsky 2009), at the
space's own child budget:

1. TPE with confirmation (the space's defaults: the 3 best policies and the base retrained with
   2 more seeds; the winner is the best mean), and random search with the same number of child
   trainings, confirmation counted, and no confirmation (its winner is its best reward);
   and density matching (Fast AutoAugment: fold models trained once, 8x TPE's trials and at
   most 200 policies scored by them, unconfirmed), whose best trial (`dm-single`) and merged
   policy (`dm-merged`) are both evaluated;
2. per search: the Spearman rank correlation of reward and audit accuracy across its trials, and
   where its winner's audit accuracy ranks among its trials;
3. every winner retrained on the search's own training images (the budget they were found at)
   beside no augmentation, the space's crop/flip and torchvision's TrivialAugmentWide, same seeds
   for every arm, tested on the test set no search touched: paired differences with Student-t 95%
   confidence intervals.

Every verdict below is computed from the figures of the run that prints it.

    python bench/search_quality.py                  # the full run (~1 hour on 2 cores)
    python bench/search_quality.py --quick          # the whole pipeline at a toy budget (~5 min)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
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

SECTION = "Search quality: found policies against the free baselines"
BASELINES = "none,cropflip,trivialaugment"
TARGET_SPEARMAN = 0.6


@dataclass(frozen=True)
class Setup:
    """One space of the bench: its data, how many searches and evaluation seeds."""

    name: str
    data: Path | None
    described: str
    search_seeds: int
    eval_seeds: int
    trials: int | None = None  # TPE's trials (default: the space's)


SETUPS = (
    Setup("digits", None, "scikit-learn digits (built in)", search_seeds=2, eval_seeds=8),
    Setup("cifar10", SHARED / "cifar10_small.npz",
          "real CIFAR-10, cifar10_small.npz (Krizhevsky 2009)", search_seeds=1, eval_seeds=3,
          trials=16),  # the space's 32 would take ~1.5 h here alone
)
DENSITY_TRIALS = 200  # the density-matching search (a few CPU-minutes on either space)
QUICK = {"search.trials": 6, "child.epochs": 3, "reward.last_epochs": 1,
         "search.confirm": 1, "search.confirm_seeds": 1}


@dataclass
class SearchRun:
    searcher: str
    seed: int
    out: Path
    rows: list[dict[str, Any]]
    winner: str  # trial id, or "base"
    trainings: int
    minutes: float
    verdict: str  # the search's own words on its winner
    policies: dict[str, Path]  # the arms it hands to the evaluation: name -> policy file


# ---------------------------------------------------------------- searching


def run_search(space: Space, setup: Setup, searcher: str, seed: int, root: Path,
               **options: Any) -> SearchRun:
    from search.api import search

    name = options.pop("label", searcher)
    out = root / f"{space.name}-{name}-{seed}"
    data = {"data": str(setup.data)} if setup.data else {}
    started = time.perf_counter()
    result = search(space, searcher, seed=seed, output=out, concurrency=2, **data, **options)
    minutes = (time.perf_counter() - started) / 60
    confirmed = _confirm_rows(out)
    trainings = len(result.leaderboard) + sum(r["source"] == "confirm" for r in confirmed)
    verdict = result.confirmation.verdict if result.confirmation else None
    words = verdict.text() if verdict else "not confirmed: the best reward is the winner"
    policies = {f"{name}-{seed}": out / "best_policy.yaml"}
    if (out / "merged_policy.yaml").exists():
        policies = {f"{name}-single-{seed}": out / "best_policy.yaml",
                    f"{name}-merged-{seed}": out / "merged_policy.yaml"}
    return SearchRun(name, seed, out, result.leaderboard, result.best_trial, trainings,
                     minutes, words, policies)


def run_density(space: Space, setup: Setup, seed: int, root: Path) -> SearchRun:
    """Density matching (Fast AutoAugment) at the same space and data: 8x TPE's trials, at most
    DENSITY_TRIALS, policies scored by fold models, unconfirmed, so that its two proposals (the
    best trial, `single`, and the merge of each fold's top policies, `merged`) are what the
    evaluation measures."""
    dm = space.replace(**{"reward.kind": "density_matching", "policy.batch_ops": {},
                          "reward.density": {"final": "single"}})
    trials = min(DENSITY_TRIALS, 8 * space.search.trials)
    return run_search(dm, setup, "tpe", seed, root / "dm", trials=trials, confirm=0,
                      label="dm")


def _confirm_rows(out: Path) -> list[dict[str, str]]:
    path = out / "confirm.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def spearman(rows: list[dict[str, Any]]) -> float:
    from scipy.stats import spearmanr

    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["audit_accuracy"])]
    value = spearmanr([r["reward"] for r in ok], [r["audit_accuracy"] for r in ok]).statistic
    return float(value)


def audit_rank(run: SearchRun) -> tuple[int, int]:
    """(rank of the winner's search-trial audit accuracy among the search's trials, trials)."""
    ok = [r for r in run.rows if r["status"] == "ok" and math.isfinite(r["audit_accuracy"])]
    row = next((r for r in ok if r["trial_id"] == run.winner), None)
    if row is None:  # the base won and was not a search trial (PBT): no rank
        row = next((r for r in ok if r.get("reference") == "base"), None)
    if row is None:
        return 0, len(ok)
    return 1 + sum(r["audit_accuracy"] > row["audit_accuracy"] for r in ok), len(ok)


# ---------------------------------------------------------------- evaluation


def run_evaluation(space: Space, setup: Setup, runs: list[SearchRun], root: Path) -> Any:
    from search.evaluate import evaluate

    policies = {arm: path for r in runs for arm, path in r.policies.items()}
    data = {"data": str(setup.data)} if setup.data else {}
    return evaluate(policies, space=space, baselines=BASELINES, seeds=setup.eval_seeds,
                    threads=1, workers=2, train_size=space.dataset.train_size,
                    output=root / f"{space.name}-eval", quiet=False, **data)


def _difference(ev: Any, arm: str, other: str) -> Any:
    return next(d for d in ev.differences if d.arm == arm and d.other == other)


# ---------------------------------------------------------------- the report


def search_lines(runs: list[SearchRun]) -> list[str]:
    lines = ["| search | trials + confirmation trainings | minutes | reward–audit Spearman | "
             "winner | winner's audit rank | the search's verdict |",
             "|---|---:|---:|---:|---|---:|---|"]
    for r in runs:
        rank, n = audit_rank(r)
        lines.append(f"| {r.searcher} seed {r.seed} | {r.trainings} | {r.minutes:.1f} | "
                     f"{spearman(r.rows):+.2f} | {r.winner} | {rank} of {n} | {r.verdict} |")
    return lines


def eval_lines(ev: Any, runs: list[SearchRun]) -> list[str]:
    lines = ["| arm | test accuracy (mean ± sd) | 95% CI |", "|---|---:|---:|"]
    for a in ev.arms:
        e = a.accuracy
        lines.append(f"| {a.name} | {e.mean:.4f} ± {e.std:.4f} | [{e.ci_low:.4f}, "
                     f"{e.ci_high:.4f}] |")
    lines += ["", "| found policy | vs | Δ test accuracy | paired 95% CI | seeds better |",
              "|---|---|---:|---:|---:|"]
    for arm in (arm for r in runs for arm in r.policies):
        for other in ("none", "cropflip", "trivialaugment"):
            d = _difference(ev, arm, other)
            lines.append(f"| {arm} | {other} | {d.diff.mean:+.4f} | [{d.diff.ci_low:+.4f}, "
                         f"{d.diff.ci_high:+.4f}] | {d.wins}/{d.diff.n} |")
    return lines


def target_lines(space: Space, ev: Any, runs: list[SearchRun]) -> list[str]:
    """Each target, met or not, computed from the figures above."""
    out = []
    for r, arm in ((run, arm) for run in runs for arm in run.policies):
        rho = spearman(r.rows)
        rank, n = audit_rank(r)
        quarter = math.ceil(n / 4)
        crop, trivial = _difference(ev, arm, "cropflip"), _difference(ev, arm, "trivialaugment")
        base_won = "merged" not in arm and _kept_base(r)
        out.append(
            f"- {space.name}, {arm}: reward–audit Spearman {rho:+.2f} (target ≥ "
            f"{TARGET_SPEARMAN}: **{_met(rho >= TARGET_SPEARMAN)}**); winner's audit accuracy "
            f"ranks {rank} of {n} (target: top quarter, ≤ {quarter}: "
            f"**{_met(0 < rank <= quarter)}**); vs cropflip on test {_ci(crop.diff)} (target ≥ "
            f"cropflip with the CI: **{_vs_crop(crop.diff, base_won)}**); vs trivialaugment "
            f"{_ci(trivial.diff)} (target not worse: **{_not_worse(trivial.diff)}**).")
    return out


def _kept_base(r: SearchRun) -> bool:
    return r.winner == "base" or any(
        row["trial_id"] == r.winner and row.get("reference") == "base" for row in r.rows)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _ci(e: Any) -> str:
    return f"{e.mean:+.4f} [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"


def _vs_crop(e: Any, base_won: bool) -> str:
    if base_won:
        return "met only trivially: the search kept the base, which is cropflip itself"
    if e.ci_low > 0:
        return "met: the CI lies above 0"
    if e.mean >= 0:
        return "NOT shown: the mean is ≥ 0 but the CI contains 0"
    return "NOT met: the mean is below cropflip"


def _not_worse(e: Any) -> str:
    return "met" if e.ci_high >= 0 else "NOT met: the CI lies below 0"


def budget_line(space: Space, setup: Setup) -> str:
    d, c, s = space.dataset, space.child, space.search
    r = space.reward
    return (f"**{space.name}** on {setup.described}: train {d.train_size}, validation pool "
            f"{d.val_pool_size} ({r.validation}, {r.epochs} {r.last_epochs} epochs), audit "
            f"{d.audit_size}; child {c.model} w{c.width}, {c.epochs} epochs, batch "
            f"{c.batch_size}; TPE {s.trials} trials + confirmation (top {s.confirm}, "
            f"{s.confirm_seeds} more seeds), random search with as many child trainings; "
            f"evaluation: {setup.eval_seeds} seeds per arm, trained on the search's "
            f"{d.train_size} training images, tested on the test set.")


def run_space(setup: Setup, root: Path, quick: bool) -> list[str] | None:
    if setup.data is not None and not setup.data.exists():
        return [f"**{setup.name}**: unmeasured ({setup.data} is absent)."]
    space = load_space(setup.name)
    if setup.trials is not None:
        space = space.replace(**{"search.trials": setup.trials})
    if quick:
        space = space.replace(**QUICK)
    runs = []
    for seed in range(setup.search_seeds):
        tpe = run_search(space, setup, "tpe", seed, root)
        runs.append(tpe)
        runs.append(run_search(space, setup, "random", seed, root, trials=tpe.trainings,
                               confirm=0))
        runs.append(run_density(space, setup, seed, root))
    started = time.perf_counter()
    ev = run_evaluation(space, setup, runs, root)
    minutes = (time.perf_counter() - started) / 60
    cost = sum(r.minutes for r in runs) + minutes
    return [budget_line(space, setup), "", *search_lines(runs), "",
            f"Evaluation ({minutes:.0f} min):", "", *eval_lines(ev, runs), "",
            *target_lines(space, ev, runs), f"- {space.name} cost: {cost:.0f} min on this "
            f"machine (searches {sum(r.minutes for r in runs):.0f}, evaluation "
            f"{minutes:.0f})."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a toy budget (pipeline check)")
    parser.add_argument("--spaces", default=",".join(s.name for s in SETUPS))
    parser.add_argument("--root", default="bench-runs/search_quality",
                        help="where the searches and evaluations are written")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    for setup in SETUPS:
        if setup.name in args.spaces.split(","):
            report(setup, root / setup.name, args.quick)


def report(setup: Setup, root: Path, quick: bool) -> None:
    """One space's section (each space is its own section: they can run apart)."""
    started = time.perf_counter()
    body = run_space(setup, root, quick)
    minutes = (time.perf_counter() - started) / 60
    label = "QUICK pipeline check (toy budget: figures say nothing about quality). " \
        if quick else ""
    text = "\n".join([f"{label}`python bench/search_quality.py --spaces {setup.name}"
                      f"{' --quick' if quick else ''}` — {machine()}; {minutes:.0f} min, load "
                      f"average {os.getloadavg()[0]:.1f} at the end.", "", *body])
    print(text)
    if not quick:
        write_section(f"{SECTION}: {setup.name}", text)
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.md").write_text(text + "\n", encoding="utf-8")
    print(json.dumps({"space": setup.name, "minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main()
