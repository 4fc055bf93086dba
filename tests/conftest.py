"""Shared test fixtures: real data locations and one Ray instance per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Quiet, offline, no writes to $HOME; set before anything imports Ray or albumentations.
for key, value in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(key, value)


def shared_file(name: str) -> Path:
    """A file from ../shared/data, or skip: a fresh user's machine does not have it."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (only CI and developers have ../shared/data)")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance for the whole test session (starting one costs ~4 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
                 log_to_driver=False,
                 runtime_env={"env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1"}})
    yield ray
    ray.shutdown()
