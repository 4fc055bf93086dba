"""A real multi-node Ray cluster on this machine: the search spreads over nodes and survives one.

`ray start` launches a head and worker nodes on loopback addresses (127.0.0.2, 127.0.0.3), each
with its own temp dir, and `python -m search.run --address ...` runs against them in a
subprocess, as it would on a cluster made by `ray up`. Nothing here uses the test session's
in-process Ray.

Token authentication stays on as in cluster.yaml: the token is passed through RAY_AUTH_TOKEN
so nothing is written to ~/.ray. Every process a node starts is killed by PID at the end (never
`ray stop`, which would stop every Ray on the machine, including other test runs).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60
SEARCH_TIMEOUT = 150
# Every node gets its own loopback address, as hosts of a real cluster have their own. Not
# 127.0.0.1: Ray rewrites 127.0.0.1 and "localhost" to the machine's outward address (so that
# other hosts could connect), which would take the traffic off loopback.
HEAD_IP = "127.0.0.2"


# ---------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process; None if gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def process_tree(root: int, include_root: bool) -> set[int]:
    """Live processes of `root`'s session and their descendants (and `root`'s, if asked).

    Include `root` itself only while it is unreaped: once reaped, its number may belong to an
    unrelated process. Session members are safe to match, because Linux does not reuse a
    number that is still some process's session id.
    """
    info = {pid: st for pid in _all_pids() if (st := _stat(pid)) is not None}
    found = {pid for pid, (_, sid) in info.items() if sid == root}
    if include_root:
        found.add(root)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in info.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return {pid for pid in found if pid in info}


def kill_tree(proc: subprocess.Popen, timeout: float = 15.0) -> set[int]:
    """SIGKILL a process started with its own session, and everything it started.

    For a node: the blocking `ray start`, its GCS/raylet, agents and worker processes.
    Returns what is still alive after `timeout` (empty when everything is gone).
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = process_tree(proc.pid, include_root=proc.poll() is None)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the cluster


@dataclass
class Node:
    name: str
    temp_dir: Path
    proc: subprocess.Popen
    node_id: str = ""


