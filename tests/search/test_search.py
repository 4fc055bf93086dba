"""End-to-end searches on a real local Ray instance with real children on real data."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from search.api import search
from search.errors import SearchError
from spaces.schema import load_space
from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.slow


def data_args() -> dict:
    """Real tiny CIFAR-10 where ../shared/data exists (CI), else the bundled digits."""
    tiny = SHARED_DATA / "cifar10_tiny.npz"
    if tiny.exists():
        return {"space": "cifar10", "data": str(tiny)}
    return {"space": "digits"}


def run(tmp_path: Path, searcher: str, name: str = "out", **options) -> object:
    args = data_args()
    options = {"smoke_test": True, "seed": 0, **options}
    return search(args.pop("space"), searcher, output=tmp_path / name, **args, **options)


def read_leaderboard(out: Path) -> list[dict]:
    with (out / "leaderboard.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("searcher", ["tpe", "random"])
def test_searcher_end_to_end_writes_outputs(ray_session, tmp_path: Path, searcher: str) -> None:
    import albumentations as A
    import numpy as np

    result = run(tmp_path, searcher)
    out = tmp_path / "out"
    rows = read_leaderboard(out)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    rewards = [float(r["reward"]) for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    assert all(0.0 <= x <= 1.0 for x in rewards)
    # Confirmed: what best_policy.yaml holds follows the verdict it records. The base (crop/flip
    # alone, the unproven candidate beside it) unless the verdict says a candidate beats it.
    best = yaml.safe_load((out / "best_policy.yaml").read_text())
    prov = best["provenance"]
    assert prov["verdict"] in ("beats_base", "kept_base", "within_noise")
    assert prov["decided_on"] == "audit" and prov["correction_k"] == 1
    if prov["verdict"] == "beats_base":
        assert prov["exported"] == "candidate" and prov["trial"] == prov["candidate"]
        assert prov["margin_audit_ci95"][0] > 0 and not (out / "candidate_policy.yaml").exists()
    else:
        assert prov["exported"] == "base" and not best["sub_policies"]
        beside = yaml.safe_load((out / "candidate_policy.yaml").read_text())
        assert beside["provenance"]["trial"] == prov["candidate"] != prov["trial"]
    row = next(r for r in rows if r["trial_id"] == result.best_trial)
    assert result.best_trial == prov["trial"]
    assert result.best_reward == pytest.approx(float(row["reward"]))
    # The exported pipeline keeps the space's image shape, whichever data the test used.
    dataset = load_space(data_args()["space"]).dataset
    shape = (dataset.image_size, dataset.image_size, dataset.channels)
    pipe = A.load(str(out / "best_policy.json"), data_format="json")
    assert pipe(image=np.zeros(shape, np.uint8))["image"].shape == shape
    provenance = (out / "best_policy.yaml").read_text()
    assert f"searcher: {searcher}" in provenance and "reward:" in provenance
    assert (out / "space.yaml").exists()


def test_pbt_writes_a_replayable_schedule(ray_session, tmp_path: Path) -> None:
    from search.trials.schedule import schedule_policies
    from spaces.schema import parse_space

    result = run(tmp_path, "pbt", epochs=4, confirm=0)  # the best trial's schedule is exported
    out = tmp_path / "out"
    schedule = json.loads((out / "schedule.json").read_text())
    assert schedule["format"] == "augsearch-schedule"
    spans = [e["epochs"] for e in schedule["entries"]]
    assert spans[0][0] == 0 and spans[-1][1] == 4
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    space = parse_space((out / "space.yaml").read_text(), "space.yaml")
    replay = schedule_policies(space, [(e["epochs"][0], e["config"]) for e in schedule["entries"]])
    assert replay(3) is not None and result.schedule == {**schedule}


def test_asha_stops_weak_trials_early(ray_session, tmp_path: Path) -> None:
    run(tmp_path, "tpe", early_stop="asha", trials=8, epochs=4)
    epochs = [int(r["epochs"]) for r in read_leaderboard(tmp_path / "out")]
    assert len(epochs) == 8 and max(epochs) == 4
    assert min(epochs) < 4, epochs


def test_trial_that_kills_its_worker_is_retried(ray_session, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    result = run(tmp_path, "random", trials=2, crash_once=str(marker))
    assert marker.exists(), "the fault was never injected"
    rows = read_leaderboard(tmp_path / "out")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    assert all(int(r["epochs"]) == 2 for r in rows)
    assert math.isfinite(result.best_reward)


def test_gpu_request_without_gpus_is_an_immediate_error(ray_session, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SearchError, match="asks for GPUs but this Ray cluster has none"):
        run(tmp_path, "tpe", gpus_per_trial=0.5)
    assert time.monotonic() - started < 60


def test_pbt_refuses_asha(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cannot be combined with --searcher pbt"):
        run(tmp_path, "pbt", early_stop="asha")


def test_a_search_prints_no_traceback(tmp_path: Path) -> None:
    """The command line's console output, search and confirmation, holds no traceback (Tune's
    experiment-state sync printed one: tests/search/test_tune_snapshots.py has its cause)."""
    args = data_args()
    cmd = [sys.executable, "-m", "search.run", "--space", args["space"], "--smoke-test",
           "--output", str(tmp_path / "out"), *(["--data", args["data"]] if "data" in args
                                                else [])]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert "confirm" in console and "Traceback" not in console, console


def _trial_reports(out: Path, experiment: str = "tune") -> dict[str, int]:
    """Trial directory name -> number of results it reported."""
    counts = {}
    for result in (out / "ray" / experiment).glob("*/result.json"):
        counts[result.parent.name] = len(result.read_text().splitlines())
    return counts


def _interrupt(cmd: list[str], env: dict, after: int, stage: str = "") -> str:
    """Run the CLI and send Ctrl-C once `after` trials of `stage` have finished."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    finished = 0
    try:
        for line in proc.stdout:
            if line.startswith(f"[augsearch] {stage}") and "trials (" in line and (
                    stage or " confirm " not in line):
                finished += 1
                if finished == after:
                    proc.send_signal(signal.SIGINT)
                    break
        rest = proc.communicate(timeout=240)[0]
    finally:
        proc.kill()
    assert finished == after, rest
    assert proc.returncode == 130, rest
    assert "--resume" in rest
    return rest


