"""Batch ops and the background producer, on real digits."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from children.batches import channel_stats, mix_batch, normalize, prefetch
from spaces.policy import BatchOps


@pytest.fixture()
def batch(digits_splits):
    x = digits_splits.train.x[:64]
    mean, std = channel_stats(digits_splits.train.x)
    return normalize(x, mean, std), digits_splits.train.y[:64].copy()


def test_normalised_train_split_has_zero_mean_unit_std(digits_splits):
    mean, std = channel_stats(digits_splits.train.x)
    x = normalize(digits_splits.train.x, mean, std)
    assert x.shape == (400, 1, 16, 16) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_no_batch_ops_leave_the_batch_alone(batch):
    x, y = batch
    out = mix_batch(x.copy(), y, BatchOps(), np.random.default_rng(0))
    assert np.array_equal(out.x, x) and out.lam == 1.0 and out.y_b is out.y_a


def test_sample_pairing_averages_images_and_keeps_labels(batch):
    x, y = batch
    out = mix_batch(x.copy(), y, BatchOps(sample_pairing=1.0), np.random.default_rng(0))
    assert out.lam == 1.0 and np.array_equal(out.y_a, y)
    changed = [i for i in range(len(x)) if not np.array_equal(out.x[i], x[i])]
    assert len(changed) > 50
    i = changed[0]
    partner = [j for j in range(len(x)) if np.allclose(out.x[i], 0.5 * (x[i] + x[j]))]
    assert partner  # a 50/50 blend with another image of the batch


def test_mixup_blends_a_permutation_with_beta_lam(batch):
    x, y = batch
    out = mix_batch(x.copy(), y, BatchOps(mixup_alpha=0.4), np.random.default_rng(1))
    assert 0.0 < out.lam < 1.0 and sorted(out.y_b) == sorted(y)
    blends = out.lam * x[0] + (1 - out.lam) * x  # image 0 blended with each candidate
    partners = np.flatnonzero(np.all(np.isclose(out.x[0], blends, atol=1e-5), axis=(1, 2, 3)))
    assert len(partners) and out.y_b[0] in y[partners]


def test_cutmix_pastes_a_box_and_lam_is_the_kept_area(batch):
    x, y = batch
    out = mix_batch(x.copy(), y, BatchOps(cutmix_alpha=1.0), np.random.default_rng(3))
    kept = np.mean([np.mean(np.isclose(out.x[i], x[i])) for i in range(len(x))])
    assert 0.0 < out.lam < 1.0
    assert kept >= out.lam - 0.05  # unchanged pixels: at least the kept area (others may match)


def test_prefetch_yields_in_order_reraises_and_stops_its_thread():
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def broken():
        yield 1
        raise ValueError("bad op")

    with pytest.raises(ValueError, match="bad op"):
        list(prefetch(broken()))
    before = threading.active_count()
    with contextlib.closing(prefetch(iter(range(1000)), depth=2)) as stream:
        assert next(stream) == 0
    assert threading.active_count() == before
