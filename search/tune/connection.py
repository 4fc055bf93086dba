"""Ray itself: attach to a cluster or start a local Ray, and check that one trial's resources
exist before Tune would wait for them forever."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import ray

from search.errors import SearchError
from search.tune.plan import Resources

WORKER_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


@dataclass(frozen=True)
class Connection:
    started: bool  # this process started Ray, and so owns its shutdown
    cluster: bool  # attached to a cluster by address, whose autoscaler may add nodes


PROBE_TIMEOUT_S = 5.0


def cluster_address(address: str | None) -> str | None:
    """The cluster to attach to: --address, else RAY_ADDRESS (set inside a Ray job)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds when nothing listens at HOST:PORT.

    `ray.init` retries an unreachable address for minutes and ignores SIGTERM meanwhile; a plain
    TCP connection says at once whether anything is there. `auto` is left to Ray, which fails
    at once when no cluster runs on this machine.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SearchError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; "
                          f"pass the address `ray start --head` printed")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (
            err.strerror or type(err).__name__).lower()
        raise SearchError(f"cannot reach the Ray cluster at {address} ({reason} within "
                          f"{timeout:g} s); start it with 'ray start --head' or drop --address "
                          f"to run locally") from None


def connect(address: str | None) -> Connection:
    """Attach to a running Ray (address, or RAY_ADDRESS inside a Ray job) or start a local one.

    A local Ray gets the CPU count Ray itself detects, which honours cgroup (container) limits
    where `os.cpu_count()` does not.
    """
    address = cluster_address(address)
    if ray.is_initialized():
        return Connection(started=False, cluster=bool(address))
    env = {"env_vars": dict(WORKER_ENV)}
    try:
        if address:
            probe_address(address)
            ray.init(address=address, runtime_env=env, log_to_driver=False)
            return Connection(started=False, cluster=True)
        ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
    except ConnectionError as err:
        raise SearchError(f"cannot reach the Ray cluster at {address!r} ({_first_line(err)}); "
                          f"start it with 'ray start --head' or drop --address to run "
                          f"locally") from None
    return Connection(started=True, cluster=False)


def shutdown() -> None:
    ray.shutdown()


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def local_node() -> dict[str, float]:
    """What a local Ray would have, without starting it: Ray's own CPU and GPU detection."""
    from ray._private import accelerators, utils

    gpus = 0
    manager = accelerators.get_accelerator_manager_for_resource("GPU")
    if manager is not None:
        gpus = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        if visible is not None:
            gpus = min(gpus, len(visible))
    return {"CPU": float(utils.get_num_cpus()), "GPU": float(gpus)}


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _shortfall(res: Resources, nodes: list[dict[str, float]]) -> str:
    """Why none of `nodes` can run one trial ('' if one can)."""
    if any(n.get("CPU", 0.0) >= res.cpus and n.get("GPU", 0.0) >= min(res.gpus, 1.0)
           for n in nodes):
        return ""
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if res.gpus > 0 and gpus == 0:
        return (f"--gpus-per-trial {res.gpus:g} asks for GPUs but this Ray cluster has none; "
                f"use --gpus-per-trial 0 or connect to a GPU cluster with --address")
    biggest = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    return (f"no node has {res.cpus:g} CPUs and {res.gpus:g} GPUs for one trial (the largest "
            f"has {biggest:g} CPUs); lower --cpus-per-trial / --gpus-per-trial")


def precheck_resources(res: Resources, address: str | None) -> None:
    """Before Ray starts: refuse what a local Ray could never run.

    A cluster (--address or RAY_ADDRESS) is checked once attached, since its autoscaler may
    add nodes (`check_resources`).
    """
    if cluster_address(address):
        return
    nodes = _alive_nodes() if ray.is_initialized() else [local_node()]
    problem = _shortfall(res, nodes)
    if problem:
        raise SearchError(problem)


def check_resources(res: Resources, cluster: bool, wait_s: float = 600.0) -> None:
    """Refuse requests Ray could never satisfy (Tune would otherwise wait forever).

    On a local Ray we started, a shortfall is final. On an attached cluster the autoscaler may
    add nodes (GPU workers that scale from zero): ask it for one trial's worth and wait.
    """
    problem = _shortfall(res, _alive_nodes())
    if not problem:
        return
    if not cluster:
        raise SearchError(problem)
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus else {})}
    print(f"[augsearch] waiting up to {wait_s:.0f} s for the autoscaler to add a node with "
          f"{bundle}", flush=True)
    request_resources(bundles=[bundle])
    deadline = time.monotonic() + wait_s
    try:
        while problem and time.monotonic() < deadline:
            time.sleep(10)
            problem = _shortfall(res, _alive_nodes())
    finally:
        request_resources(bundles=[])  # pending trials keep the nodes wanted from here on
    if problem:
        raise SearchError(f"{problem} (waited {wait_s:.0f} s for the autoscaler; check "
                          f"`ray status`)")


def current_node_id() -> str:
    return ray.get_runtime_context().get_node_id()
