"""The confirmation's decision rule on synthetic searches: false wins on null data, and power.

Each repetition runs search.stages.confirm's and search.stages.verdict's real functions:
`candidates` picks the top 3 of a leaderboard of 32 policies (the base among them) by their search
rewards, `confirm_configs` says which runs to train, `record` takes their results, `verdict`
decides. Only the figures are synthetic, drawn as a search under common random numbers makes
them, with the noise measured by bench/confirm_noise.py (`MEASURED`):

    pool_is  = mu_i + c_s  + e_is  + g_i      (the reward: the validation pool)
    audit_is = mu_i + c'_s + e'_is + h_i      (the audit images, which select nothing)

c_s is replicate s's common share (the same for every policy; it cancels in a paired
difference), e_is a policy's own noise at a replicate (SD of a paired difference: the measured
paired SD; e and e' correlated as one training's luck shows on both image sets), and g_i, h_i
the policy x image terms: what a policy gains or loses on those particular images, the same at
every replicate, so fresh replicates never average it away. Replicate 0 is the search, which
selects on the pool; the confirmation trains 1..r.

Null: every mu_i is 0, so each "beats the base" is a false win; the nominal rate is one-sided
2.5% (the lower bound of a 95% interval above 0). `Rule.POOL` decides on the pool, as the rule
did before it decided on the audit images (`Rule.AUDIT`). `fail` makes each fresh run fail with
that probability (a failure is a loss for a candidate and no pair for the base).

tests/search/test_selection_null.py runs these functions with the same repetitions and seeds as
`python bench/selection_null.py`, which writes the figures README quotes to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from search.stages.confirm import candidates, confirm_configs, measurements, record  # noqa: E402
from search.stages.verdict import verdict  # noqa: E402
from search.trials.config import TrialConfig, decode, encode  # noqa: E402
from search.trials.references import BASE  # noqa: E402

POLICIES, TOP = 32, 3
NOMINAL = 0.025  # one-sided: the interval's lower bound above 0
NULL_REPETITIONS, POWER_REPETITIONS = 6000, 1500  # what the tests run, and what README quotes


@dataclass(frozen=True)
class Noise:
    """A space's measured confirmation noise (bench/confirm_noise.py, docs/BENCHMARKS.md
    "Confirmation noise")."""

    name: str
    pair_pool: float  # SD of one replicate's margin over the base, validation pool
    pair_audit: float  # the same on the audit images
    image_pool: float  # SD of a margin's policy x image term on the pool's images
    image_audit: float  # ... on the audit images
    rho: float  # correlation of one replicate's pool and audit noise
    common: float = 0.01  # the replicate's share, the same for every policy (cancels)


MEASURED = {  # docs/BENCHMARKS.md "Confirmation noise: digits (...)", by the space's child
    "digits": Noise("digits (resnet_fast w8, 100 epochs)", pair_pool=0.0238, pair_audit=0.0229,
                    image_pool=0.0032, image_audit=0.0026, rho=0.90),
    # the digits proxy before the headroom issue: less seed noise, so the images' term is a
    # larger share of a margin's uncertainty
    "digits-basiccnn": Noise("digits (basiccnn w16, 150 epochs)", pair_pool=0.0129,
                             pair_audit=0.0145, image_pool=0.0040, image_audit=0.0031, rho=0.69),
}
IMAGES = 200  # simulated audit images: the interval's image term depends on n only through it
IMAGE_NOISE = 0.3  # SD of one training's correctness on one image, beyond its mean (~binary)


@dataclass
class Outcome:
    """What `record` reads of a Tune outcome."""

    config: dict[str, Any]
    result: dict[str, Any]
    status: str = "ok"


@dataclass
class _Search:
    """One synthetic search's figures: pool rewards (policies x replicates 0..r), the audit
    runs' noise and each policy's per-image effects on the audit set."""

    pool: np.ndarray
    audit_run: np.ndarray  # mu + common + own noise, policies x replicates (no image term)
    effects: np.ndarray  # policies x images: what each policy gains on each audit image

    def audit_images(self, rng: np.random.Generator, i: int, rep: int) -> np.ndarray:
        """Policy i's per-image scores at a replicate: their mean is its audit accuracy."""
        noise = rng.normal(0, IMAGE_NOISE, IMAGES)
        return self.audit_run[i, rep] + self.effects[i] + noise - noise.mean()


