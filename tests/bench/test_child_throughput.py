"""The child-throughput bench's GPU section, as far as a CPU runs it: the same measuring code on
the CPU device, utilisation unavailable, and the unmeasured placeholder that never overwrites
figures."""

from __future__ import annotations

import pytest

from bench.child_throughput import (
    GPU_TITLE,
    PATHS,
    POLICIES,
    Case,
    GpuUtilisation,
    gpu_report,
    gpu_section,
    sampled_policy,
    unmeasured_gpu,
)
from bench.report import write_section
from children.datasets import load_dataset, make_splits
from spaces.policy import identity_policy
from spaces.schema import DatasetSpec, load_space

pytestmark = pytest.mark.slow


def test_no_gpu_utilisation_on_the_cpu_device() -> None:
    with GpuUtilisation("cpu") as gpu:
        assert gpu.read() is None
    assert gpu.mean is None and gpu.samples == []


def test_the_gpu_measurement_runs_on_the_cpu_device_and_reports_each_path() -> None:
    space = load_space("cifar10").replace(**{"reward.val_sample_size": 50})
    spec = DatasetSpec(name="digits", train_size=400, val_pool_size=100, audit_size=100,
                       image_size=32, channels=3, num_classes=10, resize=True)
    splits = make_splits(load_dataset(spec), spec, seed=0)
    policies = {"identity": identity_policy(), "policy": sampled_policy(space)}
    rows = gpu_section(policies, space, splits, epochs=1, device="cpu",
                       cases=(Case("basiccnn", 1, 384, 1),))  # 3 batches
    [(case, speeds)] = rows
    assert set(speeds) == {(p, path) for p in POLICIES for path in PATHS}
    assert all(s.wall > 0 and s.cpu_ms > 0 and s.gpu_util is None for s in speeds.values())
    text = gpu_report(rows, "policy", 1)
    assert text.count("| basiccnn |") == 2 and "n/a" in text


def test_the_unmeasured_placeholder_never_replaces_figures(tmp_path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    unmeasured_gpu(path)
    assert f"## {GPU_TITLE}\n\nUnmeasured: no CUDA device" in path.read_text()
    write_section(GPU_TITLE, "| basiccnn | 1 | 4,000 | batched | 9,000 |", path)
    unmeasured_gpu(path)
    text = path.read_text()
    assert "9,000" in text and "Unmeasured" not in text


def test_verdicts_follow_the_figures_on_wall_clock_and_cpu_time() -> None:
    from bench.child_throughput import Speed, verdicts

    def speeds(wall_policy: float, cpu_policy: float) -> dict:
        return {("identity", p): Speed(100.0, 10.0) for p in PATHS} | {
            ("policy", "albumentations"): Speed(wall_policy, cpu_policy),
            ("policy", "batched"): Speed(100.0, 10.0)}

    case = Case("basiccnn", 1, 2000, 2)
    wall_only = verdicts([(case, speeds(100 / 1.20, 10.5))])  # +20% wall, +5% CPU
    assert "albumentations path: **met on CPU time only** (worst basiccnn overhead +20.0% " \
           "wall-clock, +5.0% CPU time)" in wall_only[0]
    assert "batched path: **met**" in wall_only[1]
    both = verdicts([(case, speeds(100 / 1.30, 13.0))])
    assert "**NOT met**" in both[0]


def test_a_verdict_within_the_runs_spread_is_unresolved() -> None:
    from bench.child_throughput import Speed, verdicts

    speeds = {("identity", p): Speed(100.0, 10.0) for p in PATHS} | {
        ("policy", "albumentations"): Speed(100 / 1.117, 11.03),  # +11.7% wall, +10.3% CPU
        ("policy", "batched"): Speed(100 / 1.018, 10.25)}  # +1.8%, +2.5%
    case = Case("basiccnn", 1, 2000, 2)
    noisy = verdicts([(case, speeds)], noise=(0.49, 0.34))  # the spread BENCHMARKS reported
    assert "albumentations path: **unresolved" in noisy[0]
    assert "batched path: **unresolved" in noisy[1] and "differed by up to 49%" in noisy[1]
    quiet = verdicts([(case, speeds)], noise=(0.02, 0.02))
    assert "albumentations path: **met**" in quiet[0] and "batched path: **met**" in quiet[1]
    mixed = verdicts([(case, speeds)], noise=(0.10, 0.02))  # 11.7 + 10 > 15; 10.3 + 2 <= 15
    assert "albumentations path: **wall-clock unresolved, CPU time met**" in mixed[0]
