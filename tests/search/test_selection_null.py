"""The whole confirmation rule on synthetic rewards: false wins on null data, and power.

Each repetition runs search.stages.confirm's real functions: `candidates` picks the top 3 of a
leaderboard of 32 policies (the base among them) by their search rewards, `confirm_configs`
says which runs to train, `record` takes their rewards, `verdict` decides. Only the rewards are
synthetic, drawn as a search under common random numbers makes them: policy i at replicate s
scores mu_i + c_s + e_is, with c_s the replicate's common seed (initial weights, batch order,
validation sample), the same for every policy, and e_is the policy's own noise. Replicate 0 is
the search; the confirmation trains 1..r. SD_D, the SD of a paired difference between two
policies of one replicate, is 0.0125, the middle of digits' measured 0.01-0.015.

Null: every mu_i is 0, so each "beats the base" is a false win. Nominal rate: one-sided 2.5%
(the lower bound of a 95% interval above 0). The old rule (the search reward as replicate 0 of
each candidate's mean and margin, an uncorrected 95% interval, r = 2) gave 9.6% in a 100,000-
repetition simulation (10% at r = 8); with fresh replicates only and Bonferroni over the 3
candidates, 1.5% at r = 2 and 2.0% at r = 8 (Bonferroni is conservative).

Power (the same 100,000-repetition simulation, one policy planted 0.02 above the base): it
reaches the top 3 by its one search reward 80% of the time; given that, r = 6, 7, 8, 10 export
it as beating the base 65%, 79%, 88%, 96% of the time, so r = 8 (the default,
`DEFAULT_REPLICATES`) is the fewest with 80%: 70% overall. At a margin of 0.015, r = 8 finds it
62% of the time once in the top 3. The cost is (3 + 1) x 8 = 32 trainings, as many as digits'
search; the old default cost 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from search.stages.confirm import (
    DEFAULT_REPLICATES,
    candidates,
    confirm_configs,
    measurements,
    record,
    verdict,
)
from search.trials.config import TrialConfig, decode, encode
from search.trials.references import BASE

POLICIES, TOP = 32, 3
SD_D = 0.0125  # paired difference between two policies at one replicate
SD_E = SD_D / math.sqrt(2)  # a policy's own noise
SD_C = 0.01  # the replicate's common share (cancels in every paired difference)
NOMINAL = 0.025  # one-sided: the interval's lower bound above 0
MARGIN = 0.02  # the planted policy's true margin in the power test
POWER = 0.80  # stated power at MARGIN, given the planted policy is among the top 3


@dataclass
class Outcome:
    """What `record` reads of a Tune outcome."""

    config: dict[str, Any]
    result: dict[str, Any]
    status: str = "ok"


def one_search(rng: np.random.Generator, replicates: int, planted: float = 0.0) -> Any:
    """A synthetic search and its confirmation, decided by search.stages.confirm; policy p0 is
    the base and p1 is `planted` above it."""
    mu = np.zeros(POLICIES)
    mu[1] = planted
    common = rng.normal(0.0, SD_C, replicates + 1)
    reward = mu[:, None] + common[None, :] + rng.normal(0.0, SD_E, (POLICIES, replicates + 1))
    rows = [{"trial_id": f"p{i}", "reference": BASE if i == 0 else "", "status": "ok",
             "reward": float(reward[i, 0]), "audit_accuracy": float(reward[i, 0]),
             "config": encode(TrialConfig(reference=BASE)) if i == 0 else {"sp0_op0": f"op{i}"}}
            for i in range(POLICIES)]
    rows.sort(key=lambda r: -r["reward"])  # a leaderboard, best first
    cands = candidates(rows, top=TOP, replay=False)
    measured = measurements(cands)
    outcomes = []
    for config in confirm_configs(cands, replicates):
        trial = decode(config)
        i, rep = int(trial.candidate[1:]), trial.replicate
        outcomes.append(Outcome(config, {"reward": float(reward[i, rep]),
                                         "audit_accuracy": float(reward[i, rep])}))
    record(measured, outcomes)
    return cands, verdict(cands, measured)


def allowance(p: float, n: int) -> float:
    """Three binomial standard errors of a rate p over n repetitions (Monte Carlo error)."""
    return 3 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("replicates", sorted({2, DEFAULT_REPLICATES}))
def test_on_null_rewards_the_base_is_beaten_at_most_at_the_nominal_rate(replicates: int):
    n = 6000
    rng = np.random.default_rng(17 + replicates)
    wins = sum(one_search(rng, replicates)[1].significant for _ in range(n))
    rate = wins / n
    limit = NOMINAL + allowance(NOMINAL, n)  # 0.025 + 0.006
    assert rate <= limit, f"false 'beats the base' rate {rate:.4f} > {limit:.4f}"


def test_a_planted_margin_is_found_and_exported_with_the_stated_power():
    n = 1500
    rng = np.random.default_rng(3)
    reached = found = 0
    for _ in range(n):
        cands, v = one_search(rng, DEFAULT_REPLICATES, planted=MARGIN)
        if any(c.key == "p1" for c in cands):
            reached += 1
            found += v.significant and v.winner.key == "p1"
    power = found / reached
    assert reached > n / 2  # its one search reward puts it in the top 3 ~80% of the time
    limit = POWER - allowance(POWER, reached)
    assert power >= limit, f"power {power:.3f} < {limit:.3f} ({found} of {reached})"
