"""examples/train_cifar.py as a user runs it: a found policy, batch ops included, in a plain
PyTorch loop, on small real data on the CPU.

The data is scikit-learn's digits made 32×32 RGB (bundled: the same on every clone), where a
short run learns: the tiny CIFAR-10 sample in ../shared/data stays near chance for as long as a
test can wait (0.10 to 0.20 after 5 epochs of 200 images, measured), so it could not tell a
working run from a broken one.
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
from tests.conftest import ROOT, python_path

SCRIPT = ROOT / "examples" / "train_cifar.py"
POLICY = Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Cutout", 0.5, 0.5))),
                 SubPolicy((Op("Color", 0.6, 0.7), Op("Equalize", 0.0, 0.5)))),
                BatchOps(mixup_alpha=0.3, cutmix_alpha=1.0, sample_pairing=0.2),
                provenance={"space": "cifar10"})


# What the run is held to: a broken run (labels mixed up, weights not updated, images garbled)
# scores chance, 0.10 on the 100 test images (binomial SE 0.03); this run, 4 epochs of batches
# of 10 at width 8 and lr 0.01, scored 0.41, 0.36 and 0.28 (seeds 0, 1, 2; measured).
ARGS = ("--epochs", "4", "--batch-size", "10", "--width", "8", "--lr", "0.01")
ABOVE_CHANCE = 0.2  # chance + 3 SE


def _data(tmp_path: Path) -> Path:
    """200 + 100 of sklearn's digits as 32×32 RGB uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))[:300]
    big = np.kron(digits.images[order], np.ones((4, 4))) * (255 / 16)
    rgb = np.repeat(np.clip(np.rint(big), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    y = digits.target[order].astype(np.uint8)
    path = tmp_path / "digits32.npz"
    np.savez(path, x_train=rgb[:200], y_train=y[:200], x_test=rgb[200:], y_test=y[200:])
    return path


def printed_accuracy(stdout: str, train_images: int = 200) -> float:
    """The test accuracy the script printed (its line names the images it used)."""
    found = re.search(rf"test accuracy: ([0-9.]+) \(100 test images, {train_images} training "
                      rf"images", stdout)
    assert found, stdout
    return float(found.group(1))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": python_path(), "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def test_train_cifar_learns_with_a_found_policy_on_the_cpu(tmp_path) -> None:
    policy = save_policy(POLICY, tmp_path / "best_policy.yaml")
    run = _run("--policy", str(policy), "--data", str(_data(tmp_path)), *ARGS,
               "--device", "cpu")
    assert run.returncode == 0, run.stderr
    losses = [float(v) for v in re.findall(r"train loss ([0-9.naif]+)", run.stdout)]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses), run.stdout
    assert printed_accuracy(run.stdout) > ABOVE_CHANCE, run.stdout
    assert "crop_padding': 4" in run.stdout  # the space's crop/flip, from the provenance


def test_the_accuracy_check_fails_for_a_model_that_did_not_learn(tmp_path) -> None:
    """The same run with a learning rate too small to move a weight scores near chance."""
    policy = save_policy(POLICY, tmp_path / "best_policy.yaml")
    run = _run("--policy", str(policy), "--data", str(_data(tmp_path)), *ARGS[:-2],
               "--lr", "1e-9", "--epochs", "1", "--train-size", "150", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert printed_accuracy(run.stdout, train_images=150) <= ABOVE_CHANCE, run.stdout


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
