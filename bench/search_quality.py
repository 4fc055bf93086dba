"""Search quality: does TPE beat random search, and do found policies beat free baselines?

On real CIFAR-10 (../shared/data/cifar10_small.npz, Krizhevsky 2009; the "reduced CIFAR-10"
setting), TPE and random search run with the same budget of child trainings for several search
seeds, side by side on one local Ray. Reported: each search's best reward and the audit accuracy
of that policy, and how many trials TPE needed to reach random's best (and random TPE's). Then
each searcher's best policy is retrained from scratch on all 5,000 training images next to the
five baselines of `search.evaluate` (no augmentation, crop/flip, RandAugment, TrivialAugment,
AutoAugment), same seeds and budget, and tested on the 1,000 test images no search touched.

    python bench/search_quality.py            # the full run (~35 min on 2 busy cores)
    python bench/search_quality.py --quick    # a dry run of the whole pipeline (~3 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
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
from search.api import search  # noqa: E402
from search.evaluate import evaluate  # noqa: E402
from search.tracking import PARENT_FILE, Tracker  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

DATA = SHARED / "cifar10_small.npz"
SEARCHERS = ("tpe", "random")
SECTION = "Search quality: TPE vs random, found policies vs baselines"


@dataclass(frozen=True)
class Budget:
    trials: int
    epochs: int
    search_seeds: int
    eval_seeds: int
    eval_epochs: int
    width: int
    tta: int
    label: str


FULL = Budget(trials=16, epochs=8, search_seeds=2, eval_seeds=2, eval_epochs=8, width=16,
              tta=4, label="full run")
QUICK = Budget(trials=4, epochs=2, search_seeds=1, eval_seeds=1, eval_epochs=1, width=8, tta=2,
               label="QUICK DRY RUN (--quick): tiny budget, figures say nothing about quality")


def bench_space(b: Budget) -> Space:
    """The cifar10 space with its splits reduced to fit cifar10_small's 5,000 training images."""
    return load_space("cifar10").replace(**{
        "dataset.train_size": 2000, "dataset.val_pool_size": 1500, "dataset.audit_size": 1500,
        "reward.val_sample_size": 1000, "reward.last_epochs": min(3, b.epochs),
        "child.width": b.width, "child.epochs": b.epochs, "search.trials": b.trials,
        "search.concurrency": 2, "search.cpus_per_trial": 1})


@dataclass
class SearchRun:
    searcher: str
    seed: int
    rewards: list[float]  # completion order; NaN for failed trials
    audits: list[float]
    best_reward: float
    best_audit: float
    best_at: int  # 1-based trial number (completion order) of the best
    seconds: float
    policy_file: Path
    configs: list[str]  # each trial's policy config (JSON), completion order


def run_search(space: Space, searcher: str, seed: int, out: Path) -> SearchRun:
    started = time.perf_counter()
    result = search(space, searcher, data=str(DATA), seed=seed, output=out, concurrency=2)
    seconds = time.perf_counter() - started
    ended = _end_times(space, out)
    late = max(ended.values(), default=0) + 1
    rows = sorted(result.leaderboard, key=lambda r: (ended.get(r["trial_id"], late), r["trial_id"]))
    rewards = [float(r["reward"]) if r["status"] == "ok" else math.nan for r in rows]
    audits = [float(r["audit_accuracy"]) for r in rows]
    at = next(k for k, r in enumerate(rows, 1) if r["trial_id"] == result.best_trial)
    configs = [json.dumps(r["config"], sort_keys=True) for r in rows]
    return SearchRun(searcher, seed, rewards, audits, result.best_reward, audits[at - 1], at,
                     seconds, out / "best_policy.yaml", configs)


def _end_times(space: Space, out: Path) -> dict[str, int]:
    """When each trial's MLflow run ended: the completion order of the search's trials."""
    tracker = Tracker.connect(None, None, space, out)
    tracker.parent_id = json.loads((out / PARENT_FILE).read_text())["run_id"]
    return {r.data.tags.get("trial_id", ""): r.info.end_time or r.info.start_time or 0
            for r in tracker.nested_runs()}


