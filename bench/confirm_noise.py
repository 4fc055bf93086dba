"""The confirmation's noise, measured: paired SDs of a margin over the base, and the policy x
image term that fresh replicates cannot average away.

The confirmation trains each candidate and the base at fresh replicates 1..r under common random
numbers (the same initial weights, batch order and dropout per replicate) and pairs their
differences by replicate. Two figures decide what it can and cannot see:

- the **paired SD** of one replicate's margin (candidate - base), on the validation pool (the
  reward) and on the audit set; with the replicate count and the Bonferroni k it gives the
  smallest margin the confirmation finds with 80% power (`search.stats.detectable_margin`);
- the **policy x image term**: every replicate scores a policy on the same pool images, so the
  part of a policy's margin that belongs to those particular images (it fits their quirks) is
  the same at every replicate and no number of replicates removes it. It shows as the
  disagreement between a policy's pool margin and its audit margin that persists over seeds:
  X_is = (pool_is - pool_bs) - (audit_is - audit_bs), policies i (not the base) x seeds s. In a
  two-way analysis of X, the policy effect's variance component (MS_policy - MS_resid) / S is
  var(g) + var(h), the pool's and the audit set's terms; each scales as 1 / images, so the
  pool's SD is sqrt(component * n_audit / (n_pool + n_audit)). A second, more precise estimate
  reads each image: with d_ijs the last epoch's correctness of policy i minus the base's on
  image j at seed s, the spread of the per-image mean effects over the images, less its seed
  noise (var_j of the mean of d_ijs over s, minus the mean over j of var_s(d_ijs) / S), is the
  per-image effects' variance, and divided by the images it is var(g_i).

tests/search/test_selection_null.py sizes its null simulation's policy x image term and its
paired SD from the figures this writes.

    python bench/confirm_noise.py digits [--policies 10] [--seeds 6]
    python bench/confirm_noise.py cifar10 --data ../shared/data/cifar10_small.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.report import cached_splits, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402


@dataclass(frozen=True)
class Job:
    space: Space
    data: str | None
    policy: int  # 0: the base, 1: TrivialAugment in the space's ops, then sampled
    config: dict[str, Any]
    replicate: int


@dataclass(frozen=True)
class Record:
    job: Job
    reward: float  # the space's reward: validation pool
    audit: float  # the same epochs' audit accuracy
    seconds: float
    pool_correct: np.ndarray  # the last epoch's correctness on each pool image
    audit_correct: np.ndarray


def configs(space: Space, policies: int) -> list[dict[str, Any]]:
    """The base, the TrivialAugment arm and `policies - 2` policies sampled from the space."""
    from search.trials.compile import sample_configs
    from search.trials.config import TrialConfig, encode
    from search.trials.references import BASE, TRIVIAL

    refs = [encode(TrialConfig(reference=BASE)), encode(TrialConfig(reference=TRIVIAL))]
    return refs + sample_configs(space, policies - 2, seed=4321)


def train(job: Job) -> Record:
    """One training at a fresh replicate, seeded as the confirmation seeds it."""
    import torch

    from children.train import train_child
    from search.trials.config import updated
    from search.trials.context import TrialContext
    from search.trials.references import policy_of
    from search.trials.seeds import trial_seeds

    torch.set_num_threads(1)
    space = job.space
    config = updated(job.config, replicate=job.replicate)
    common, aug = trial_seeds(TrialContext(space, 0), config)
    started = time.perf_counter()
    splits = cached_splits(space, job.data)
    correct: dict[str, np.ndarray] = {}

    def on_end(predict: Any) -> None:
        for name, part in (("pool", splits.val_pool), ("audit", splits.audit)):
            correct[name] = predict(part.x).argmax(1) == part.y

    m = train_child(space.child, space.reward, policy_of(space, job.config), splits,
                    seed=common, aug_seed=aug, threads=1, on_end=on_end)
    return Record(job, m.reward, m.audit_accuracy, time.perf_counter() - started,
                  correct["pool"], correct["audit"])


# ---------------------------------------------------------------- statistics


def paired_sd(m: np.ndarray) -> float:
    """The SD of one replicate's margin over the base (row 0), pooled over the policies:
    m is policies x seeds."""
    d = m[1:] - m[0]
    return float(np.sqrt(np.mean(d.var(axis=1, ddof=1))))


def image_term(pool: np.ndarray, audit: np.ndarray) -> dict[str, float]:
    """The policy x image-set variance component of X = pool margin - audit margin (policies
    other than the base x seeds): (MS_policy - MS_resid) / S, its F test, and the SD of the
    term on all of the pool's images (`sd_pool`, before scaling by image counts)."""
    from scipy.stats import f as f_dist

    x = (pool[1:] - pool[0]) - (audit[1:] - audit[0])
    p, s = x.shape
    grand = x.mean()
    ms_policy = s * ((x.mean(axis=1) - grand) ** 2).sum() / (p - 1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    dof = (p - 1) * (s - 1)
    ms_resid = (resid ** 2).sum() / dof
    component = max(0.0, (ms_policy - ms_resid) / s)
    ratio = ms_policy / ms_resid
    return {"component": component, "F": ratio, "dof": (p - 1, dof),
            "p_value": float(f_dist.sf(ratio, p - 1, dof)), "ms_resid": ms_resid}


def per_image_sd(correct: np.ndarray) -> tuple[float, list[float]]:
    """The SD of the policy x image term from per-image correctness (policies x seeds x images,
    row 0 the base): sqrt of the mean over policies of var(g_i), and each policy's var(g_i)."""
    d = correct[1:].astype(float) - correct[0].astype(float)  # policies x seeds x images
    s, n = d.shape[1], d.shape[2]
    effects = d.mean(axis=1)  # policies x images
    noise = d.var(axis=1, ddof=1).mean(axis=1) / s
    var_g = [max(0.0, float(v)) / n for v in effects.var(axis=1, ddof=1) - noise]
    return float(np.sqrt(np.mean(var_g))), var_g


def figures(records: list[Record], space: Space, policies: int,
            seeds: int) -> dict[str, Any]:
    by = {(r.job.policy, r.job.replicate): r for r in records}
    reps = range(1, seeds + 1)
    pool = np.array([[by[(i, s)].reward for s in reps] for i in range(policies)])
    audit = np.array([[by[(i, s)].audit for s in reps] for i in range(policies)])
    term = image_term(pool, audit)
    n_pool, n_audit = space.dataset.val_pool_size, space.dataset.audit_size
    sd_g = float(np.sqrt(term["component"] * n_audit / (n_pool + n_audit)))
    per_image = {name: per_image_sd(np.array([[getattr(by[(i, s)], f"{name}_correct")
                                               for s in reps] for i in range(policies)]))
                 for name in ("pool", "audit")}
    return {"space": space.name, "policies": policies, "seeds": seeds,
            "image_sd_pool_per_image": per_image["pool"][0],
            "image_sd_audit_per_image": per_image["audit"][0],
            "image_var_pool_by_policy": per_image["pool"][1],
            "pool_audit_correlation": _correlation(pool, audit),
            "paired_sd_pool": paired_sd(pool), "paired_sd_audit": paired_sd(audit),
            "image_sd_pool": sd_g,
            "image_sd_audit": float(np.sqrt(term["component"] * n_pool / (n_pool + n_audit))),
            "image_term": term, "pool": pool.tolist(), "audit": audit.tolist(),
            "n_pool": n_pool, "n_audit": n_audit}


def _correlation(pool: np.ndarray, audit: np.ndarray) -> float:
    """The correlation of one replicate's pool margin with its audit margin (seed noise: each
    policy's mean margin removed): how much one training's luck shows on both image sets."""
    a = (pool[1:] - pool[0]) - (pool[1:] - pool[0]).mean(axis=1, keepdims=True)
    b = (audit[1:] - audit[0]) - (audit[1:] - audit[0]).mean(axis=1, keepdims=True)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# ---------------------------------------------------------------- the run


def run(space: Space, data: str | None, policies: int, seeds: int,
        workers: int) -> list[Record]:
    todo = [Job(space, data, i, cfg, rep) for rep in range(1, seeds + 1)
            for i, cfg in enumerate(configs(space, policies))]
    done: list[Record] = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        for rec in ex.map(train, todo):
            done.append(rec)
            print(f"[confirm_noise] {len(done)}/{len(todo)} replicate {rec.job.replicate} "
                  f"policy {rec.job.policy}: reward {rec.reward:.4f} audit {rec.audit:.4f} "
                  f"({rec.seconds:.0f} s; elapsed {(time.perf_counter() - started) / 60:.1f} "
                  f"min)", file=sys.stderr, flush=True)
    return done


def report(f: dict[str, Any], head: str) -> str:
    from search.stats import detectable_margin

    t = f["image_term"]
    lines = [head, "",
             "| figure | value |", "|---|---:|",
             f"| paired SD of a margin over the base, validation pool (the reward) | "
             f"{f['paired_sd_pool']:.4f} |",
             f"| paired SD of a margin over the base, audit set | {f['paired_sd_audit']:.4f} |",
             f"| policy x image-set variance component of pool margin - audit margin | "
             f"{t['component']:.3g} (F = {t['F']:.2f} on {t['dof'][0]}, {t['dof'][1]} dof, "
             f"p = {t['p_value']:.3f}) |",
             f"| its SD on the pool's {f['n_pool']} images / the audit set's {f['n_audit']} | "
             f"{f['image_sd_pool']:.4f} / {f['image_sd_audit']:.4f} |",
             f"| the same SD from per-image correctness (last epoch), pool / audit | "
             f"{f['image_sd_pool_per_image']:.4f} / {f['image_sd_audit_per_image']:.4f} |",
             f"| correlation of one replicate's pool margin with its audit margin | "
             f"{f['pool_audit_correlation']:+.2f} |"]
    for r in (4, 8, 12, 16):
        for k in (2, 3):
            lines.append(f"| smallest margin found with 80% power, audit decision, r = {r}, "
                         f"k = {k} | {detectable_margin(f['paired_sd_audit'], r, k):.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--data", help="an .npz for the space's dataset (e.g. real CIFAR-10)")
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()
    space = load_space(args.space)
    started = time.perf_counter()
    records = run(space, args.data, args.policies, args.seeds, args.workers)
    minutes = (time.perf_counter() - started) / 60
    f = figures(records, space, args.policies, args.seeds)
    d, c = space.dataset, space.child
    data = f"{Path(args.data).name} (real CIFAR-10, Krizhevsky 2009)" if args.data else "built-in"
    head = (f"`python bench/confirm_noise.py {args.space}"
            f"{' --data ' + Path(args.data).name if args.data else ''} --policies "
            f"{args.policies} --seeds {args.seeds}` — {args.policies} policies (the base, the "
            f"TrivialAugment arm, {args.policies - 2} sampled) × {args.seeds} fresh replicates "
            f"under common random numbers = {len(records)} trainings in {minutes:.0f} min on "
            f"{args.workers} workers. Data: {data}; train {d.train_size}, validation pool "
            f"{d.val_pool_size}, audit {d.audit_size}. Child {c.model} w{c.width}, {c.epochs} "
            f"epochs. {machine()}; load average {os.getloadavg()[0]:.1f} at the end.")
    body = report(f, head)
    print(body)
    if args.out:
        Path(args.out).write_text(json.dumps(f, indent=2, default=float) + "\n",
                                  encoding="utf-8")
    write_section(f"Confirmation noise: {args.space} ({c.model} w{c.width}, {c.epochs} epochs)",
                  body)


if __name__ == "__main__":
    main()
