"""Shared test fixtures: real data locations and one Ray instance per test session.

`AUGSEARCH_HIDE_SHARED_DATA=1` makes the tests behave as on a fresh clone without `../shared`:
every test that would read `../shared/data` falls back to bundled data or skips (CI runs the
end-to-end searches once this way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from spaces.schema import Space

ROOT = Path(__file__).resolve().parents[1]
HIDE_SHARED_ENV = "AUGSEARCH_HIDE_SHARED_DATA"
HIDDEN = os.environ.get(HIDE_SHARED_ENV, "") not in ("", "0")
# Hidden: a path that never exists, so every lookup takes the fresh-clone branch.
SHARED_DATA = (ROOT / ".no-shared-data" if HIDDEN else ROOT.parent / "shared" / "data")

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


def python_path() -> str:
    """PYTHONPATH for a subprocess: the project first, then what this one has (carried
    packages on a bare GPU machine live there)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def shared_file(name: str) -> Path:
    """A file from ../shared/data, or skip: a fresh user's machine does not have it."""
    path = SHARED_DATA / name
    if not path.exists():
        why = f"{HIDE_SHARED_ENV} is set" if HIDDEN else "only CI and developers have it"
        pytest.skip(f"../shared/data/{name} is absent ({why})")
    return path


# The digits space in the sub-policy family (3 x 2, its default until #25's figures chose
# RandAugment): what only sub-policies have (density matching's merged policy) is tested on it.
SUBPOLICY_DIGITS = {"policy.family": "subpolicies", "policy.randaugment": None,
                    "policy.sub_policies": 3, "policy.ops_per_sub_policy": 2,
                    "policy.search_probability": True}


def subpolicy_digits(**changes: Any) -> Space:
    """The built-in digits space searched in sub-policies, with `changes` (`Space.replace`)."""
    from spaces.families import with_family
    from spaces.schema import load_space

    return with_family(load_space("digits"), "subpolicies", **{**SUBPOLICY_DIGITS, **changes})


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
