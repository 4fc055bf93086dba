"""bench/cohort_cpu.py's figures on inputs whose answer is known: images per CPU second, the
cohort / lone ratio and the table that reports them."""

from __future__ import annotations

import math

import pytest

from bench.cohort_cpu import Row, rate, ratio, table


def test_the_rate_is_k_children_images_epochs_over_cpu_seconds() -> None:
    assert rate(1, 1000, 3, 6.0) == pytest.approx(500.0)
    assert rate(8, 2000, 3, 96.0) == pytest.approx(500.0)  # 8 × 2000 × 3 images in 96 s
    assert rate(4, 100, 2, 0.5) == pytest.approx(1600.0)
    with pytest.raises(ValueError, match="cpu_seconds must be > 0"):
        rate(2, 100, 1, 0.0)


def test_the_ratio_is_the_cohort_over_the_lone_children() -> None:
    assert ratio(900.0, 600.0) == pytest.approx(1.5)
    assert ratio(300.0, 600.0) == pytest.approx(0.5)
    assert math.isnan(ratio(300.0, 0.0))
    same_cpu = Row("basiccnn", 16, 4, rate(4, 1000, 2, 10.0), rate(4, 1000, 2, 10.0))
    assert same_cpu.ratio == pytest.approx(1.0)
    # the cohort took half the CPU time of K lone children: twice their images per CPU second
    half = Row("resnet_fast", 8, 8, rate(8, 1000, 2, 20.0), rate(8, 1000, 2, 40.0))
    assert half.ratio == pytest.approx(2.0)


def test_the_table_has_one_line_per_child_and_k_with_both_rates_and_the_ratio() -> None:
    rows = [Row("basiccnn", 16, 1, 800.0, 820.0, "batched"),
            Row("basiccnn", 16, 8, 1640.0, 820.0, "batched"),
            Row("resnet_fast", 8, 2, 1234.4, 617.2, "cohort batched, lone albumentations")]
    lines = table(rows).splitlines()
    assert lines[0].startswith("| child | K | cohort: images/s per core |")
    assert lines[1] == "|---|---:|---:|---:|---:|---|"
    assert lines[2:] == [
        "| basiccnn w16 | 1 | 800 | 820 | 0.98x | batched |",
        "| basiccnn w16 | 8 | 1,640 | 820 | 2.00x | batched |",
        "| resnet_fast w8 | 2 | 1,234 | 617 | 2.00x | cohort batched, lone albumentations |"]
