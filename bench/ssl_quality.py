"""Self-supervised views: does a searched policy pre-train better features than SimCLR's?

A `reward.kind: self_supervised` TPE search (space cifar10_ssl: 2,000 training images used
unlabelled, 500 of them labelled for the linear probe that is the reward, unconfirmed) runs on
cifar10_small.npz. Its best searched policy by search reward ("found"; reference arms are not
candidates) is then compared with crop/flip alone and with SimCLR's default views written in the
space's ops (`search.trials.simclr`): under each, the child trunk is pre-trained with NT-Xent on
all 5,000 training images without labels, a linear probe is fitted on 500 labelled ones (a
stratified draw per seed, shared by the arms) and tested on the 1,000 test images no search
touched, for every evaluation seed. The floor beside them ("random_init"): the same trunk at the
same seed's initial weights, never trained, under the same probe, so every figure reads against
what pre-training added. Differences are paired by seed (the seed fixes the initial weights,
batch order and labelled draw), with Student-t 95% CIs. Beside it: the Spearman rank
correlation, across the search's trials, of the label-free rotation score (SelfAugment) with the
probe's accuracy on the validation pool (the reward) and on the audit set, bootstrap 95% CIs.

    python bench/ssl_quality.py            # CPU profile: ~1 h on this shared 2-core machine
    python bench/ssl_quality.py --gpu      # CUDA profile: resnet_fast, longer pre-training
    python bench/ssl_quality.py --quick    # the pipeline at a toy budget (writes no section)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import SHARED, machine, write_section  # noqa: E402

SECTION = "Self-supervised views: the found policy against crop/flip and SimCLR (CIFAR-10)"
DATA = SHARED / "cifar10_small.npz"
RANDOM_INIT = "random_init"  # the floor: the trunk untrained, the same probe
ARMS = ("cropflip", "simclr", "found", RANDOM_INIT)  # appended: an arm's index seeds its views
LABELLED = 500
BOOTSTRAP = 10_000


@dataclass(frozen=True)
class Profile:
    """A budget: the search's (space overrides, trials) and the evaluation's."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict)  # on top of spaces/cifar10_ssl.yaml
    trials: int = 10
    eval_epochs: int = 6
    seeds: int = 5
    workers: int = 2
    device: str = "cpu"
    search_options: dict[str, Any] = field(default_factory=dict)


PROFILES = {
    # Sized from a measured cost on this machine (1 thread per run, 2 runs at a time, load
    # average 10-15): an epoch of 2,000 images 15-20 s, of 5,000 ~50 s, the last epoch's scores
    # ~30 s; 10 trials of 8 epochs (~16 min) and 15 evaluation pre-trainings of 6 epochs on
    # 5,000 images (~45 min).
    "cpu": Profile("cpu"),
    "gpu": Profile("gpu", {"child.model": "resnet_fast", "child.width": 32,
                           "child.batch_size": 512, "child.epochs": 40},
                   trials=32, eval_epochs=100, seeds=5, workers=1, device="cuda",
                   search_options={"gpus_per_trial": 0.5, "concurrency": 2}),
    "quick": Profile("quick", {"child.epochs": 1, "dataset.train_size": 600,
                               "dataset.labelled_size": 200, "dataset.val_pool_size": 300,
                               "dataset.audit_size": 300, "reward.val_sample_size": 200},
                     trials=3, eval_epochs=1, seeds=2),
}


def bench_space(profile: Profile) -> Any:
    from spaces.schema import load_space

    return load_space("cifar10_ssl").replace(**profile.changes)


# ---------------------------------------------------------------- the search


def run_search(space: Any, profile: Profile, root: Path) -> Path:
    """The search (unconfirmed: the test set measures here), or the finished one in `root`."""
    out = root / "search"
    if (out / "leaderboard.csv").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    from search.api import search

    options = {"concurrency": 2, **profile.search_options}
    search(space, "tpe", seed=0, trials=profile.trials, confirm=0, output=out, data=str(DATA),
           **options)
    return out


