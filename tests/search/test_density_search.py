"""Density-matching searches on a real local Ray, with real fold models on real digits."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from search.api import search
from spaces.schema import Space
from tests.conftest import ROOT, python_path, subpolicy_digits
from tests.search.test_search import _interrupt, _trial_reports

pytestmark = pytest.mark.slow

FOLDS = 3


def dm_space(**density) -> Space:
    return subpolicy_digits(**{
        "reward.kind": "density_matching", "policy.batch_ops": {},
        "reward.density": {"folds": FOLDS, "copies": 2, "top": 2, **density}})


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def runs_by_stage(out: Path) -> dict[str, list]:
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("augsearch-digits")
    by: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        by.setdefault(run.data.tags.get("stage", "parent"), []).append(run)
    return by


def metric_steps(out: Path, run, key: str) -> list[int]:
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def checkpoints(out: Path, experiment: str) -> dict[str, int]:
    return {d.name: len(list(d.glob("checkpoint_*")))
            for d in (out / "ray" / experiment).glob("trial_*")}


def test_a_density_matching_search_writes_every_output(ray_session, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = search(dm_space(), "tpe", smoke_test=True, trials=6, epochs=3, seed=0, output=out,
                    confirm=1, confirm_seeds=2)
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert all(r["epochs"] == "1" for r in rows)  # one scoring pass, no epochs
    assert all(float(r["reward"]) < 0 for r in rows)  # -NLL of the true class
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("val_accuracy", "audit_accuracy"))
    assert {r["reference"] for r in rows} == {"", "base", "trivialaugment"}
    # the fold models: K trainings of the fold stage, each checkpointed, kept for --resume
    folds = _trial_reports(out, "folds")
    assert len(folds) == FOLDS and set(folds.values()) == {3}
    assert all(n >= 1 for n in checkpoints(out, "folds").values())
    with (out / "fold_models.pkl").open("rb") as f:
        models = pickle.load(f)
    assert len(models.folds) == FOLDS
    # the search's trials: one report each, and no checkpoint
    assert set(_trial_reports(out, "tune").values()) == {1}
    assert set(checkpoints(out, "tune").values()) == {0}
    # the exported policy and the merged one load with plain albumentations
    for name in ("best_policy.json", "merged_policy.json"):
        pipeline = A.load(str(out / name), data_format="json")
        image = np.random.default_rng(0).integers(0, 256, (16, 16, 1), dtype=np.uint8)
        assert pipeline(image=image)["image"].shape == (16, 16, 1)
    merged = yaml.safe_load((out / "merged_policy.yaml").read_text())["provenance"]
    searched = {r["trial_id"] for r in rows if not r["reference"]}
    assert set(merged["merged_from"]) <= searched and merged["top_per_fold"] == 2
    # the confirmation trained the base and the merged policy with real children, on fresh
    # replicates only (no search reward is a child's, and none is listed)
    confirmed = read_csv(out / "confirm.csv")
    assert {(r["candidate"], r["replicate"], r["source"], r["used_for"]) for r in confirmed} == {
        (c, rep, "confirm", "estimation") for c in ("base", "merged") for rep in ("1", "2")}
    provenance = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]
    assert provenance["reward_kind"] == "density_matching"
    verdict = result.confirmation.verdict
    assert verdict.best.key == "merged" and provenance["candidate"] == "merged"
    assert provenance["trial"] == verdict.exported.key == ("merged" if verdict.beats_base
                                                            else "base")
    assert provenance["confirmed_over_seeds"] == 2
    assert (out / "candidate_policy.yaml").exists() == (not verdict.beats_base)
    # MLflow: K fold runs (trained epochs), the trials (one scoring each), the confirmation
    stages = runs_by_stage(out)
    assert sorted(len(stages[k]) for k in ("fold", "search", "confirm")) == [FOLDS, 4, 6]
    assert sorted(r.data.tags["fold"] for r in stages["fold"]) == ["0", "1", "2"]
    for run in stages["fold"]:
        assert run.info.status == "FINISHED" and run.info.run_name.startswith("fold-")
        assert metric_steps(out, run, "train_loss") == [1, 2, 3]
    for run in stages["search"]:
        assert run.info.status == "FINISHED"
        assert metric_steps(out, run, "reward") == [1] and "train_loss" not in run.data.metrics
        assert len(run.data.tags["fold_rewards"].split()) == FOLDS
    [parent] = stages["parent"]
    assert parent.data.params["reward_kind"] == "density_matching"
    assert parent.data.params["density_folds"] == str(FOLDS)
    assert parent.data.params["density_final"] == "merged"  # resolved: sub-policies merge


def _refuse(*args, **kwargs):
    raise AssertionError("a density-matching trial trained a child")


def guarded(config, ctx, splits, folds) -> None:
    """The Tune trainable running density matching's trial, in a worker where any child
    training raises."""
    import children.train
    import children.trainer
    from search.rewards.density_matching import score_trial
    from search.tune import trainable

    saved = children.train.train_child, children.trainer.Trainer.train_epoch
    children.train.train_child = children.trainer.Trainer.train_epoch = _refuse
    try:
        trainable(config, ctx, splits, trial=score_trial, folds=folds)
    finally:  # the worker is reused by other tests' trials
        children.train.train_child, children.trainer.Trainer.train_epoch = saved


def test_trials_never_train_and_score_with_the_fold_models_they_were_given(
        ray_session, tmp_path: Path) -> None:
    from children.datasets import load_dataset, make_splits
    from children.density import FoldModels, fold_training_splits, held_out_rows
    from children.train import train_child
    from search.events import SearchListener
    from search.rewards.density_matching import score_trial, search_plan
    from search.strategies import get_strategy
    from search.trials.context import TrialContext
    from search.tune import Resources, TunePlan, run_search
    from spaces.policy import identity_policy

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space = dm_space().replace(**{"dataset.train_size": 90, "child.epochs": 4,
                                  "reward.last_epochs": 1})
    splits = make_splits(load_dataset(space.dataset), space.dataset, seed=0)
    rows = held_out_rows(space.reward.matching(), splits.train.y, seed=0)
    states = []
    for held in rows:
        kept = []
        train_child(space.child, space.reward.model_copy(update={"validation": "pool"}),
                    identity_policy(), fold_training_splits(splits, held), seed=0, threads=1,
                    on_epoch=lambda _s, state, keep=kept: keep.append(state.model))
        states.append(kept[-1])
    models = FoldModels.from_states(space.child, splits, rows, states)
    ctx = TrialContext(space, 0, threads=1)
    plan = TunePlan(ctx=ctx, splits=splits, strategy=get_strategy("random"),
                    resources=Resources(1, 0), trials=4, concurrency=2, storage=tmp_path, seed=0)
    plan = search_plan(plan, models)  # what the kind's `prepare` returns after the fold stage
    outcomes = run_search(dataclasses.replace(plan, trainable=guarded), [SearchListener()])
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
    for o in outcomes:  # the same score as these fold models give here, in this process
        expected = score_trial(o.config, ctx, splits, lambda *_: None, folds=models)
        assert o.result["reward"] == expected["reward"]
        assert o.result["fold_rewards"] == expected["fold_rewards"]
        assert o.result["audit_accuracy"] == expected["audit_accuracy"]
    assert len({o.result["reward"] for o in outcomes}) > 1


def test_resume_never_trains_a_finished_fold_model_again(tmp_path: Path) -> None:
    """Ctrl-C after the first of 3 fold models, --resume (the others train), Ctrl-C during the
    search, --resume: the fold models are read back, not trained; one MLflow run per fold."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(dm_space().model_dump(mode="json"), sort_keys=False))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--searcher", "random",
           "--smoke-test", "--trials", "30", "--epochs", "6", "--concurrency", "1",
           "--confirm", "0", "--output", str(out)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": python_path()}
    finished = f"trial_{_interrupt_at_first_fold(cmd, env)}"
    first = _trial_reports(out, "folds")
    # the fold the progress line reported finished had reported all 6 epochs before Ctrl-C
    assert first.get(finished) == 6, (finished, first)
    assert not (out / "fold_models.pkl").exists()
    _interrupt(cmd + ["--resume"], env, after=3)
    reports = _trial_reports(out, "folds")
    epochs = _epochs(out, "folds")
    assert len(reports) == FOLDS, reports
    # never trained again: not one more report, each epoch once
    assert reports[finished] == 6 and epochs[finished] == set(range(1, 7)), (first, reports)
    # a fold cut off mid-epoch resumes from its last checkpoint: it may repeat that one epoch
    assert all(e == set(range(1, 7)) for e in epochs.values()), epochs
    assert (out / "fold_models.pkl").exists()
    stamp = (out / "fold_models.pkl").stat().st_mtime_ns
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "fold models restored from" in resumed.stdout
    assert "training 3 fold models" not in resumed.stdout
    assert _trial_reports(out, "folds") == reports
    assert (out / "fold_models.pkl").stat().st_mtime_ns == stamp
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == 30 and all(r["status"] == "ok" for r in rows)
    stages = runs_by_stage(out)
    assert len(stages["fold"]) == FOLDS and len(stages["search"]) == 30
    assert all(r.info.status == "FINISHED" for r in stages["fold"] + stages["search"])
    assert not any(math.isnan(float(r["reward"])) for r in rows)


def _interrupt_at_first_fold(cmd: list[str], env: dict) -> str:
    """Run the CLI, send Ctrl-C as soon as the first fold model is reported finished, and
    return that fold trial's id (from the progress line `... | <trial id>: reward ...`)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    trial = ""
    try:
        for line in proc.stdout:
            if line.startswith("[augsearch] fold ") and "trials (" in line:
                trial = line.split(" | ")[1].split(":")[0].strip()
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=240)[0]
    finally:
        proc.kill()
    assert trial, rest
    assert proc.returncode == 130, rest
    return trial


def _epochs(out: Path, experiment: str) -> dict[str, set[int]]:
    """Trial directory name -> the training iterations its results reported."""
    found = {}
    for result in (out / "ray" / experiment).glob("*/result.json"):
        lines = result.read_text().splitlines()
        found[result.parent.name] = {json.loads(line)["training_iteration"] for line in lines}
    return found