def first_reaching(rewards: list[float], target: float) -> int | None:
    """1-based trial number at which `rewards` first reaches `target` (None: never)."""
    return next((k for k, r in enumerate(rewards, 1) if math.isfinite(r) and r >= target), None)


def best_so_far(rewards: list[float], k: int) -> float:
    finite = [r for r in rewards[:k] if math.isfinite(r)]
    return max(finite) if finite else math.nan


# ---------------------------------------------------------------- report


def search_table(runs: list[SearchRun]) -> str:
    lines = ["| searcher | search seed | trials ok | best reward | audit acc of best | "
             "best found at trial | wall time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        ok = sum(math.isfinite(x) for x in r.rewards)
        lines.append(f"| {r.searcher} | {r.seed} | {ok}/{len(r.rewards)} | {r.best_reward:.4f} | "
                     f"{r.best_audit:.4f} | {r.best_at} | {r.seconds / 60:.1f} min |")
    return "\n".join(lines)


def race_table(runs: list[SearchRun], seeds: int) -> tuple[str, list[int | None]]:
    lines = ["| search seed | random's best | TPE first reaches it at trial | TPE's best | "
             "random first reaches it at trial |", "|---:|---:|---:|---:|---:|"]
    tpe_needs: list[int | None] = []
    for seed in range(seeds):
        tpe = next(r for r in runs if r.searcher == "tpe" and r.seed == seed)
        rnd = next(r for r in runs if r.searcher == "random" and r.seed == seed)
        a, b = first_reaching(tpe.rewards, rnd.best_reward), first_reaching(rnd.rewards,
                                                                             tpe.best_reward)
        tpe_needs.append(a)
        lines.append(f"| {seed} | {rnd.best_reward:.4f} | {a or 'never'} | {tpe.best_reward:.4f} "
                     f"| {b or 'never'} |")
    return "\n".join(lines), tpe_needs


def curve_table(runs: list[SearchRun], trials: int) -> str:
    marks = sorted({k for k in (2, 4, 8, 12, 16, 24, 32, trials) if k <= trials})
    lines = ["| searcher | " + " | ".join(f"after {k}" for k in marks) + " |",
             "|---|" + "---:|" * len(marks)]
    for searcher in SEARCHERS:
        mine = [r for r in runs if r.searcher == searcher]
        cells = [statistics.mean(best_so_far(r.rewards, k) for r in mine) for k in marks]
        lines.append(f"| {searcher} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines)


def _verdict(diff: dict[str, Any]) -> str:
    lo, hi = diff["ci_low"], diff["ci_high"]
    if lo is None or hi is None:
        return "no interval (1 seed)"
    if lo > 0:
        return "better, the 95% CI excludes 0"
    if hi < 0:
        return "worse, the 95% CI excludes 0"
    return "not distinguishable: the 95% CI contains 0"


def conclusions(runs: list[SearchRun], needs: list[int | None], ev: dict[str, Any],
                b: Budget) -> list[str]:
    """Plain statements of what the figures show, whichever way they fall."""
    out = []
    shared, startup_best = [], []
    for seed in range(b.search_seeds):
        tpe, rnd = (next(r for r in runs if r.searcher == s and r.seed == seed) for s in SEARCHERS)
        common = set(tpe.configs) & set(rnd.configs)
        shared.append(len(common))
        if rnd.configs[rnd.rewards.index(rnd.best_reward)] in common:
            startup_best.append(seed)
    out.append(f"With the same seed, TPE samples the very policies random search draws until "
               f"its first 8 trials have finished (Optuna's startup; with 2 trials at a time one "
               f"more starts before that): {', '.join(map(str, shared))} of {b.trials} policies "
               f"per search seed were trained by both searchers, with identical rewards (a "
               f"trial's seed derives from its policy). Only the remaining "
               f"{', '.join(str(b.trials - n) for n in shared)} trials per seed were "
               f"model-guided, so the comparison rests on them.")
    reached = [n for n in needs if n is not None]
    note = ""
    if startup_best:
        note = (f"; in search seed(s) {', '.join(map(str, startup_best))} random's best was one "
                f"of the policies both drew, so TPE matched it in its startup, not by modelling")
    out.append(f"TPE reached random search's best reward within its {b.trials} trials in "
               f"{len(reached)} of {len(needs)} search seed(s)"
               + (f" (at trial {', '.join(str(n) for n in reached)})" if reached else "")
               + note + ".")
    for searcher in SEARCHERS:
        mine = [r for r in runs if r.searcher == searcher]
        gaps = [r.best_reward - r.best_audit for r in mine]
        mean_best = statistics.mean(r.best_reward for r in mine)
        mean_audit = statistics.mean(r.best_audit for r in mine)
        out.append(f"{searcher}: mean best reward {mean_best:.4f}, its audit accuracy "
                   f"{mean_audit:.4f} (selection gap {statistics.mean(gaps):+.4f}).")
    for d in ev["differences"]:
        out.append(f"{d['arm']}'s policy vs {d['other']}: {d['diff']['mean']:+.4f} test "
                   f"accuracy ({d['wins']}/{d['diff']['n']} seeds better) — "
                   f"{_verdict(d['diff'])}.")
    out.extend(_budget_conclusions(ev, b))
    return out


def _budget_conclusions(ev: dict[str, Any], b: Budget) -> list[str]:
    """Whether augmentation paid at all at this budget: none vs crop/flip vs the rest."""
    arms = {a["name"]: a for a in ev["arms"]}
    runs = ev["runs"]

    def mean_of(arm: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs if r["arm"] == arm)

    out = []
    if "none" in arms and "cropflip" in arms:
        acc = {(r["arm"], r["seed"]): r["accuracy"] for r in runs}
        seeds = sorted({r["seed"] for r in runs})
        gain = statistics.mean(acc[("cropflip", s)] - acc[("none", s)] for s in seeds)
        out.append(f"The space's base crop/flip alone vs no augmentation: {gain:+.4f} test "
                   f"accuracy (mean over {len(seeds)} seed(s)).")
    best = max(arms.values(), key=lambda a: a["accuracy"]["mean"])
    if best["name"] != "none":
        out.append(f"The most accurate arm is {best['name']} "
                   f"({best['accuracy']['mean']:.4f} mean test accuracy).")
        return out
    test, train = best["accuracy"]["mean"], mean_of("none", "train_accuracy")
    why = (f"the child underfits: without augmentation its training accuracy in the last epoch "
           f"is {train:.4f} against {test:.4f} on the test set, so augmentation makes the task "
           f"harder without curbing any overfitting"
           if train - test < 0.05 else
           f"although the child overfits without augmentation (training accuracy in the last "
           f"epoch {train:.4f} against {test:.4f} on the test set), the augmented children have "
           f"not caught up within {b.eval_epochs} epochs")
    out.append(
        f"No augmentation is the most accurate arm ({test:.4f}). At this budget "
        f"({b.eval_epochs} epochs, width {b.width}) {why}. The search's reward is measured in "
        f"the same regime, where the best a policy can do is cost little accuracy: these "
        f"figures compare the searchers at a budget where augmentation does not pay, and say "
        f"nothing about policies at one where it does (the cifar10 space's own 40 epochs at "
        f"width 32 cost roughly 10x this compute).")
    return out


def compute(b: Budget, space: Space, root: Path) -> None:
    """Run the searches and the evaluation; save what the report needs in `root`."""
    from search import tune_adapter

    tune_adapter.connect(None, num_cpus=2)  # one local Ray (no dashboard) for every search
    started = time.perf_counter()
    runs: list[SearchRun] = []
    for seed in range(b.search_seeds):  # searchers alternate: load drift hits both alike
        for searcher in SEARCHERS:
            run = run_search(space, searcher, seed, root / f"{searcher}-seed{seed}")
            runs.append(run)
            print(f"[bench] {searcher} seed {seed}: best reward {run.best_reward:.4f} (audit "
                  f"{run.best_audit:.4f}) at trial {run.best_at}, {run.seconds:.0f} s",
                  file=sys.stderr, flush=True)
    tune_adapter.shutdown()
    search_seconds = time.perf_counter() - started
    _save(root, b, runs, search_seconds)
    best = {s: max((r for r in runs if r.searcher == s), key=lambda r: r.best_reward)
            for s in SEARCHERS}
    evaluate({s: str(r.policy_file) for s, r in best.items()}, space=space, data=str(DATA),
             seeds=b.eval_seeds, epochs=b.eval_epochs, tta=b.tta, threads=1,
             output=root / "evaluation")


def _save(root: Path, b: Budget, runs: list[SearchRun], seconds: float) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "search_quality.json").write_text(json.dumps({
        "budget": b.__dict__, "search_seconds": seconds,
        "searches": [{**r.__dict__, "policy_file": str(r.policy_file)} for r in runs]},
        indent=2, default=str))


def _load(root: Path) -> tuple[list[SearchRun], float, dict[str, Any], str]:
    saved = json.loads((root / "search_quality.json").read_text())
    runs = [SearchRun(**{**r, "policy_file": Path(r["policy_file"])}) for r in saved["searches"]]
    seconds = saved.get("search_seconds") or sum(r.seconds for r in runs)
    ev_dir = root / "evaluation"
    ev = json.loads((ev_dir / "evaluation.json").read_text())
    return runs, seconds, ev, (ev_dir / "evaluation.md").read_text().strip()


def report(b: Budget, space: Space, root: Path, quick: bool) -> str:
    """The BENCHMARKS.md section, from the files `compute` left in `root`."""
    runs, search_seconds, ev, table = _load(root)
    eval_seconds = ev["settings"]["seconds"]
    race, needs = race_table(runs, b.search_seeds)
    c = space.child
    import optuna
    import ray

    return "\n".join([
        f"**{b.label}.** `python bench/search_quality.py{' --quick' if quick else ''}` — "
        f"{machine()}, Ray {ray.__version__}, Optuna {optuna.__version__}; the machine "
        f"was shared with other work while this ran.", "",
        f"Data: real CIFAR-10, `cifar10_small.npz` (Krizhevsky 2009; 5,000 training and 1,000 "
        f"test images, 500/100 per class). Search space: the built-in `cifar10` space (5 "
        f"sub-policies × 2 ops over 20 ops, mixup) with its splits cut to fit: train 2,000, "
        f"validation pool 1,500 (a fresh sample of 1,000 per trial), audit 1,500. Child: "
        f"{c.model} width {c.width}, {b.epochs} epochs, batch {c.batch_size}, SGD "
        f"lr {c.optimizer.lr:g} one-cycle, 1 CPU thread per trial. Budget per search: "
        f"{b.trials} child trainings, 2 at a time on a local Ray (2 CPUs); "
        f"{len(SEARCHERS)} searchers × {b.search_seeds} search seed(s) = "
        f"{len(runs) * b.trials} child trainings in {search_seconds / 60:.0f} min. "
        f"Evaluation: each searcher's best policy (best reward over its seeds) and the 5 "
        f"baselines retrained from scratch on all 5,000 training images, {b.eval_epochs} "
        f"epochs, seeds 0..{b.eval_seeds - 1} shared by all arms, tested on the 1,000 test "
        f"images ({eval_seconds / 60:.0f} min); TTA averages {b.tta} augmented copies.", "",
        "### The searches", "", search_table(runs), "",
        "Best reward so far (mean over search seeds), by trials completed:", "",
        curve_table(runs, b.trials), "",
        "How many trials each searcher needs to reach the other's best reward (same seed):", "",
        race, "",
        "### The found policies against the baselines (test set)", "", table, "",
        "### Conclusions", "", *[f"- {line}" for line in conclusions(runs, needs, ev, b)], ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget: check the pipeline")
    parser.add_argument("--output", default="augsearch-runs/bench-search-quality",
                        help="where the searches and the evaluation write their outputs")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the section from a finished run's files in --output")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section but leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs real CIFAR-10 (see "
                 f"../shared/data/README.md)")
    b = QUICK if args.quick else FULL
    space = bench_space(b)
    root = Path(args.output).resolve() / ("quick" if args.quick else "full")
    if not args.report_only:
        compute(b, space, root)
    body = report(b, space, root, args.quick)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)

if __name__ == "__main__":
    main()