def test_resume_finishes_without_repeating_finished_trials(tmp_path: Path) -> None:
    """Ctrl-C after two trials, --resume, Ctrl-C again during the confirmation, --resume: Tune
    re-runs no finished trial of either stage, and MLflow keeps one parent run with one nested
    run per search trial and per confirmation run."""
    out = tmp_path / "out"
    args = data_args()
    cmd = [sys.executable, "-m", "search.run", "--space", args["space"], "--searcher", "tpe",
           "--smoke-test", "--trials", "6", "--epochs", "3", "--concurrency", "1",
           "--confirm", "2", "--confirm-seeds", "1", "--output", str(out)]
    if "data" in args:
        cmd += ["--data", args["data"]]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    _interrupt(cmd, env, after=2)
    before = _trial_reports(out)
    done_before = {name for name, n in before.items() if n == 3}
    assert len(done_before) >= 2
    console = _interrupt(cmd + ["--resume"], env, after=1, stage="confirm ")
    confirmed_before = {name for name, n in _trial_reports(out, "confirm").items() if n == 3}
    assert confirmed_before
    # asked for and unfinished: the base is exported, the summary says why, Tune is quiet
    interrupted = yaml.safe_load((out / "best_policy.yaml").read_text())
    assert interrupted["provenance"]["exported"] == "base" and not interrupted["sub_policies"]
    assert interrupted["provenance"]["verdict"] == "unconfirmed_interrupted"
    assert "unconfirmed: the confirmation was interrupted after" in console, console
    assert "--confirm 0" not in console and "Could not fetch metrics" not in console, console
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    after = _trial_reports(out)
    assert len(after) == 6, after
    for name in done_before:
        assert after[name] == 3, f"finished trial {name} ran again"
    for name, reports in _trial_reports(out, "confirm").items():
        assert reports == 3, f"confirmation run {name} ran again"
    rows = read_leaderboard(out)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    with (out / "confirm.csv").open() as f:
        confirmed = list(csv.DictReader(f))
    runs = [r for r in confirmed if r["source"] == "confirm"]
    assert len({(r["candidate"], r["replicate"]) for r in confirmed}) == len(confirmed)
    assert len(runs) == 3  # base and 2 policies, one more seed each
    check_one_mlflow_record(out, args["space"], trials=6, epochs=3, confirm_runs=3, resumed=2)


def check_one_mlflow_record(out: Path, space: str, trials: int, epochs: int,
                            confirm_runs: int = 0, resumed: int = 1) -> None:
    from mlflow import MlflowClient

    from search.tracking import PARENT_FILE

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(f"augsearch-{space}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent_id = json.loads((out / PARENT_FILE).read_text())["run_id"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.run_id for p in parents] == [parent_id]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["resumed"] == str(resumed)
    searched = [r for r in nested if r.data.tags["stage"] == "search"]
    confirming = [r for r in nested if r.data.tags["stage"] == "confirm"]
    assert len(searched) + len(confirming) == len(nested)
    ids = [r.data.tags["trial_id"] for r in searched]
    assert len(ids) == len(set(ids)) == trials
    assert len(confirming) == confirm_runs
    assert len({(r.data.tags["candidate"], r.data.tags["replicate"]) for r in confirming}) == \
        confirm_runs
    for run in nested:
        assert run.info.status == "FINISHED", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, epochs + 1)), (run.data.tags["trial_id"], steps)
    best = [m.step for m in client.get_metric_history(parent_id, "best_reward_so_far")]
    assert sorted(best) == list(range(1, trials + 1))


def always_fails(config: dict, ctx: object, splits: object) -> None:
    raise RuntimeError("boom in the child")


def test_a_failing_trial_is_one_console_line_with_the_path_of_its_log(ray_session, tmp_path: Path,
                                                                       capfd) -> None:
    import io

    from search.events import Progress
    from search.strategies import get_strategy
    from search.trials.context import TrialContext
    from search.tune import Resources, TunePlan, run_search

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = TunePlan(ctx=TrialContext(load_space("digits"), 0), splits=None,
                    strategy=get_strategy("random"), resources=Resources(1, 0), trials=1,
                    concurrency=1, storage=tmp_path, seed=0, max_failures=1,
                    trainable=always_fails)
    stream = io.StringIO()
    capfd.readouterr()
    [outcome] = run_search(plan, [Progress(1, stream=stream)])
    assert outcome.status == "error" and "boom in the child" in outcome.error
    retry, final = stream.getvalue().splitlines()  # Tune retried it once, then gave up
    assert "failed and is retried from its last checkpoint: RuntimeError: boom in the child; " \
           "full log: " in retry
    assert "1/1 trials (1 failed)" in final and "failed RuntimeError: boom in the child; " \
           "full log: " in final
    log = Path(final.split("full log: ")[1].split(" | ")[0])
    assert log.is_relative_to(tmp_path)  # in the experiment storage, not Ray's session dir
    assert log.is_file() and 'raise RuntimeError("boom in the child")' in log.read_text()
    console = capfd.readouterr()
    assert "boom" not in console.out + console.err  # Tune prints neither traceback nor block
