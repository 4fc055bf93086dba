"""Run metadata: what a run is and where it ran, as MLflow params and tags (no MLflow here).

The same tags (library versions, git revision, host, CPU, GPUs) describe a search's parent run
and an evaluation's run; a search's params describe its space, searcher and options.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from search.rewards import reward_kind
from spaces.schema import Space

VERSIONED = ("augsearch", "ray", "optuna", "torch", "albumentations", "mlflow", "numpy")
_OPTION_PARAMS = ("early_stop", "address", "data", "smoke_test")


def run_tags(source: str) -> dict[str, str]:
    """Versions, git revision, host and hardware, and `mlflow.source.name` = `source`."""
    tags = {f"version.{name}": _version(name) for name in VERSIONED}
    tags["version.python"] = platform.python_version()
    tags.update(_hardware())
    revision = _git_revision()
    if revision:
        tags["mlflow.source.git.commit"] = revision
        tags["git_revision"] = revision
    tags["mlflow.source.name"] = source
    return tags


def search_params(space: Space, searcher: str, opts: Any, output: Path) -> dict[str, Any]:
    """A search's parent-run params: space, searcher, seed, budget, data sizes, child, reward."""
    d, c, s = space.dataset, space.child, space.search
    params: dict[str, Any] = {
        "space": space.name, "searcher": searcher, "seed": getattr(opts, "seed", 0),
        "trials": s.trials, "concurrency": s.concurrency, "cpus_per_trial": s.cpus_per_trial,
        "gpus_per_trial": s.gpus_per_trial, "dataset": d.name, "train_size": d.train_size,
        "val_pool_size": d.val_pool_size, "audit_size": d.audit_size,
        "image_size": d.image_size, "child_model": c.model, "child_width": c.width,
        "epochs": c.epochs, "batch_size": c.batch_size, "reward_metric": space.reward.metric,
        "reward_last_epochs": space.reward.last_epochs,
        "val_sample_size": space.reward.val_sample_size, "reward_kind": space.reward.kind,
        **reward_kind(space).params(space),
        "sub_policies": space.policy.sub_policies,
        "ops_per_sub_policy": space.policy.ops_per_sub_policy,
        "ops": ",".join(o.name for o in space.policy.ops), "output": str(output),
    }
    for key in _OPTION_PARAMS:
        value = getattr(opts, key, None)
        if value not in (None, False, ""):
            params[key] = value
    return params


def preview_images(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """`n` training images, one per class first, copied out of (read-only) shared memory."""
    first: dict[int, int] = {}
    for i, label in enumerate(np.asarray(y).tolist()):
        first.setdefault(int(label), i)
    chosen = [first[k] for k in sorted(first)][:n]
    taken = set(chosen)
    chosen += [i for i in range(min(len(x), 2 * n)) if i not in taken][:n - len(chosen)]
    return np.array(x[chosen])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _hardware() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": str(os.cpu_count()), "gpus": _gpus()}


def _gpus() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = [ln.split("(")[0].strip() for ln in out.stdout.splitlines() if ln.startswith("GPU")]
    return "; ".join(names) if names else "none"


def _git_revision() -> str:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
