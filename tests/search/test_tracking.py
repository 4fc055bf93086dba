"""The MLflow tracker against a real SQLite store, queried back with MlflowClient.

The tracker is driven with the events Tune's driver callback delivers (result dicts with the
keys `search.trials.trial.run_trial` reports plus Tune's own), with real digits images for the
previews, real albumentations for the exported policies and, in one test, real child training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from children.datasets import load_dataset, make_splits
from search.errors import SearchError
from search.prepare.options import SearchOptions
from search.stages.outputs import leaderboard_rows, write_outputs
from search.tracking import PARENT_FILE, Tracker
from search.trials.compile import decode, sample_configs
from search.tune import TrialOutcome
from spaces.policy import flat_params, load_policy
from spaces.schema import Space
from tests.conftest import subpolicy_digits

EPOCHS = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



@pytest.fixture(scope="module")
def space() -> Space:
    return subpolicy_digits(**{"child.epochs": EPOCHS, "reward.last_epochs": 1})


@pytest.fixture(scope="module")
def splits(space: Space) -> Any:
    return make_splits(load_dataset(space.dataset), space.dataset, seed=0)


def epoch_result(trial_id: str, epoch: int, reward: float, audit: float) -> dict[str, Any]:
    """A Tune result for `epoch` of a trial whose final reward and audit accuracy are given."""
    lag = 0.05 * (EPOCHS - epoch)
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": reward + 0.05 - lag,
            "val_accuracy": reward - lag, "audit_accuracy": audit - lag, "reward": reward - lag,
            "train_val_gap": 0.05, "seconds": 0.5, "images_per_s": 900.0, "node_id": "node-a",
            "trial_id": trial_id, "training_iteration": epoch, "time_total_s": 0.5 * epoch,
            "done": False}


def run_trial_events(tracker: Tracker, trial_id: str, config: dict[str, Any], reward: float,
                     audit: float, epochs: range = range(1, EPOCHS + 1)) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for epoch in epochs:
        result = epoch_result(trial_id, epoch, reward, audit)
        tracker.trial_result(trial_id, config, result)
    return result


# Final (reward, audit accuracy) of the six good trials, in completion order.
GOOD = [(0.60, 0.62), (0.70, 0.69), (0.65, 0.66), (0.80, 0.70), (0.75, 0.74), (0.78, 0.73)]


@dataclass
class Recorded:
    tracker: Tracker
    client: MlflowClient
    output: Path
    configs: dict[str, dict[str, Any]]
    order: list[str]
    result: Any
    seconds: float


@pytest.fixture(scope="module")
def recorded(space: Space, splits: Any, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """A search of 8 trials (6 good, 1 diverged, 1 crashed), two at a time, interleaved."""
    output = tmp_path_factory.mktemp("search") / "digits-tpe-test"
    started = time.monotonic()
    tracker = Tracker.connect(None, None, space, output)
    tracker.start(space, "tpe", SearchOptions(seed=7, trials=8), splits, resume=False)
    cfgs = sample_configs(space, 8, seed=3)
    ids = [f"t{i}_0000{i}" for i in range(8)]
    configs = {t: {**c, "_seed": 11} for t, c in zip(ids, cfgs, strict=True)}
    outcomes, order = [], []

    def complete(tid: str, result: dict[str, Any], status: str = "ok") -> None:
        tracker.trial_complete(tid, configs[tid], result)
        outcomes.append(TrialOutcome(tid, configs[tid], result, status, result.get("error", "")))
        order.append(tid)

    good = iter(zip(ids[:6], GOOD, strict=True))
    for (a, (ra, aa)), (b, (rb, ab)) in zip(good, good, strict=True):  # two trials at a time
        for epoch in range(1, EPOCHS + 1):
            tracker.trial_result(a, configs[a], epoch_result(a, epoch, ra, aa))
            tracker.trial_result(b, configs[b], epoch_result(b, epoch, rb, ab))
        complete(a, epoch_result(a, EPOCHS, ra, aa))
        if a == ids[0]:  # a diverging child: one epoch, then a NaN reward and an error
            tracker.trial_result(ids[6], configs[ids[6]], epoch_result(ids[6], 1, 0.2, 0.2))
            bad = {"reward": math.nan, "status": "diverged", "error": "loss is nan at epoch 2",
                   "node_id": "node-a", "trial_id": ids[6], "training_iteration": 2}
            tracker.trial_result(ids[6], configs[ids[6]], bad)
            complete(ids[6], bad, "diverged")
        complete(b, epoch_result(b, EPOCHS, rb, ab))
        if b == ids[3]:  # a worker that crashed for good after its first epoch
            tracker.trial_result(ids[7], configs[ids[7]], epoch_result(ids[7], 1, 0.5, 0.5))
            tracker.trial_error(ids[7], configs[ids[7]], "RuntimeError: worker died")
            outcomes.append(TrialOutcome(ids[7], configs[ids[7]], epoch_result(ids[7], 1, 0.5, 0.5),
                                    "error", "RuntimeError: worker died"))
            order.append(ids[7])
    result = write_outputs(space, "tpe", leaderboard_rows(space, outcomes), output, 8)
    tracker.finish(result)
    assert tracker.errors == []
    return Recorded(tracker, MlflowClient(tracker.uri), output, configs, order, result,
                    time.monotonic() - started)


def all_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    return list(client.search_runs([experiment_id], max_results=1000))


def split_runs(rec: Recorded) -> tuple[list[Any], dict[str, Any]]:
    runs = all_runs(rec.client, rec.tracker.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = {r.data.tags["trial_id"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, trials


def artifact_names(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


# ---------------------------------------------------------------- the store's layout


def test_default_store_is_sqlite_in_the_output_directory(recorded: Recorded) -> None:
    out = recorded.output
    assert recorded.tracker.uri == f"sqlite:///{out.resolve()}/mlflow.db"
    assert (out / "mlflow.db").is_file()
    experiment = recorded.client.get_experiment(recorded.tracker.experiment_id)
    assert experiment.name == "augsearch-digits"
    assert experiment.artifact_location == (out / "mlartifacts").as_uri()
    assert any((out / "mlartifacts").rglob("preview.png"))
    assert not Path("mlruns").exists() or not any(Path("mlruns").rglob("preview.png"))
    assert json.loads((out / PARENT_FILE).read_text())["run_id"] == recorded.tracker.parent_id


def test_one_parent_and_one_nested_run_per_trial(recorded: Recorded) -> None:
    parents, trials = split_runs(recorded)
    assert [p.info.run_id for p in parents] == [recorded.tracker.parent_id]
    assert sorted(trials) == sorted(recorded.configs)
    for tid, run in trials.items():
        assert run.data.tags["mlflow.parentRunId"] == recorded.tracker.parent_id
        assert run.info.run_name == f"trial-{tid}"


def test_parent_records_what_the_search_was(recorded: Recorded, space: Space) -> None:
    parent = recorded.client.get_run(recorded.tracker.parent_id)
    params, tags = parent.data.params, parent.data.tags
    assert params["space"] == "digits" and params["searcher"] == "tpe"
    assert params["seed"] == "7" and params["epochs"] == str(EPOCHS)
    for name in ("augsearch", "ray", "optuna", "torch", "albumentations", "mlflow"):
        assert tags[f"version.{name}"] not in ("", "not installed")
    assert tags["host"] and tags["cpu"] and tags["gpus"]
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert len(tags["mlflow.source.git.commit"]) == 40
    assert parent.info.status == "FINISHED" and tags["status"] == "finished"
    text = Path(recorded.client.download_artifacts(parent.info.run_id, "space.yaml")).read_text()
    assert f"epochs: {EPOCHS}" in text and "name: digits" in text
    assert {"space.yaml", "leaderboard.csv", "best_policy.json", "best_policy.yaml",
            "diagnostics"} <= artifact_names(recorded.client, parent.info.run_id)


# ---------------------------------------------------------------- nested trial runs


def test_trial_params_are_the_flat_policy(recorded: Recorded, space: Space) -> None:
    _, trials = split_runs(recorded)
    for tid, run in trials.items():
        expected = flat_params(decode(space, recorded.configs[tid]))
        assert run.data.params == {k: str(v) for k, v in expected.items()}
        assert "sp0.op0.name" in run.data.params and "sp2.op1.probability" in run.data.params
        assert not any(k.startswith("_") for k in run.data.params)  # private keys stripped


def test_per_epoch_metrics_and_final_values(recorded: Recorded) -> None:
    _, trials = split_runs(recorded)
    for tid, (reward, audit) in zip(sorted(trials)[:6], GOOD, strict=True):
        run = trials[tid]
        for key in ("train_loss", "train_accuracy", "val_accuracy", "audit_accuracy", "reward"):
            history = recorded.client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [1, 2, 3], (tid, key)
        assert run.data.metrics["reward"] == pytest.approx(reward)
        assert run.data.metrics["audit_accuracy"] == pytest.approx(audit)
        assert run.data.metrics["train_val_gap"] == pytest.approx(0.05)
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        assert run.data.tags["node_id"] == "node-a"
        assert run.info.end_time - run.info.start_time >= 500  # dated back to epoch 1's start


def test_failed_trials_end_failed_with_their_error(recorded: Recorded) -> None:
    _, trials = split_runs(recorded)
    diverged, crashed = trials["t6_00006"], trials["t7_00007"]
    assert diverged.info.status == "FAILED" and diverged.data.tags["status"] == "diverged"
    assert "loss is nan" in diverged.data.tags["error"]
    assert len(recorded.client.get_metric_history(diverged.info.run_id, "val_accuracy")) == 1
    assert crashed.info.status == "FAILED" and crashed.data.tags["status"] == "error"
    assert crashed.data.tags["error"] == "RuntimeError: worker died"


def test_trial_artifacts_policy_loads_with_albumentations(recorded: Recorded, space: Space,
                                                          splits: Any, tmp_path: Path) -> None:
    import albumentations as A

    _, trials = split_runs(recorded)
    run = trials["t3_00003"]
    assert {"policy.json", "policy.yaml", "preview.png"} <= artifact_names(
        recorded.client, run.info.run_id)
    local = Path(recorded.client.download_artifacts(run.info.run_id, "policy.json", tmp_path))
    pipeline = A.load(str(local), data_format="json")
    image = np.array(splits.train.x[0])
    out = pipeline(image=image)["image"]
    assert out.dtype == np.uint8 and out.size == image.size
    policy_file = recorded.client.download_artifacts(run.info.run_id, "policy.yaml", tmp_path)
    policy = load_policy(policy_file)
    assert policy == decode(space, recorded.configs["t3_00003"])
    assert policy.provenance["reward"] == pytest.approx(0.80)
    png = Path(recorded.client.download_artifacts(run.info.run_id, "preview.png", tmp_path))
    assert png.read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- diagnostics on the parent


def test_overfit_diagnostics_metrics(recorded: Recorded) -> None:
    client, pid = recorded.client, recorded.tracker.parent_id
    metrics = client.get_run(pid).data.metrics
    assert metrics["best_reward"] == pytest.approx(0.80)
    assert metrics["best_audit_accuracy"] == pytest.approx(0.70)
    assert metrics["selection_gap"] == pytest.approx(0.10)
    assert metrics["audit_regret"] == pytest.approx(0.04)
    # Spearman by hand: reward ranks 1 3 2 6 4 5, audit ranks 1 3 2 4 6 5, sum d^2 = 8
    assert metrics["reward_audit_spearman"] == pytest.approx(1 - 6 * 8 / (6 * 35))
    assert metrics["trials_ok"] == 6 and metrics["trials_failed"] == 2
    # completion order: t0 t6(diverged) t1 t2 t3 t7(crashed) t4 t5
    assert recorded.order == ["t0_00000", "t6_00006", "t1_00001", "t2_00002", "t3_00003",
                              "t7_00007", "t4_00004", "t5_00005"]
    best = {m.step: m.value for m in client.get_metric_history(pid, "best_reward_so_far")}
    audit = {m.step: m.value
             for m in client.get_metric_history(pid, "best_audit_accuracy_so_far")}
    assert best == pytest.approx({1: .60, 2: .60, 3: .70, 4: .70, 5: .80, 6: .80, 7: .80,
                                  8: .80})
    assert audit == pytest.approx({1: .62, 2: .62, 3: .69, 4: .69, 5: .70, 6: .70, 7: .70,
                                   8: .70})
    rewards = {m.step for m in client.get_metric_history(pid, "trial_reward")}
    assert rewards == {1, 3, 4, 5, 7, 8}


def test_diagnostic_plots_and_op_table(recorded: Recorded, space: Space, tmp_path: Path) -> None:
    client, pid = recorded.client, recorded.tracker.parent_id
    names = artifact_names(client, pid, "diagnostics")
    assert {"diagnostics/overfit.png", "diagnostics/reward_vs_trial.png",
            "diagnostics/op_importance.png", "diagnostics/op_importance.json",
            "diagnostics/summary.json"} <= names
    for name in ("overfit", "reward_vs_trial", "op_importance"):
        png = Path(client.download_artifacts(pid, f"diagnostics/{name}.png", tmp_path))
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    table = json.loads(Path(client.download_artifacts(
        pid, "diagnostics/op_importance.json", tmp_path)).read_text())
    assert table["top_policies"] == 2 and table["rest_policies"] == 4  # ceil(6 / 4) = 2
    top = [n for t in ("t3_00003", "t5_00005")  # rewards 0.80 and 0.78
           for s in decode(space, recorded.configs[t]).sub_policies for n in (o.name
                                                                              for o in s.ops)]
    by_op = {row["op"]: row for row in table["ops"]}
    for op in {o.name for o in space.policy.ops}:
        assert by_op[op]["top_count"] == top.count(op)
        assert by_op[op]["top_share"] == pytest.approx(top.count(op) / len(top), abs=1e-4)
    assert sum(r["rest_share"] for r in table["ops"]) == pytest.approx(1.0, abs=1e-3)


def test_trial_events_queue_the_store_calls_and_never_wait_for_them(
        recorded: Recorded, space: Space, splits: Any, tmp_path: Path) -> None:
    """While the writer is busy, trial events still return; the calls land once it is free."""
    import threading

    tracker = Tracker.connect(recorded.tracker.uri, "queued", space, tmp_path)
    tracker.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    free = threading.Event()
    tracker.writer.submit("a slow store", free.wait, 30)  # the writer is stuck until `free`
    config = sample_configs(space, 1, seed=4)[0]
    final = run_trial_events(tracker, "tq_00000", config, 0.7, 0.7)
    tracker.trial_complete("tq_00000", config, final)
    client = MlflowClient(tracker.uri)
    assert client.search_runs([tracker.experiment_id], "tags.trial_id = 'tq_00000'") == []
    free.set()
    run = client.get_run(tracker.run_id("tq_00000"))  # waits for the writer
    assert run.info.status == "FINISHED" and run.data.metrics["reward"] == pytest.approx(0.7)
    assert tracker.errors == []


def test_a_second_stage_of_nested_runs_and_tags_passed_through(
        recorded: Recorded, space: Space, splits: Any, tmp_path: Path) -> None:
    """Another stage (say, a confirmation of the best policies) shares the parent and writer;
    its runs carry its tags, and a result's own `tags` reach its run."""
    tracker = Tracker.connect(recorded.tracker.uri, "stages", space, tmp_path)
    tracker.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    config = sample_configs(space, 1, seed=6)[0]
    final = run_trial_events(tracker, "ts_00000", config, 0.6, 0.6)
    tracker.trial_complete("ts_00000", config, final)
    confirm = tracker.stage({"stage": "confirm"}, name="confirm-{}")
    result = {**epoch_result("ts_00000", EPOCHS, 0.65, 0.6), "tags": {"seed": "3"}}
    confirm.trial_result("ts_00000", config, result)
    confirm.trial_complete("ts_00000", config, result)
    tracker.flush()
    client = MlflowClient(tracker.uri)
    runs = {r.info.run_name: r for r in tracker.nested_runs()}
    assert set(runs) == {"trial-ts_00000", "confirm-ts_00000"}
    assert runs["trial-ts_00000"].data.tags["stage"] == "search"
    confirmed = client.get_run(runs["confirm-ts_00000"].info.run_id)
    assert confirmed.data.tags["stage"] == "confirm" and confirmed.data.tags["seed"] == "3"
    assert confirmed.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert confirmed.data.metrics["reward"] == pytest.approx(0.65)
    assert tracker.errors == []