def search_trials(out: Path, space: Any) -> list[dict[str, Any]]:
    """Every finished trial of the search: its config and, from MLflow, its last epoch's probe
    (reward), audit, k-NN and rotation scores."""
    import csv

    from mlflow import MlflowClient

    with (out / "leaderboard.csv").open() as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f) if r["status"] == "ok"}
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(f"augsearch-{space.name}")
    trials = []
    for run in client.search_runs([experiment.experiment_id], "tags.stage = 'search'",
                                  max_results=1000):
        row = rows.get(run.data.tags.get("trial_id", ""))
        if row is None:
            continue
        m = run.data.metrics
        trials.append({"trial": row["trial_id"], "reference": row["reference"],
                       "config": json.loads(row["config"]),
                       "reward": float(row["reward"]),
                       "audit": m.get("audit_accuracy", math.nan),
                       "rotation": m.get("rotation_accuracy", math.nan),
                       "knn": m.get("knn_accuracy", math.nan)})
    return sorted(trials, key=lambda t: -t["reward"])


def found_policy(out: Path, space: Any, trials: list[dict[str, Any]]) -> tuple[dict, Any]:
    """The best searched (non-reference) trial and its policy."""
    from search.trials.references import policy_of

    best = next(t for t in trials if not t["reference"])
    return best, policy_of(space, best["config"])


# ---------------------------------------------------------------- the evaluation


