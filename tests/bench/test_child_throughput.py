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


def runs_with(walls: list[float], cpus: list[float]) -> dict:
    """Rounds whose albumentations policy run adds `walls[i]`% wall-clock time and `cpus[i]`%
    CPU time to the identity run beside it; the batched path adds nothing."""
    from bench.child_throughput import Speed

    ident = [Speed(100.0, 10.0) for _ in walls]
    return {("identity", "albumentations"): ident, ("identity", "batched"): ident,
            ("policy", "batched"): ident,
            ("policy", "albumentations"): [Speed(100.0 / (1 + w / 100), 10.0 * (1 + c / 100))
                                           for w, c in zip(walls, cpus, strict=True)]}


def test_verdicts_follow_the_rounds_on_wall_clock_and_cpu_time() -> None:
    from bench.child_throughput import verdicts

    case = Case("basiccnn", 1, 2000, 4)
    wall_only = verdicts([(case, runs_with([19, 20, 21, 20], [4, 5, 6, 5]))])
    assert "albumentations path: **met on CPU time only**" in wall_only[0]
    assert "over 4 paired rounds: +20.0% [" in wall_only[0]
    assert "batched path: **met**" in wall_only[1]
    both = verdicts([(case, runs_with([29, 30, 31, 30], [25, 26, 27, 26]))])
    assert "albumentations path: **NOT met**" in both[0]


def test_a_verdict_whose_ci_straddles_the_target_is_unresolved() -> None:
    from bench.child_throughput import verdicts

    case = Case("basiccnn", 1, 2000, 4)
    # the means (+11.7%, +10.3%) lie below 15%, but rounds this far apart cannot tell
    noisy = verdicts([(case, runs_with([-10, 40, 5, 11.8], [-5, 30, 2, 14.2]))])
    assert "albumentations path: **unresolved" in noisy[0]
    one_round = verdicts([(Case("basiccnn", 1, 2000, 1), runs_with([2], [2]))])
    assert "**unresolved" in one_round[0] and "one round: no CI" in one_round[0]
    mixed = verdicts([(case, runs_with([-10, 40, 5, 11.8], [10, 11, 10, 10.2]))])
    assert "albumentations path: **wall-clock unresolved, CPU time met**" in mixed[0]
    # a second basiccnn row that fails the target makes the path's verdict not met
    two = verdicts([(case, runs_with([1, 2, 1, 2], [1, 2, 1, 2])),
                    (Case("basiccnn", 2, 2000, 4), runs_with([30, 31, 30, 31], [30, 31, 30, 31]))])
    assert "albumentations path: **NOT met** (worst basiccnn row, 2 thread(s)" in two[0]