# ---------------------------------------------------------------- resume, PBT, errors


def _finish(tracker: Tracker, space: Space, outcomes: list[TrialOutcome], output: Path) -> None:
    tracker.finish(write_outputs(space, "tpe", leaderboard_rows(space, outcomes), output, 3))


def test_resume_adds_to_the_same_parent_without_duplicates(space: Space, splits: Any,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "resumable"
    a, b, c = ({**cfg} for cfg in sample_configs(space, 3, seed=5))
    first = Tracker.connect(None, None, space, out)
    first.start(space, "tpe", SearchOptions(seed=0), splits, resume=False)
    done = run_trial_events(first, "ta_00000", a, 0.7, 0.68)
    first.trial_complete("ta_00000", a, done)
    part = run_trial_events(first, "tb_00001", b, 0.6, 0.61, range(1, 2))  # interrupted
    _finish(first, space, [TrialOutcome("ta_00000", a, done, "ok"),
                           TrialOutcome("tb_00001", b, part, "interrupted")], out)
    client = MlflowClient(first.uri)
    assert client.get_run(first.parent_id).info.status == "KILLED"

    again = Tracker.connect(None, None, space, out)
    again.start(space, "tpe", SearchOptions(seed=0, resume=True), splits, resume=True)
    assert again.parent_id == first.parent_id
    assert client.get_run(first.parent_id).info.status == "RUNNING"
    replay = run_trial_events(again, "ta_00000", a, 0.7, 0.68)  # ignored: already finished
    again.trial_complete("ta_00000", a, replay)
    b_end = run_trial_events(again, "tb_00001", b, 0.6, 0.61)  # epoch 1 again, then 2 and 3
    again.trial_complete("tb_00001", b, b_end)
    c_end = run_trial_events(again, "tc_00002", c, 0.8, 0.7)
    again.trial_complete("tc_00002", c, c_end)
    _finish(again, space, [TrialOutcome("ta_00000", a, done, "ok"),
                           TrialOutcome("tb_00001", b, b_end, "ok"),
                           TrialOutcome("tc_00002", c, c_end, "ok")], out)
    assert again.errors == []

    runs = all_runs(client, again.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["resumed"] == "1"
    assert parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["trial_id"] for r in trials) == ["ta_00000", "tb_00001",
                                                               "tc_00002"]
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == [1, 2, 3], run.data.tags["trial_id"]
        assert run.info.status == "FINISHED"
    best = [m.step for m in client.get_metric_history(parents[0].info.run_id,
                                                      "best_reward_so_far")]
    assert sorted(best) == [1, 2, 3]


def test_pbt_policy_change_is_logged_as_a_file(recorded: Recorded, space: Space, splits: Any,
                                               tmp_path: Path) -> None:
    # same store, another experiment: no second database set-up
    tracker = Tracker.connect(recorded.tracker.uri, "pbt-check", space, tmp_path)
    tracker.start(space, "pbt", SearchOptions(seed=0), splits, resume=False)
    before, after = sample_configs(space, 2, seed=9)
    for epoch in (1, 2, 3):
        tracker.trial_result("tp_00000", before, epoch_result("tp_00000", epoch, 0.5, 0.5))
    # exploit: the trial continues from a donor's checkpoint taken after epoch 2, new policy
    for epoch in (3, 4):
        final = epoch_result("tp_00000", epoch, 0.7, 0.7)
        tracker.trial_result("tp_00000", after, final)
    tracker.trial_complete("tp_00000", after, final)
    client = MlflowClient(tracker.uri)
    run = client.get_run(tracker.run_id("tp_00000"))
    assert tracker.errors == []
    assert run.data.params["sp0.op0.name"] == decode(space, before).sub_policies[0].ops[0].name
    assert run.data.tags["policy_changed_at_epoch"] == "3"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 3, 4]  # the donor's epoch 3 is not dropped
    assert artifact_names(client, run.info.run_id, "schedule") == {
        "schedule/policy_epoch3.yaml"}
    logged = load_policy(client.download_artifacts(run.info.run_id, "policy.yaml", tmp_path))
    assert logged == decode(space, after)


