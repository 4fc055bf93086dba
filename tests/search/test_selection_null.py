"""The whole confirmation rule on synthetic searches (bench/selection_null.py, which holds the
model and writes these figures to docs/BENCHMARKS.md with the same repetitions and seeds): false
wins on null data with the measured noise, the measured policy x image term and failing runs,
and power against the formula the summary's "could find a margin of" line uses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.selection_null import (
    MEASURED,
    NOMINAL,
    NULL_REPETITIONS,
    POWER_REPETITIONS,
    allowance,
    false_wins,
    found,
)
from search.stats import detectable_margin, power
from spaces.schema import load_space

NOISE = MEASURED["digits"]  # the digits space's child
QUIET = MEASURED["digits-basiccnn"]  # a child with less seed noise: the images weigh more
DEFAULT = load_space("digits").search.confirm_seeds
K = load_space("digits").search.confirm  # the candidates confirmed: the Bonferroni k
LIMIT = NOMINAL + allowance(NOMINAL, NULL_REPETITIONS)  # 0.025 + 0.006


@pytest.mark.parametrize("replicates", sorted({2, DEFAULT}))
def test_on_null_data_the_base_is_beaten_at_most_at_the_nominal_rate(replicates: int):
    """Decided on the audit images with their own luck counted: on the pool (the rule before)
    the same searches beat the base far more often (next test)."""
    rate = false_wins(NOISE, replicates, top=K)
    assert rate <= LIMIT, f"false 'beats the base' rate {rate:.4f} > {LIMIT:.4f}"


def test_failed_runs_never_make_a_false_win_more_likely():
    rate = false_wins(NOISE, DEFAULT, fail=0.1, top=K)
    assert rate <= LIMIT, f"false 'beats the base' rate {rate:.4f} > {LIMIT:.4f}"


def test_deciding_on_the_pool_that_selected_the_candidates_inflates_false_wins():
    """The rule before: the pool's policy x image term selected the candidates at replicate 0
    and is there again at every fresh replicate."""
    n = 2000
    rate = false_wins(NOISE, DEFAULT, n=n, pool_rule=True, top=K)
    assert rate > NOMINAL + allowance(NOMINAL, n), rate
    flat = replace(NOISE, image_pool=0.0, image_audit=0.0)
    assert false_wins(flat, DEFAULT, n=n, pool_rule=True, top=K) <= NOMINAL + allowance(
        NOMINAL, n)


def test_counting_the_seeds_alone_on_a_fixed_audit_set_inflates_false_wins():
    """Without each image's correctness the interval counts the seeds only; the audit set's
    own term then passes for an effect, more so the more replicates shrink the rest (the
    quieter basiccnn child's measured noise; counting the images keeps it nominal)."""
    n = 2000
    rate = false_wins(QUIET, 12, n=n, images=False, top=3)
    assert rate > NOMINAL + allowance(NOMINAL, n), rate
    assert false_wins(QUIET, 12, n=n, top=3) <= NOMINAL + allowance(NOMINAL, n)


def test_a_planted_margin_is_found_as_often_as_the_summary_says():
    """The summary's detectable margin comes from `search.stats.power`: planted at that margin,
    a policy that reached the top k is exported about 80% of the time (a little less: it must
    also be the best of the k on fresh replicates)."""
    margin = detectable_margin(NOISE.pair_audit, DEFAULT, K, image_sd=NOISE.image_audit)
    reached, hits = found(NOISE, DEFAULT, margin, top=K)
    assert reached > POWER_REPETITIONS / 4  # enough searches put it in the top k
    simulated = hits / reached
    analytic = power(margin, NOISE.pair_audit, DEFAULT, K, image_sd=NOISE.image_audit)
    assert analytic == pytest.approx(0.80, abs=1e-3)
    slack = allowance(analytic, reached)
    assert analytic - slack - 0.05 <= simulated <= analytic + slack, (simulated, analytic)
