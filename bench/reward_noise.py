"""Reward noise: how much of a reward is the policy, and how much is the draw?

The base policy and a few policies sampled from the space are each trained with several search
seeds, under two seeding regimes side by side:

- *independent* (augsearch before common random numbers): each trial's seed came from its policy,
  so the initial weights, batch order and validation sample all changed with the policy;
- *common random numbers* (now): every policy of a search seed starts from the same weights,
  batch order and dropout; only the augmentation's draws differ.

Each training records its per-epoch predictions on the whole validation pool, so the reward
variants a space can choose are all computed from the same trainings: the whole pool or a fresh
per-trial sample (DeepAugment), the mean of the last or of the best `last_epochs` epochs (the
best among the second half's epochs: the pool is scored there, each epoch).
Reported per regime and variant: the standard deviation of one policy's reward across seeds,
the standard deviation of the policies' mean rewards, their ratio, the residual noise left once
the seed's shared effect is removed (what a comparison inside one search sees), and the Spearman
rank correlation between the reward and the audit accuracy across the policies of one seed, and
between the reward and the policy's "true" audit accuracy (its mean over every other training
of it, so one seed's luck on the audit set does not count as agreement).

    python bench/reward_noise.py digits [--policies 6] [--seeds 4]
    python bench/reward_noise.py cifar10 --data ../shared/data/cifar10_small.npz
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.report import cached_splits, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

REGIMES = ("independent", "crn")
VARIANTS = (("pool", "last"), ("fresh", "last"), ("pool", "best"), ("fresh", "best"))


@dataclass(frozen=True)
class Job:
    space: Space
    data: str | None
    policy_index: int
    config: dict[str, Any]  # {} for the base policy
    seed: int  # the search seed
    regime: str


@dataclass
class Record:
    """One training: per-epoch pool correctness (epochs × pool) and audit accuracy per epoch."""

    job: Job
    pool_correct: np.ndarray
    audit: list[float]
    train_accuracy: list[float]
    aug_seed: int
    seconds: float


def seeds_of(job: Job) -> tuple[int, int]:
    """(common seed, augmentation seed) of a job under its regime."""
    from search.trials.config import TrialConfig, encode
    from search.trials.context import TrialContext
    from search.trials.references import BASE
    from search.trials.seeds import trial_seeds

    config = job.config or encode(TrialConfig(reference=BASE))
    if job.regime == "crn":
        return trial_seeds(TrialContext(job.space, job.seed), config)
    # augsearch before common random numbers: one seed from the search seed and the policy
    text = json.dumps(config, sort_keys=True, default=str)
    seed = (job.seed * 1_000_003 + zlib.crc32(text.encode())) % 2**31
    return seed, seed


def train(job: Job) -> Record:
    """Train one child, recording what every reward variant needs."""
    import torch

    from children.batches import channel_stats, normalize
    from children.models import build_model
    from children.train import train_child
    from search.trials.config import TrialConfig, encode
    from search.trials.references import BASE, policy_of

    torch.set_num_threads(1)
    space = job.space
    splits = cached_splits(space, job.data)
    pool = splits.val_pool
    mean, std = channel_stats(splits.train.x)
    x_pool = torch.from_numpy(normalize(pool.x, mean, std))
    shape = splits.train.x.shape
    rows: list[np.ndarray] = []
    audits: list[float] = []
    trains: list[float] = []

    def on_epoch(stats: Any, state: Any) -> None:
        if stats.epoch <= space.child.epochs // 2:  # "best" epochs: from the second half
            return
        model = build_model(space.child.model, space.dataset.num_classes, shape[3], shape[1],
                            space.child.width)
        model.load_state_dict(state.model)
        model.eval()
        with torch.inference_mode():
            pred = torch.cat([model(x_pool[i:i + 512]).argmax(1)
                              for i in range(0, len(x_pool), 512)]).numpy()
        rows.append(pred == pool.y)
        audits.append(stats.audit_accuracy)
        trains.append(stats.train_accuracy)

    common, aug = seeds_of(job)
    started = time.perf_counter()
    policy = policy_of(space, job.config or encode(TrialConfig(reference=BASE)))
    train_child(space.child, space.reward, policy, splits, seed=common, aug_seed=aug, threads=1,
                on_epoch=on_epoch)
    return Record(job, np.array(rows), audits, trains, aug, time.perf_counter() - started)


# ---------------------------------------------------------------- rewards and statistics


def reward(rec: Record, validation: str, epochs: str, space: Space, sample: int) -> float:
    """The reward a space with these options would have given this training."""
    per_epoch = rec.pool_correct
    if validation == "fresh":
        rng = np.random.default_rng((rec.aug_seed, 7))
        cols = np.sort(rng.choice(per_epoch.shape[1], size=sample, replace=False))
        per_epoch = per_epoch[:, cols]
    acc = per_epoch.mean(1)
    n = space.reward.last_epochs
    chosen = acc[-n:] if epochs == "last" else np.sort(acc)[-n:]
    return float(chosen.mean())


def audit(rec: Record, space: Space) -> float:
    """The audit accuracy the search would log: the mean of the reward's epochs (last n)."""
    return float(np.mean(rec.audit[-space.reward.last_epochs:]))


