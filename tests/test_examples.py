"""examples/train_cifar.py as a user runs it: a found policy, batch ops included, in a plain
PyTorch loop, on tiny real data on the CPU.

The data is ../shared/data/cifar10_tiny.npz where present, else scikit-learn's digits made
32×32 RGB (a fresh clone); the assertions are the same.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from spaces.policy import BatchOps, Op, Policy, SubPolicy, save_policy
from tests.conftest import ROOT, SHARED_DATA, python_path

SCRIPT = ROOT / "examples" / "train_cifar.py"
POLICY = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Cutout", 0.5, 0.5))),
                 SubPolicy((Op("Color", 0.6, 0.7), Op("Equalize", 0.0, 0.5)))),
                BatchOps(mixup_alpha=0.3, cutmix_alpha=1.0, sample_pairing=0.2),
                provenance={"space": "cifar10"})


def _data(tmp_path: Path) -> Path:
    """cifar10_tiny.npz, else 200 + 100 of sklearn's digits as 32×32 RGB uint8."""
    tiny = SHARED_DATA / "cifar10_tiny.npz"
    if tiny.exists():
        return tiny
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))[:300]
    big = np.kron(digits.images[order], np.ones((4, 4))) * (255 / 16)
    rgb = np.repeat(np.clip(np.rint(big), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    y = digits.target[order].astype(np.uint8)
    path = tmp_path / "digits32.npz"
    np.savez(path, x_train=rgb[:200], y_train=y[:200], x_test=rgb[200:], y_test=y[200:])
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": python_path(), "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def test_train_cifar_trains_with_a_found_policy_on_the_cpu(tmp_path) -> None:
    policy = save_policy(POLICY, tmp_path / "best_policy.yaml")
    run = _run("--policy", str(policy), "--data", str(_data(tmp_path)), "--epochs", "2",
               "--device", "cpu", "--batch-size", "50", "--width", "4", "--train-size", "150")
    assert run.returncode == 0, run.stderr
    losses = [float(v) for v in re.findall(r"train loss ([0-9.naif]+)", run.stdout)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), run.stdout
    found = re.search(r"test accuracy: ([0-9.]+) \(100 test images, 150 training images",
                      run.stdout)
    assert found and 0.0 <= float(found.group(1)) <= 1.0, run.stdout
    assert "crop_padding': 4" in run.stdout  # the space's crop/flip, from the provenance


def test_train_cifar_refuses_the_albumentations_file_in_one_line(tmp_path) -> None:
    from spaces.policy import export_albumentations
    from spaces.schema import BaseAug

    exported = export_albumentations(POLICY, BaseAug(), 32, tmp_path / "best_policy.json")
    run = _run("--policy", str(exported), "--data", str(_data(tmp_path)), "--device", "cpu")
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "pass augsearch's policy" in run.stderr


def test_the_script_has_the_documented_flags() -> None:
    run = _run("--help")
    for flag in ("--policy", "--data", "--epochs", "--device", "--train-size"):
        assert flag in run.stdout
