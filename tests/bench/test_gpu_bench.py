"""bench/gpu.py's machinery (worker processes started together, cohorts, the report), run tiny
on the CPU; on a GPU machine it measures for real (bench/gpu_check.sh)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_bench_runs_end_to_end_on_the_cpu(tmp_path) -> None:
    before = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--device", "cpu",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "gpu_bench.md").read_text()
    for label in ("one child, albumentations", "2 processes", "cohort of 2, 1 process",
                  "cohorts of 2, 2 processes"):
        assert f"| {label} |" in report
    assert "Best configuration:" in report and "32-trial searches: not run (--smoke)" in report
    assert (ROOT / "docs" / "BENCHMARKS.md").read_text() == before  # a smoke run writes nothing


def test_without_cuda_it_says_unmeasured_and_writes_nothing() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: bench/gpu.py measures for real here")
    done = subprocess.run([sys.executable, "bench/gpu.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "unmeasured (no CUDA" in done.stdout