def _figures(rng: np.random.Generator, noise: Noise, replicates: int,
             planted: float) -> _Search:
    """A search's figures; policy 1 is `planted` better. A margin's image term (candidate -
    base) has the measured SD, so each policy's has that over sqrt(2)."""
    shape = (POLICIES, replicates + 1)
    mu = np.zeros(POLICIES)
    mu[1] = planted
    shared = rng.standard_normal(shape)
    a, b = math.sqrt(noise.rho), math.sqrt(1 - noise.rho)
    e_pool = noise.pair_pool / math.sqrt(2) * (a * shared + b * rng.standard_normal(shape))
    e_audit = noise.pair_audit / math.sqrt(2) * (a * shared + b * rng.standard_normal(shape))
    pool = (mu[:, None] + rng.normal(0, noise.common, replicates + 1)[None, :] + e_pool
            + rng.normal(0, noise.image_pool / math.sqrt(2), POLICIES)[:, None])
    audit = mu[:, None] + rng.normal(0, noise.common, replicates + 1)[None, :] + e_audit
    per_image = noise.image_audit / math.sqrt(2) * math.sqrt(IMAGES)
    return _Search(pool, audit, rng.normal(0, per_image, (POLICIES, IMAGES)))


def one_search(rng: np.random.Generator, noise: Noise, replicates: int, planted: float = 0.0,
               pool_rule: bool = False, fail: float = 0.0, images: bool = True,
               top: int = TOP) -> tuple[list[Any], Any]:
    """A synthetic search and its confirmation, decided by search.stages.verdict; policy p0 is
    the base and p1 is `planted` above it. `pool_rule`: decide on the pool (audits unknown),
    as before the audit decided; `images`: the runs report each audit image (else the audit
    interval counts the seeds alone)."""
    f = _figures(rng, noise, replicates, planted)
    audit0 = f.audit_run[:, 0] + f.effects.mean(axis=1)
    rows = [{"trial_id": f"p{i}", "reference": BASE if i == 0 else "", "status": "ok",
             "reward": float(f.pool[i, 0]), "audit_accuracy": float(audit0[i]),
             "config": encode(TrialConfig(reference=BASE)) if i == 0 else {"sp0_op0": f"op{i}"}}
            for i in range(POLICIES)]
    rows.sort(key=lambda r: -r["reward"])  # a leaderboard, best first
    cands = candidates(rows, top=top, replay=False)
    measured = measurements(cands)
    outcomes = []
    for config in confirm_configs(cands, replicates):
        trial = decode(config)
        i, rep = int(trial.candidate[1:]), trial.replicate
        if rng.random() < fail:
            outcomes.append(Outcome(config, {}, "error"))
            continue
        scores = f.audit_images(rng, i, rep)
        outcomes.append(Outcome(config, {
            "reward": float(f.pool[i, rep]),
            "audit_accuracy": math.nan if pool_rule else float(scores.mean())}))
        if images and not pool_rule:
            outcomes[-1].result["images"] = scores
    record(measured, outcomes)
    for o in outcomes:  # per-image scores: real trials report bools (`audit_hits`); these
        if "images" in o.result:  # are real-valued, so they are set directly
            trial = decode(o.config)
            measured[trial.candidate].hits[trial.replicate] = o.result["images"]
    return cands, verdict(cands, measured, replicates)


def false_wins(noise: Noise, replicates: int, n: int = NULL_REPETITIONS, seed: int = 17,
               pool_rule: bool = False, fail: float = 0.0, images: bool = True,
               top: int = TOP) -> float:
    """The share of null searches whose verdict says a candidate beats the base."""
    rng = np.random.default_rng((seed, replicates))
    wins = 0
    for _ in range(n):
        v = one_search(rng, noise, replicates, pool_rule=pool_rule, fail=fail,
                       images=images, top=top)[1]
        wins += v is not None and v.beats_base
    return wins / n