def spearman(a: list[float], b: list[float]) -> float:
    from bench.ranks import spearman as rho

    return rho(a, b)


def figures(matrix: np.ndarray, audits: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """matrix: policies × seeds rewards; audits: the same trainings' audit accuracies; truth:
    policies × seeds, each policy's mean audit accuracy over every other training of it."""
    within = float(np.sqrt(np.mean(matrix.var(axis=1, ddof=1))))
    between = float(matrix.mean(axis=1).std(ddof=1))
    resid = matrix - matrix.mean(1, keepdims=True) - matrix.mean(0, keepdims=True) + matrix.mean()
    dof = (matrix.shape[0] - 1) * (matrix.shape[1] - 1)
    residual = float(np.sqrt((resid ** 2).sum() / dof))
    per_seed = [spearman(list(matrix[:, s]), list(audits[:, s])) for s in range(matrix.shape[1])]
    vs_truth = [spearman(list(matrix[:, s]), list(truth[:, s])) for s in range(matrix.shape[1])]
    return {"within": within, "between": between, "ratio": between / within,
            "residual": residual, "ratio_residual": between / residual,
            "spearman_audit": float(np.nanmean(per_seed)), "spearman_audit_se": _se(per_seed),
            "spearman_truth": float(np.nanmean(vs_truth)), "spearman_truth_se": _se(vs_truth)}


def _se(values: list[float]) -> float:
    """Standard error of a mean over seeds."""
    x = np.asarray([v for v in values if np.isfinite(v)])
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


# ---------------------------------------------------------------- the run


def jobs(space: Space, data: str | None, policies: int, seeds: int) -> list[Job]:
    from search.trials.compile import sample_configs

    configs = [{}] + sample_configs(space, policies - 1, seed=1234)
    return [Job(space, data, k, cfg, s, regime) for regime in REGIMES for s in range(seeds)
            for k, cfg in enumerate(configs)]


def run(space: Space, data: str | None, policies: int, seeds: int,
        workers: int) -> list[Record]:
    todo = jobs(space, data, policies, seeds)
    done: list[Record] = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        for rec in pool.map(train, todo):
            done.append(rec)
            elapsed = time.perf_counter() - started
            print(f"[reward_noise] {len(done)}/{len(todo)} {rec.job.regime} seed "
                  f"{rec.job.seed} policy {rec.job.policy_index}: {rec.seconds:.0f} s "
                  f"(elapsed {elapsed / 60:.1f} min)", file=sys.stderr, flush=True)
    return done


def table(space: Space, records: list[Record], policies: int, seeds: int,
          sample: int) -> tuple[list[str], dict[str, dict[str, float]]]:
    by = {(r.job.regime, r.job.policy_index, r.job.seed): r for r in records}
    every = {key: audit(rec, space) for key, rec in by.items()}
    lines = ["| seeding | validation | epochs | within-policy SD | SD of policy means | ratio | "
             "residual SD (seed removed) | ratio to residual | Spearman reward–audit (per "
             "seed, ± SE) | Spearman reward–true audit (± SE) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    out: dict[str, dict[str, float]] = {}
    for regime in REGIMES:
        audits = np.array([[every[(regime, k, s)] for s in range(seeds)]
                           for k in range(policies)])
        truth = np.array([[np.mean([v for (g, j, t), v in every.items()
                                    if j == k and (g, t) != (regime, s)])
                           for s in range(seeds)] for k in range(policies)])
        for validation, epochs in VARIANTS:
            matrix = np.array([[reward(by[(regime, k, s)], validation, epochs, space, sample)
                                for s in range(seeds)] for k in range(policies)])
            f = figures(matrix, audits, truth)
            out[f"{regime}/{validation}/{epochs}"] = f
            lines.append(
                f"| {_regime(regime)} | {_validation(validation, sample)} | {epochs} "
                f"{space.reward.last_epochs} | {f['within']:.4f} | {f['between']:.4f} | "
                f"{f['ratio']:.2f} | {f['residual']:.4f} | {f['ratio_residual']:.2f} | "
                f"{f['spearman_audit']:+.2f} ± {f['spearman_audit_se']:.2f} | "
                f"{f['spearman_truth']:+.2f} ± {f['spearman_truth_se']:.2f} |")
    return lines, out


def _regime(regime: str) -> str:
    return "independent (before)" if regime == "independent" else "common random numbers"


def _validation(validation: str, sample: int) -> str:
    return "whole pool" if validation == "pool" else f"fresh sample of {sample}"


def verdict(out: dict[str, dict[str, float]]) -> list[str]:
    """The seeding and validation choices, judged on the rank correlation with the policies' true
    audit accuracy (a training's own luck on both held-out sets does not count as agreement)."""
    crn = {k: v for k, v in out.items() if k.startswith("crn/")}
    before = out["independent/fresh/last"]
    now = out["crn/pool/last"]
    lines = [f"- Before (independent seeds, fresh sample, last epochs) vs common random numbers "
             f"(whole pool, last epochs): Spearman reward–true audit "
             f"{before['spearman_truth']:+.2f} ± {before['spearman_truth_se']:.2f} → "
             f"{now['spearman_truth']:+.2f} ± {now['spearman_truth_se']:.2f}; reward–audit of "
             f"the same training {before['spearman_audit']:+.2f} → {now['spearman_audit']:+.2f}."]
    same_cost = {k: v for k, v in crn.items() if k.endswith("/last")}
    best = max(same_cost, key=lambda k: same_cost[k]["spearman_truth"])
    other = next(k for k in same_cost if k != best)
    gap = same_cost[best]["spearman_truth"] - same_cost[other]["spearman_truth"]
    noise = float(np.hypot(same_cost[best]["spearman_truth_se"],
                           same_cost[other]["spearman_truth_se"]))
    lines.append(f"- Under common random numbers, at equal cost (last epochs: the validation "
                 f"data is scored on ~10 epochs plus the reward's, where the best epochs need "
                 f"every epoch scored): {best.split('/')[1]} "
                 f"{same_cost[best]['spearman_truth']:+.2f} vs {other.split('/')[1]} "
                 f"{same_cost[other]['spearman_truth']:+.2f}, a "
                 f"difference of {gap:+.2f} against a standard error of {noise:.2f}"
                 + (" — within noise." if gap < 2 * noise else "."))
    for epochs in ("best",):
        for validation in ("pool", "fresh"):
            f = crn[f"crn/{validation}/{epochs}"]
            lines.append(f"- {validation}/{epochs} (more scoring per trial): "
                         f"{f['spearman_truth']:+.2f} ± {f['spearman_truth_se']:.2f}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--data", help="an .npz for the space's dataset (e.g. real CIFAR-10)")
    parser.add_argument("--policies", type=int, default=6, help="base + sampled policies")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[],
                        help="space overrides key=value (e.g. dataset.train_size=1000)")
    parser.add_argument("--sample", type=int, help="fresh sample size (default: the space's "
                                                  "val_sample_size, else half the pool)")
    parser.add_argument("--label", default="", help="section label, e.g. 'before'")
    parser.add_argument("--records", help="save the trainings here, or reuse them if it exists")
    args = parser.parse_args()
    space = load_space(args.space)
    if args.set:
        space = space.replace(**{k: json.loads(v) if v[:1].isdigit() or v[:1] in "[{-"
                                 else v for k, v in (s.split("=", 1) for s in args.set)})
    sample = args.sample or space.reward.val_sample_size or space.dataset.val_pool_size // 2
    started = time.perf_counter()
    saved = Path(args.records) if args.records else None
    if saved is not None and saved.exists():  # recompute the tables from saved trainings
        records = pickle.loads(saved.read_bytes())
    else:
        records = run(space, args.data, args.policies, args.seeds, args.workers)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(pickle.dumps(records))
    minutes = (time.perf_counter() - started) / 60
    lines, out = table(space, records, args.policies, args.seeds, sample)
    d, c = space.dataset, space.child
    data = f"{Path(args.data).name} (real CIFAR-10, Krizhevsky 2009)" if args.data else "built-in"
    head = (f"`python bench/reward_noise.py {args.space}"
            f"{' --data ' + Path(args.data).name if args.data else ''}"
            f"{' --set ' + ' '.join(args.set) if args.set else ''} --policies {args.policies} "
            f"--seeds {args.seeds}` — {args.policies} policies (the base and "
            f"{args.policies - 1} sampled) × {args.seeds} search seeds × 2 seeding regimes = "
            f"{len(records)} trainings in {minutes:.0f} min on {args.workers} workers. Data: "
            f"{data}; train {d.train_size}, validation pool {d.val_pool_size}, audit "
            f"{d.audit_size}. Child {c.model} w{c.width}, {c.epochs} epochs. {machine()}; load "
            f"average {os.getloadavg()[0]:.1f} at the end.")
    body = "\n".join([head, "", *lines, "", *verdict(out)])
    print(body)
    label = f" ({args.label})" if args.label else ""
    write_section(f"Reward noise: {args.space}{label}", body)


if __name__ == "__main__":
    main()