@dataclass
class LoopbackCluster:
    """A Ray head plus worker nodes on loopback, each node a `ray start --block` session."""

    base: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    def _start(self, name: str, args: list[str]) -> Node:
        temp_dir = self.base / name
        log = (self.base / f"{name}.log").open("wb")
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
               "--disable-usage-stats", f"--temp-dir={temp_dir}", "--object-store-memory=100000000",
               f"--dashboard-agent-listen-port={free_port()}",
               f"--metrics-export-port={free_port()}", *args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        node = Node(name, temp_dir, proc)
        self.nodes.append(node)
        return node

    def start_head(self, cpus: int) -> Node:
        return self._start("head", ["--head", f"--node-ip-address={HEAD_IP}",
                                    f"--port={self.port}", f"--num-cpus={cpus}",
                                    "--include-dashboard=false",
                                    f"--dashboard-port={free_port()}",
                                    '--resources={"head": 1}'])

    def start_worker(self, name: str, cpus: int) -> Node:
        ip = f"127.0.0.{len(self.nodes) + 2}"  # 127.0.0.3, 127.0.0.4, ...
        return self._start(name, [f"--address={self.address}", f"--node-ip-address={ip}",
                                  f"--num-cpus={cpus}", f'--resources={{"{name}": 1}}'])

    def query(self, code: str) -> object:
        """Run `code` (which sets `out`) in a short driver attached to the cluster."""
        script = ("import json, ray\n"
                  f"ray.init(address={self.address!r}, log_to_driver=False)\n"
                  f"{code}\nprint('@@' + json.dumps(out))\n")
        res = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                             text=True, timeout=30, cwd=self.base)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("@@")]
        if res.returncode != 0 or not lines:
            raise RuntimeError(f"cluster query failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return json.loads(lines[-1][2:])

    def alive_nodes(self) -> list[dict]:
        return self.query(  # type: ignore[return-value]
            "out = [{'id': n['NodeID'], 'resources': n['Resources'],"
            " 'socket': n['RayletSocketName']} for n in ray.nodes() if n['Alive']]")

    def wait_for(self, node: Node) -> None:
        """Wait until `node` has joined, and learn its node id."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start for {node.name} exited: "
                                   f"{(self.base / f'{node.name}.log').read_text()[-3000:]}")
            try:
                nodes = self.alive_nodes()
            except RuntimeError:
                nodes = []
            for n in nodes:
                if n["socket"].startswith(str(node.temp_dir) + "/"):
                    node.node_id = n["id"]
                    return
            time.sleep(1)
        raise TimeoutError(f"node {node.name} did not join within {START_TIMEOUT}s")

    def kill(self, node: Node) -> None:
        left = kill_tree(node.proc)
        assert not left, f"node {node.name}: processes survived SIGKILL: {sorted(left)}"
        node.proc.wait(timeout=10)

    def shutdown(self) -> set[int]:
        """Kill every node; returns the PIDs that could not be killed."""
        left: set[int] = set()
        for node in reversed(self.nodes):
            left |= kill_tree(node.proc)
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                left.add(node.proc.pid)
        return left


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        # token auth on, as on a real cluster; the token travels in the environment
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",  # trials write result.json (polled below)
        "RAY_DEDUP_LOGS": "0",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        # notice a killed node within seconds instead of ~30 s
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    })
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def cluster() -> Iterator[LoopbackCluster]:
    base = Path(f"/tmp/rayt-{os.getpid()}-{secrets.token_hex(2)}")  # short: socket paths
    base.mkdir()
    c = LoopbackCluster(base, node_env())
    try:
        yield c
    finally:
        left = c.shutdown()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left behind: {sorted(left)}"


# ---------------------------------------------------------------- the search


def search_cmd(cluster: LoopbackCluster, output: Path, trials: int, epochs: int) -> list[str]:
    return [sys.executable, "-m", "search.run", "--space", "digits", "--searcher", "random",
            "--address", cluster.address, "--output", str(output), "--trials", str(trials),
            "--epochs", str(epochs), "--concurrency", "2", "--cpus-per-trial", "1",
            "--gpus-per-trial", "0", "--confirm", "0",  # the search stage is what is tested
            "--headroom-seeds", "0"]


def leaderboard(output: Path) -> list[dict[str, str]]:
    with (output / "leaderboard.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reports(output: Path) -> list[dict]:
    """Every result a trial has reported so far (Tune's result.json lines)."""
    found = []
    for path in (output / "ray").glob("*/*/result.json"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                found.append({**json.loads(line), "_dir": path.parent.name})
            except json.JSONDecodeError:
                pass  # a line being written
    return found


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=SEARCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        proc.wait()
        pytest.fail(f"search did not finish in {SEARCH_TIMEOUT}s:\n{log.read_text()[-4000:]}")
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, f"search exited {proc.returncode}:\n{text[-4000:]}"
    return text


def start_search(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as f:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


# ---------------------------------------------------------------- tests


def test_trials_spread_over_two_nodes(cluster: LoopbackCluster) -> None:
    head = cluster.start_head(cpus=1)
    cluster.wait_for(head)
    worker = cluster.start_worker("w1", cpus=1)
    cluster.wait_for(worker)
    assert len({n["id"] for n in cluster.alive_nodes()}) == 2

    output = cluster.base / "out1"
    log = cluster.base / "search1.log"
    # two trials at once, one CPU per node: they can only run on different nodes
    proc = start_search(search_cmd(cluster, output, trials=2, epochs=2), cluster.env, log)
    try:
        finish(proc, log)
    finally:
        kill_tree(proc)
    rows = leaderboard(output)
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert {r["node_id"] for r in rows} == {head.node_id, worker.node_id}
    assert (output / "best_policy.json").exists()


def test_killing_a_worker_node_mid_search_loses_no_trial(cluster: LoopbackCluster) -> None:
    head = cluster.start_head(cpus=1)
    cluster.wait_for(head)
    worker = cluster.start_worker("w2", cpus=1)
    cluster.wait_for(worker)

    output = cluster.base / "out2"
    log = cluster.base / "search2.log"
    trials = 3
    proc = start_search(search_cmd(cluster, output, trials=trials, epochs=10),
                        cluster.env, log)
    try:
        # kill the worker node once one of its trials has reported an epoch (and has more to go)
        deadline = time.monotonic() + SEARCH_TIMEOUT
        victim = None
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            victim = next((r["_dir"] for r in reports(output)
                           if r.get("node_id") == worker.node_id), None)
            time.sleep(0.2)
        assert victim is not None, f"no trial reported from the worker node:\n{log.read_text()}"
        cluster.kill(worker)
        finish(proc, log)
    finally:
        kill_tree(proc)

    rows = leaderboard(output)
    assert len(rows) == trials, rows
    assert len({r["_dir"] for r in reports(output)}) == trials
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert all(r["reward"] not in ("", "nan") for r in rows)
    # the interrupted trial reported from the worker, then was retried on the head and finished
    (victim_row,) = [r for r in rows if r["trial_id"] and r["trial_id"] in victim]
    assert victim_row["node_id"] == head.node_id, victim_row
    victim_nodes = [r.get("node_id") for r in reports(output) if r["_dir"] == victim]
    assert victim_nodes[0] == worker.node_id and victim_nodes[-1] == head.node_id, victim_nodes
    finished_on = {r["node_id"] for r in rows}
    assert finished_on <= {head.node_id, worker.node_id}
    assert head.node_id in finished_on
