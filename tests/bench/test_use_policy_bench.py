"""bench/use_policy.py end to end on a few images: every way to use a found policy is timed and
reported against the albumentations export, and the GPU row says whether it was measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, python_path

pytestmark = pytest.mark.slow


def test_the_bench_reports_each_way_against_the_export() -> None:
    env = {**os.environ, "PYTHONPATH": python_path(), "NO_ALBUMENTATIONS_UPDATE": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "use_policy.py"), "--images",
                          "256", "--rounds", "1", "--no-write"], capture_output=True, text=True,
                         env=env, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    names = " ".join(rows)
    assert len(rows) == (6 if torch.cuda.is_available() else 5), run.stdout
    assert "| albumentations.load(best_policy.json), per image (no batch ops) |" in names
    assert names.count("PolicyAugment") == (4 if torch.cuda.is_available() else 3)
    assert ("GPU: unmeasured" in run.stdout) != torch.cuda.is_available()