def found(noise: Noise, replicates: int, margin: float, n: int = POWER_REPETITIONS,
          seed: int = 3, top: int = TOP) -> tuple[int, int]:
    """Of `n` searches with p1 planted `margin` above the base: how many put it among the top
    `top` (`reached`), and of those, how many exported it as beating the base."""
    rng = np.random.default_rng((seed, replicates))
    reached = hits = 0
    for _ in range(n):
        cands, v = one_search(rng, noise, replicates, planted=margin, top=top)
        if any(c.key == "p1" for c in cands):
            reached += 1
            hits += v.beats_base and v.exported.key == "p1"
    return reached, hits


def allowance(p: float, n: int) -> float:
    """Three binomial standard errors of a rate p over n repetitions (Monte Carlo error)."""
    return 3 * math.sqrt(p * (1 - p) / n)


def report(noise: Noise, default: int, top: int) -> str:
    """The null rates and the power, for one space's measured noise and its default
    confirmation (`default` fresh replicates of the `top` best), as a Markdown section."""
    head = (f"`python bench/selection_null.py` — {noise.name}'s measured noise (paired SD "
            f"pool {noise.pair_pool}, audit {noise.pair_audit}; policy x image SD pool "
            f"{noise.image_pool}, audit {noise.image_audit}; pool-audit correlation "
            f"{noise.rho}): {POLICIES} policies, the top {top} and the base confirmed; "
            f"{NULL_REPETITIONS:,} null searches and {POWER_REPETITIONS:,} with a planted "
            f"margin per row, the tests' repetitions and seeds.")
    lines = [head, "", "| rule | image term | failed runs | fresh replicates | false "
             "\"beats the base\" (nominal 2.5%) |", "|---|---|---:|---:|---:|"]
    flat = replace(noise, image_pool=0.0, image_audit=0.0)
    for label, pool_rule in (("decide on the pool (before)", True),
                             ("decide on the audit images (now)", False)):
        for term, n in (("measured", noise), ("none", flat)):
            for r in sorted({2, default}):
                lines.append(f"| {label} | {term} | 0 | {r} | "
                             f"{false_wins(n, r, pool_rule=pool_rule, top=top):.2%} |")
    lines.append(f"| decide on the audit images (now) | measured | 10% | {default} | "
                 f"{false_wins(noise, default, fail=0.1, top=top):.2%} |")
    for r in sorted({default, 12}):
        lines.append(f"| audit images, interval over the seeds alone | measured | 0 | {r} | "
                     f"{false_wins(noise, r, images=False, top=top):.2%} |")
    return "\n".join([*lines, "", *_power_lines(noise, default, top)])


def _power_lines(noise: Noise, default: int, top: int) -> list[str]:
    from search.stats import detectable_margin, power

    lines = [f"| true margin | fresh replicates | reaches the top {top} | then exported "
             "(simulated) | analytic power once picked (`search.stats.power`, the image term "
             "included) |", "|---:|---:|---:|---:|---:|"]
    detectable = detectable_margin(noise.pair_audit, default, top, image_sd=noise.image_audit)
    for margin in (0.02, round(detectable, 4)):
        reached, hits = found(noise, default, margin, top=top)
        analytic = power(margin, noise.pair_audit, default, top, image_sd=noise.image_audit)
        lines.append(f"| {margin:.4f} | {default} | {reached / POWER_REPETITIONS:.0%} | "
                     f"{hits / reached:.0%} | {analytic:.0%} |")
    return lines


def main() -> None:
    from bench.report import write_section
    from spaces.schema import load_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", nargs="*", default=sorted(MEASURED),
                        help=f"measured noises: {', '.join(MEASURED)}")
    args = parser.parse_args()
    for key in args.noise:
        s = load_space(key.split("-")[0]).search  # the space's default confirmation
        body = report(MEASURED[key], s.confirm_seeds, s.confirm)
        print(body)
        write_section(f"The confirmation's rule on null data: {MEASURED[key].name}", body)


if __name__ == "__main__":
    main()
