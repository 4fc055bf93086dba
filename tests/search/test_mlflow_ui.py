"""A real browser check: `mlflow ui` on a store the tracker wrote, read by headless Chromium.

The MLflow UI is a React single-page app, so the runs only appear in the DOM once its scripts ran
against the server's REST API; `--virtual-time-budget` lets Chromium finish that before it dumps
the DOM or takes the screenshot. Set AUGSEARCH_DOCS_SCREENSHOTS=1 to refresh docs/mlflow-ui.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subpolicy_digits

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
SERVER_START_S = 180  # `mlflow ui` takes ~25 s to start on a busy 2-core machine
BROWSER_S = 120
TRIALS = 4


@dataclass
class Store:
    uri: str
    experiment_id: str
    parent_name: str
    trial_runs: dict[str, str]  # run name -> run id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A small search recorded by the tracker (Tune-shaped events, real digits images)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y "
                    f"chromium) to run the browser check")
    from children.datasets import load_dataset, make_splits
    from search.prepare.options import SearchOptions
    from search.stages.outputs import leaderboard_rows, write_outputs
    from search.tracking import Tracker
    from search.trials.compile import sample_configs

    space = subpolicy_digits(**{"child.epochs": 3, "reward.last_epochs": 1})
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    output = tmp_path_factory.mktemp("ui") / "digits-tpe-ui"
    tracker = Tracker.connect(None, None, space, output)
    tracker.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    outcomes = []
    for k, config in enumerate(sample_configs(space, TRIALS, seed=2)):
        trial_id = f"ui_{k:05d}"
        result: dict[str, Any] = {}
        for epoch in (1, 2, 3):
            acc = 0.5 + 0.1 * epoch + 0.02 * k
            result = {"epoch": epoch, "train_loss": 1.5 / epoch, "train_accuracy": acc + 0.03,
                      "val_accuracy": acc, "audit_accuracy": acc - 0.01 * k, "reward": acc,
                      "train_val_gap": 0.03, "node_id": "local", "trial_id": trial_id}
            tracker.trial_result(trial_id, config, result)
        tracker.trial_complete(trial_id, config, result)
        outcomes.append(_Outcome(trial_id, config, result))
    tracker.finish(write_outputs(space, "tpe", leaderboard_rows(space, outcomes), output,
                                 TRIALS))
    assert tracker.errors == []
    runs = {r.info.run_name: r.info.run_id for r in tracker.nested_runs()}
    return Store(tracker.uri, tracker.experiment_id, output.name, runs)


@dataclass
class _Outcome:
    trial_id: str
    config: dict[str, Any]
    result: dict[str, Any]
    status: str = "ok"
    error: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def ui(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow ui` on the store, on a free loopback port; stopped by its process group."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path_factory.mktemp("ui-server")  # its cwd: proxied artifacts land here
    log = home / "mlflow-ui.log"
    mlflow = [sys.executable, "-m", "mlflow"]
    with log.open("w") as sink:
        server = subprocess.Popen(
            [*mlflow, "ui", "--backend-store-uri", store.uri, "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not come up on {url}: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(server)


def _stop_group(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it started (uvicorn, job runner, huey consumers)."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)  # any member of the group left?
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, offline apart from the loopback server, with a throwaway profile."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--hide-scrollbars", "--virtual-time-budget=15000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_S,
                          check=True)


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def compare_url(ui: str, store: Store) -> str:
    runs = urllib.parse.quote(json.dumps(sorted(store.trial_runs.values())))
    experiments = urllib.parse.quote(json.dumps([store.experiment_id]))
    return f"{ui}/#/compare-runs?runs={runs}&experiments={experiments}"


def test_experiment_page_lists_the_search(ui: str, store: Store, tmp_path: Path) -> None:
    dom = chromium(tmp_path / "profile", "--dump-dom",
                   f"{ui}/#/experiments/{store.experiment_id}/runs").stdout
    text = visible_text(dom)
    assert "augsearch-digits" in text
    assert store.parent_name in text  # the parent run; its trials nest under it
    assert f"{TRIALS + 1} matching runs" in text


def test_compared_trial_runs_are_listed_and_captured(ui: str, store: Store,
                                                     tmp_path: Path) -> None:
    import cv2

    url = compare_url(ui, store)
    text = visible_text(chromium(tmp_path / "profile", "--dump-dom", url).stdout)
    assert f"Comparing {TRIALS} Runs" in text
    for name in store.trial_runs:
        assert name in text
    assert "sp0.op0.name" in text and "val_accuracy" in text  # params and metrics side by side
    shot = tmp_path / "mlflow-ui.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1600,1000", url)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1600)
    assert image.std() > 20  # a rendered page, not a blank one
    if os.environ.get("AUGSEARCH_DOCS_SCREENSHOTS") == "1":
        shutil.copy(shot, DOCS / "mlflow-ui.png")


def test_tracker_logs_through_a_tracking_server(ui: str, tmp_path: Path) -> None:
    """`--tracking-uri http://...`: runs, metrics and proxied artifacts go through the server."""
    from mlflow import MlflowClient

    from children.datasets import load_dataset, make_splits
    from search.prepare.options import SearchOptions
    from search.tracking import Tracker
    from search.trials.compile import sample_configs

    space = subpolicy_digits(**{"child.epochs": 1, "reward.last_epochs": 1})
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    tracker = Tracker.connect(ui, "via-server", space, tmp_path / "out")
    tracker.start(space, "random", SearchOptions(seed=0), splits, resume=False)
    config = sample_configs(space, 1, seed=0)[0]
    result = {"epoch": 1, "reward": 0.5, "val_accuracy": 0.5, "audit_accuracy": 0.45,
              "train_accuracy": 0.6, "train_loss": 1.0, "train_val_gap": 0.1}
    tracker.trial_result("srv_00000", config, result)
    tracker.trial_complete("srv_00000", config, result)
    tracker.flush()
    assert tracker.errors == []
    assert not (tmp_path / "out" / "mlflow.db").exists()  # no local store with a server
    client = MlflowClient(ui)
    run = client.get_run(tracker.run_id("srv_00000"))
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert run.data.metrics["reward"] == 0.5
    local = client.download_artifacts(run.info.run_id, "policy.yaml", str(tmp_path))
    assert "augsearch-policy" in Path(local).read_text()