def evaluate_one(arm: str, policy: dict[str, Any], seed: int, profile: dict[str, Any],
                 space_yaml: str) -> dict[str, Any]:
    """One pre-training on all training images under `policy`; the probe on the test set.
    Runs in a worker process."""
    import numpy as np

    from children.datasets import Arrays, Splits, stratified_order
    from children.ssl import pretrain_ssl, untrained_scores
    from spaces.policy import policy_from_dict
    from spaces.schema import parse_space

    space = parse_space(space_yaml, "bench space")
    with np.load(DATA) as d:
        x, y, xt, yt = (d[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    order = stratified_order(y.astype(np.int64), seed)  # the first LABELLED: stratified
    train = Arrays(x[order], y[order].astype(np.int64))
    test = Arrays(xt, yt.astype(np.int64))
    splits = Splits(train, test, Arrays(x[:0], train.y[:0]), test, 10, LABELLED)
    reward = space.reward.model_copy(update={"last_epochs": 1, "eval_every": 100_000,
                                             "validation": "pool"})
    aug = int(np.random.SeedSequence((seed, ARMS.index(arm))).generate_state(1)[0] % 2**31)
    started = time.perf_counter()
    if arm == RANDOM_INIT:
        s = untrained_scores(space.child, reward, splits, 1000 + seed, profile["device"])
        return {"arm": arm, "seed": seed, "probe": s["probe_accuracy"], "knn": s["knn_accuracy"],
                "rotation": s["rotation_accuracy"], "seconds": time.perf_counter() - started,
                "loss": math.nan}
    m = pretrain_ssl(space.child, reward, policy_from_dict(policy, arm), splits,
                     seed=1000 + seed, aug_seed=aug, threads=1, device=profile["device"],
                     epochs=profile["eval_epochs"])
    return {"arm": arm, "seed": seed, "probe": m.probe_accuracy, "knn": m.knn_accuracy,
            "rotation": m.rotation_accuracy, "seconds": time.perf_counter() - started,
            "loss": m.history[-1].train_loss}


def evaluate(policies: dict[str, Any], space: Any, profile: Profile, root: Path
             ) -> list[dict[str, Any]]:
    """Every arm under every seed, `workers` at a time; finished runs are kept in
    eval.jsonl and not run again."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import yaml

    from spaces.policy import policy_to_dict

    done_file = root / "eval.jsonl"
    done = [json.loads(line) for line in done_file.read_text().splitlines()] if (
        done_file.exists()) else []
    have = {(r["arm"], r["seed"]) for r in done}
    text = yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False)
    jobs = [(arm, policy_to_dict(policies[arm]), s, asdict(profile), text)
            for s in range(profile.seeds) for arm in ARMS if (arm, s) not in have]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(profile.workers, mp_context=context) as pool:
        futures = [pool.submit(evaluate_one, *job) for job in jobs]
        for future in as_completed(futures):
            result = future.result()
            done.append(result)
            with done_file.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"[ssl_quality] {result['arm']} seed {result['seed']}: probe "
                  f"{result['probe']:.4f} ({result['seconds'] / 60:.1f} min)", flush=True)
    return done


# ---------------------------------------------------------------- figures


def paired(results: list[dict[str, Any]], a: str, b: str, key: str = "probe") -> Any:
    """`a` − `b` over the seeds both ran, paired by seed (`search.evaluate.statistics.paired`,
    scipy's paired t interval)."""
    from search.evaluate.statistics import paired as paired_t

    by = {(r["arm"], r["seed"]): r[key] for r in results}
    seeds = [s for s in sorted({r["seed"] for r in results}) if (a, s) in by and (b, s) in by]
    return paired_t([by[(a, s)] for s in seeds], [by[(b, s)] for s in seeds])


def spearman_ci(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Spearman's rho and a percentile bootstrap 95% CI over trials (`bench.ranks`)."""
    from bench.ranks import spearman_interval

    return spearman_interval(x, y, resamples=BOOTSTRAP)


def _ci(e: Any, scale: float = 100.0) -> str:
    return (f"{e.mean * scale:+.1f} [{e.ci_low * scale:+.1f}, {e.ci_high * scale:+.1f}]"
            if e.n >= 2 else "n/a")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def floor_verdict(e: Any, arm: str) -> str:
    """`arm` − random init, computed from the paired CI: did pre-training under its views add
    anything over the untrained trunk?"""
    if e.n < 2 or not math.isfinite(e.ci_low):
        return "unresolved (fewer than 2 paired seeds)"
    if e.ci_low > 0:
        return f"**above the floor**: {arm} beats the untrained trunk (the CI lies above 0)"
    if e.ci_high < 0:
        return f"**below the floor**: the untrained trunk beats {arm} (the CI lies below 0)"
    return (f"**not shown**: no difference between {arm} and the untrained trunk is shown (the "
            f"CI contains 0; the mean is {'at or above' if e.mean >= 0 else 'below'} 0)")


def difference_lines(results: list[dict[str, Any]]) -> list[str]:
    """The paired differences in probe test accuracy, the target's verdict (found vs SimCLR)
    and the floor's (found and SimCLR vs the untrained trunk)."""
    found_simclr = paired(results, "found", "simclr")
    found_floor = paired(results, "found", RANDOM_INIT)
    simclr_floor = paired(results, "simclr", RANDOM_INIT)
    return ["Paired differences in probe test accuracy (points, 95% CI over seeds):", "",
            f"- found − simclr: {_ci(found_simclr)}",
            f"- found − crop/flip: {_ci(paired(results, 'found', 'cropflip'))}",
            f"- simclr − crop/flip: {_ci(paired(results, 'simclr', 'cropflip'))}",
            f"- found − random init: {_ci(found_floor)}",
            f"- simclr − random init: {_ci(simclr_floor)}",
            f"- crop/flip − random init: {_ci(paired(results, 'cropflip', RANDOM_INIT))}", "",
            f"Target (found views ≥ SimCLR's default views on the probe's test accuracy): "
            f"{verdict(found_simclr)}.", "",
            f"Floor (the same trunk untrained, the same probe): found: "
            f"{floor_verdict(found_floor, 'found')}; SimCLR: "
            f"{floor_verdict(simclr_floor, 'simclr')}."]


def verdict(e: Any) -> str:
    """The target (found ≥ SimCLR) computed from the paired CI."""
    if e.n < 2 or not math.isfinite(e.ci_low):
        return "unresolved (fewer than 2 paired seeds)"
    if e.ci_low > 0:
        return "**met**: the found views beat SimCLR's (the CI lies above 0)"
    if e.ci_high < 0:
        return "**missed**: SimCLR's views beat the found ones (the CI lies below 0)"
    return ("**not shown**: no difference from SimCLR's views is shown (the CI contains 0; "
            f"the mean is {'at or above' if e.mean >= 0 else 'below'} 0)")


def report(space: Any, profile: Profile, trials: list[dict[str, Any]], best: dict[str, Any],
           found: Any, results: list[dict[str, Any]], minutes: dict[str, float]) -> str:
    """The section's text: budget, every arm's test probe (the untrained floor among them), the
    paired differences, the verdicts and the label-free score's rank correlations."""
    from search.stats import estimate

    c, d = space.child, space.dataset
    per_arm = {a: estimate([r["probe"] for r in results if r["arm"] == a]) for a in ARMS}
    seconds = [r["seconds"] for r in results if r["arm"] != RANDOM_INIT]
    top = trials[0]
    lines = [
        f"Search: TPE, {len(trials)} trials (reference arms base and simclr first), space "
        f"cifar10_ssl ({c.model} w{c.width}, {_n(c.epochs, 'epoch')}, batch {c.batch_size}, "
        f"{c.optimizer.name} lr {c.optimizer.lr:g}; {d.train_size} training images, "
        f"{d.labelled_size} labelled; reward: the probe's validation accuracy), unconfirmed; "
        f"{minutes['search']:.0f} min. Its best trial was "
        f"{top['trial']} ({top['reference'] or 'searched'}, reward {top['reward']:.4f}); the "
        f"best searched one, evaluated as **found**, {best['trial']} (reward "
        f"{best['reward']:.4f}): `{found.describe().replace(chr(10), ' | ')}`.", "",
        f"Evaluation: under each arm, pre-training on all 5,000 training images without labels "
        f"({_n(profile.eval_epochs, 'epoch')}), a linear probe on {LABELLED} labelled ones (a "
        f"stratified draw per seed, shared by the arms), tested on the 1,000 test images; "
        f"{profile.seeds} seeds; {len(seconds)} pre-trainings, "
        f"{sum(seconds) / max(len(seconds), 1) / 60:.1f} min each on average, "
        f"{minutes['evaluation']:.0f} min in all ({profile.workers} at a time); "
        f"{RANDOM_INIT}: the same trunk at each seed's initial weights, never trained, under "
        f"the same probe.", "",
        "| arm | probe test accuracy (mean of seeds, 95% CI) | k-NN test accuracy (mean) |",
        "|---|---:|---:|"]
    for arm in ARMS:
        e = per_arm[arm]
        knn = estimate([r["knn"] for r in results if r["arm"] == arm]).mean
        lines.append(f"| {arm} | {e.mean:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}] | {knn:.4f} |")
    lines += ["", *difference_lines(results), "", *spearman_lines(trials)]
    return "\n".join(lines)


def spearman_lines(trials: list[dict[str, Any]]) -> list[str]:
    rotation = [t["rotation"] for t in trials]
    out = [f"The label-free score (SelfAugment's rotation prediction, a linear classifier of "
           f"0/90/180/270 on frozen features) against the probe, across the search's "
           f"{len(trials)} trials (Spearman, bootstrap 95% CI over trials):", ""]
    for name, key in (("the probe's validation accuracy (the reward)", "reward"),
                      ("the probe's audit accuracy (images no reward saw)", "audit")):
        rho, low, high = spearman_ci(rotation, [t[key] for t in trials])
        shown = ("a positive association is shown" if low > 0 else
                 "a negative association is shown" if high < 0 else "no association is shown")
        out.append(f"- rotation vs {name}: **{rho:+.2f}** [{low:+.2f}, {high:+.2f}]: {shown}.")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the CUDA profile")
    parser.add_argument("--quick", action="store_true", help="a toy budget; writes no section")
    parser.add_argument("--root", default="bench-runs/ssl_quality")
    parser.add_argument("--workers", type=int, help="pre-trainings at a time")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "gpu" if args.gpu else "cpu"]
    if args.workers:
        profile = Profile(**{**asdict(profile), "workers": args.workers})
    if not DATA.exists():
        print(f"[ssl_quality] {DATA} is absent: nothing measured", flush=True)
        return
    root = Path(args.root).resolve() / profile.name
    root.mkdir(parents=True, exist_ok=True)
    load, started = os.getloadavg()[0], time.perf_counter()
    space = bench_space(profile)
    out = run_search(space, profile, root)
    minutes = {"search": (time.perf_counter() - started) / 60}
    trials = search_trials(out, space)
    best, found = found_policy(out, space, trials)
    from search.trials.references import reference_policies

    policies = {"cropflip": reference_policies(space)["base"], "found": found,
                "simclr": reference_policies(space)["simclr"],
                RANDOM_INIT: reference_policies(space)["base"]}  # unused: nothing is trained
    begun = time.perf_counter()
    results = evaluate(policies, space, profile, root)
    minutes["evaluation"] = (time.perf_counter() - begun) / 60
    total = (time.perf_counter() - started) / 60
    label = "QUICK pipeline check (toy budget: figures say nothing). " if args.quick else ""
    flag = " --gpu" if args.gpu else " --quick" if args.quick else ""
    head = (f"{label}`python bench/ssl_quality.py{flag}` — {machine()}; device "
            f"{profile.device}; {total:.0f} min in this run (a search reused from an earlier "
            f"run counts 0); load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
            f"the end.")
    text = head + "\n\n" + report(space, profile, trials, best, found, results, minutes)
    print(text, flush=True)
    (root / "report.md").write_text(text + "\n", encoding="utf-8")
    if not args.quick:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