def test_unreachable_server_is_a_clear_error_before_training(space: Space,
                                                             tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SearchError) as info:
        Tracker.connect("http://127.0.0.1:9", None, space, tmp_path)
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert "\n" not in message
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in message
    assert "mlflow server" in message and "--tracking-uri" in message


def test_deleted_experiment_is_a_clear_error(recorded: Recorded, space: Space,
                                             tmp_path: Path) -> None:
    client = MlflowClient(recorded.tracker.uri)
    experiment_id = client.create_experiment("to-delete")
    client.delete_experiment(experiment_id)
    with pytest.raises(SearchError, match="was deleted; restore it"):
        Tracker.connect(recorded.tracker.uri, "to-delete", space, tmp_path)


# ---------------------------------------------------------------- real events


@dataclass
class TuneLikeEvents:
    """Forwards `run_trial`'s reports to the tracker as Tune's driver callback would."""

    tracker: Tracker
    trial_id: str
    config: dict[str, Any]
    last: dict[str, Any] | None = None

    def report(self, metrics: dict[str, Any], _saved: Any) -> None:
        self.last = {**metrics, "trial_id": self.trial_id, "node_id": "local"}
        self.tracker.trial_result(self.trial_id, self.config, dict(self.last))


def test_real_child_training_events(recorded: Recorded, space: Space, splits: Any,
                                    tmp_path: Path) -> None:
    """Results reported by real child trainings (no Ray) go into the store as they come."""
    from search.trials.context import TrialContext
    from search.trials.trial import run_trial

    small = space.replace(**{"dataset.train_size": 100, "child.epochs": 2,
                             "reward.last_epochs": 1})
    tracker = Tracker.connect(recorded.tracker.uri, "real-children", small, tmp_path)
    tracker.start(small, "random", SearchOptions(seed=0), splits, resume=False)
    ctx = TrialContext(small, 0, threads=1)
    outcomes = []
    for index, config in enumerate(sample_configs(small, 2, seed=1)):
        events = TuneLikeEvents(tracker, f"real_{index:05d}", config)
        run_trial(config, ctx, splits, report=events.report)
        tracker.trial_complete(events.trial_id, config, events.last)
        outcomes.append(TrialOutcome(events.trial_id, config, events.last, "ok"))
    tracker.finish(write_outputs(small, "random", leaderboard_rows(small, outcomes), tmp_path,
                                 2))
    assert tracker.errors == []
    client = MlflowClient(tracker.uri)
    for tid in ("real_00000", "real_00001"):
        run = client.get_run(tracker.run_id(tid))
        assert run.info.status == "FINISHED"
        for key in ("train_loss", "train_accuracy", "val_accuracy"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 2
        # the audit set is scored only in the epochs the reward reads (the last one here)
        audits = client.get_metric_history(run.info.run_id, "audit_accuracy")
        assert [m.step for m in audits] == [2]
        assert 0.0 <= run.data.metrics["reward"] <= 1.0
    assert "selection_gap" in client.get_run(tracker.parent_id).data.metrics


# ---------------------------------------------------------------- a real search


@pytest.mark.slow
def test_real_search_on_ray_is_recorded(ray_session: Any, tmp_path: Path) -> None:
    """A real smoke search (digits, tpe) on a local Ray: the store holds the whole record."""
    import albumentations as A

    from search.api import search

    out = tmp_path / "out"
    result = search("digits", "tpe", smoke_test=True, seed=0, output=out)
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("augsearch-digits")
    runs = all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    trials = [r for r in nested if r.data.tags["stage"] == "search"]
    confirming = [r for r in nested if r.data.tags["stage"] == "confirm"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert sorted(r.data.tags["trial_id"] for r in trials) == sorted(
        row["trial_id"] for row in result.leaderboard)
    assert len(trials) == 4
    # the smoke test confirms the best policy and the base on two fresh seeds each
    assert sorted(r.data.tags["replicate"] for r in confirming) == ["1", "1", "2", "2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in confirming)
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2]  # smoke test: 2 epochs
        assert {"policy.json", "policy.yaml", "preview.png"} <= artifact_names(
            client, run.info.run_id)
        assert run.data.tags["stage"] == "search"
        if "reference" not in run.data.tags:  # digits' RandAugment: N, M and p
            assert {"draw.n", "draw.op5.name", "draw.op5.magnitude"} <= set(run.data.params)
    assert sorted(r.data.tags["reference"] for r in trials if "reference" in r.data.tags) == [
        "base", "trivialaugment"]
    best = next(r for r in trials if r.data.tags["trial_id"] == result.best_trial)
    local = client.download_artifacts(best.info.run_id, "policy.json", str(tmp_path))
    image = np.zeros((16, 16, 1), np.uint8)
    assert A.load(local, data_format="json")(image=image)["image"].size == image.size
    metrics = client.get_run(parent).data.metrics
    tags = client.get_run(parent).data.tags
    verdict = result.confirmation.verdict
    assert tags["verdict"] == verdict.decision.value and tags["candidate"] == verdict.best.key
    assert tags["exported"] == ("candidate" if verdict.beats_base else "base")
    assert tags["best_trial"] == result.best_trial == verdict.exported.key
    assert metrics["correction_k"] == 1
    assert ("candidate_policy.yaml" in artifact_names(client, parent)) == (
        not verdict.beats_base)
    # the search's best reward, whatever was exported
    assert metrics["best_reward"] == pytest.approx(max(r["reward"] for r in result.leaderboard))
    assert "selection_gap" in metrics and metrics["trials_ok"] == 4
    assert len(client.get_metric_history(parent, "best_reward_so_far")) == 4
    assert {"leaderboard.csv", "best_policy.json", "best_policy.yaml", "space.yaml",
            "diagnostics"} <= artifact_names(client, parent)


@pytest.mark.slow
def test_a_failure_writing_the_outputs_still_ends_the_record_and_writes_every_queued_call(
        ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real smoke search whose write_outputs fails (a full disk): the error reaches the caller
    unchanged, the parent run ends FAILED with it, every nested run is ended, and everything the
    trials' events queued (metrics, tags, policy files) is in the store. A slow store keeps the
    last trials' files and ends queued at the moment of the failure."""
    from search.api import search
    from search.stages import session
    from search.tracking.trials import TrialRuns

    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    upload = TrialRuns._log_policy_files

    def slow_upload(self: TrialRuns, *args: Any) -> None:
        time.sleep(1.0)
        upload(self, *args)

    seen: dict[str, dict[str, Any]] = {}
    on_result, on_complete = Tracker.trial_result, Tracker.trial_complete

    def spy_result(self: Tracker, trial_id: str, config: Any, result: dict[str, Any]) -> None:
        seen.setdefault(trial_id, {"epochs": set()})["epochs"].add(result.get("epoch"))
        on_result(self, trial_id, config, result)

    def spy_complete(self: Tracker, trial_id: str, config: Any, result: dict[str, Any]) -> None:
        seen.setdefault(trial_id, {"epochs": set()})["final"] = result
        on_complete(self, trial_id, config, result)

    monkeypatch.setattr(session, "write_outputs", disk_full)
    monkeypatch.setattr(TrialRuns, "_log_policy_files", slow_upload)
    monkeypatch.setattr(Tracker, "trial_result", spy_result)
    monkeypatch.setattr(Tracker, "trial_complete", spy_complete)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device"):
        search("digits", "random", smoke_test=True, confirm=0, seed=0, output=out)

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = all_runs(client, client.get_experiment_by_name("augsearch-digits").experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = {r.data.tags["trial_id"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["status"] == "failed"
    assert parents[0].data.tags["error"] == "OSError: [Errno 28] No space left on device"
    assert len(seen) == 4 and set(nested) == set(seen)
    for trial_id, events in seen.items():
        run = nested[trial_id]
        assert run.info.status == "FINISHED", trial_id
        assert run.data.tags["status"] == "ok"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert {m.step for m in history} == events["epochs"] == {1, 2}
        assert run.data.metrics["reward"] == pytest.approx(events["final"]["reward"])
        assert {"policy.json", "policy.yaml", "preview.png"} <= artifact_names(
            client, run.info.run_id)
