"""Self-supervised searches (`reward.kind: self_supervised`) on a real local Ray, with real
contrastive pre-training on real digits: every output, the reference arms (base, SimCLR's views),
the confirmation, MLflow, a worker killed mid-trial, and the label-free rotation score on images
without labels; what the kind refuses."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from search.api import search
from search.errors import SearchError
from search.prepare.checks import prepare
from search.prepare.options import SearchOptions
from search.rewards import reward_kind
from search.trials.references import reference_policies
from search.trials.simclr import simclr_policy, simclr_text
from spaces.ops import get_op
from spaces.schema import Space, load_space
from tests.search.test_search import _trial_reports

pytestmark = pytest.mark.slow


def ssl_space(**changes) -> Space:
    """Digits, pre-trained on 400 images of which 100 keep their labels, 2 epochs."""
    return load_space("digits").replace(**{
        "reward.kind": "self_supervised", "policy.batch_ops": {},
        "dataset.train_size": 400, "dataset.labelled_size": 100, "dataset.val_pool_size": 300,
        "dataset.audit_size": 300, "reward.val_sample_size": 200, "child.batch_size": 64,
        "child.epochs": 2, "reward.last_epochs": 1,
        "child.optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "reward.ssl": {"probe_steps": 100, "rotation_images": 200}, **changes})


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def runs_by_stage(out: Path, experiment: str = "augsearch-digits") -> dict[str, list]:
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    by: dict[str, list] = {}
    for run in client.search_runs([found.experiment_id], max_results=1000):
        by.setdefault(run.data.tags.get("stage", "parent"), []).append(run)
    return by


def _assert_the_floor_is_the_untrained_trunk(result, out: Path) -> None:
    """floor.json: the probe of the trunk every trial starts from (the trials' common seed),
    untrained; in the summary and on the parent MLflow run, and below what pre-training
    reached (the best reward)."""
    floor = json.loads((out / "floor.json").read_text())
    seeds = {r["common_seed"] for r in _results(out)}
    assert seeds == {floor["seed"]}, seeds
    assert 0 < floor["reward"] < 1 and 0 < floor["audit"] < 1 and floor["score"] == "probe"
    assert floor["reward"] == floor["probe"]
    assert f"scores {floor['reward']:.4f} by the reward (probe)" in result.summary()
    parent = runs_by_stage(out)["parent"][0]
    assert parent.data.metrics["floor_reward"] == pytest.approx(floor["reward"])
    assert parent.data.metrics["floor_audit"] == pytest.approx(floor["audit"])
    assert result.best_reward != floor["reward"]  # trained features, not the initial ones


def _results(out: Path) -> list[dict]:
    """Every search trial's last reported result (Tune's result.json)."""
    found = []
    for path in (out / "ray" / "tune").glob("*/result.json"):
        lines = path.read_text().splitlines()
        if lines:
            found.append(json.loads(lines[-1]))
    return found


def test_a_self_supervised_search_writes_every_output(ray_session, tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "crashed"
    result = search(ssl_space(), "tpe", trials=4, concurrency=2, seed=0, output=out,
                    confirm=1, confirm_seeds=2, crash_once=str(marker))
    assert marker.exists(), "the fault was never injected"
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert {r["reference"] for r in rows} == {"", "base", "simclr"}
    assert all(r["epochs"] == "2" for r in rows)  # the killed trial resumed from epoch 1
    for r in rows:
        assert 0.1 < float(r["reward"]) <= 1 and 0 <= float(r["audit_accuracy"]) <= 1
        assert float(r["reward"]) == pytest.approx(float(r["val_accuracy"]))  # the probe
    assert set(_trial_reports(out).values()) >= {2}
    # the exported policy: plain albumentations and augsearch's provenance
    pipeline = A.load(str(out / "best_policy.json"), data_format="json")
    assert pipeline(image=np.zeros((16, 16, 1), np.uint8))["image"].shape == (16, 16, 1)
    provenance = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]
    assert provenance["reward_kind"] == "self_supervised" and provenance["ssl_score"] == "probe"
    verdict = result.confirmation.verdict
    _assert_the_floor_is_the_untrained_trunk(result, out)
    assert provenance["confirmed_over_seeds"] == 2
    assert (out / "candidate_policy.yaml").exists() == (not verdict.beats_base)
    # the confirmation: the base and the best policy pre-trained again on fresh replicates,
    # the selecting trial kept as replicate 0 (a trial trains a model: child_per_trial)
    confirmed = read_csv(out / "confirm.csv")
    fresh = {(r["candidate"], r["replicate"]) for r in confirmed if r["used_for"] == "estimation"}
    assert len(fresh) == 4 and {rep for _, rep in fresh} == {"1", "2"}
    assert any(r["used_for"] == "selection" and r["replicate"] == "0" for r in confirmed)
    # ... by the kind's own trial: a probe of pre-trained features, not a supervised child
    assert all(float(r["reward"]) > 0.5 for r in confirmed), confirmed
    # MLflow: a run per trial and per confirmation run, every score of the last epoch
    stages = runs_by_stage(out)
    assert len(stages["search"]) == 4 and len(stages["confirm"]) == 4
    for run in stages["search"]:
        assert run.info.status == "FINISHED"
        metrics = run.data.metrics
        for key in ("probe_accuracy", "knn_accuracy", "rotation_accuracy", "train_loss"):
            assert math.isfinite(metrics[key]), key
    [parent] = stages["parent"]
    params = parent.data.params
    assert params["reward_kind"] == "self_supervised" and params["ssl_score"] == "probe"
    assert params["labelled_size"] == "100"


def test_the_rotation_score_searches_images_without_labels(ray_session, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * (255 / 16)).astype(np.uint8)[..., None]
    np.savez(tmp_path / "unlabelled.npz", x=images)  # no labels at all
    space = ssl_space(**{"dataset.name": "npz", "dataset.labelled_size": 0,
                         "reward.ssl.score": "rotation"})
    out = tmp_path / "out"
    result = search(space, "random", trials=3, concurrency=2, seed=0, output=out, confirm=0,
                    data=str(tmp_path / "unlabelled.npz"))
    rows = read_csv(out / "leaderboard.csv")
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for r in rows:  # a rotation score, and the audit set's rotation score (no labels)
        assert 0.25 <= float(r["reward"]) <= 1 and 0 <= float(r["audit_accuracy"]) <= 1
    assert math.isfinite(result.best_reward)
    assert reward_kind(space).accuracy_reward(space)  # reward and audit: both rotation scores


def test_the_kind_refuses_pbt_and_cohorts_and_says_what_it_does(tmp_path: Path) -> None:
    space = ssl_space()
    with pytest.raises(SearchError, match=r"--searcher pbt cannot search with reward.kind: "
                                          r"self_supervised .*replays no policy schedule"):
        prepare(space, "pbt", SearchOptions.build({"output": str(tmp_path / "a")}))
    with pytest.raises(SearchError, match=r"--cohort 2 .*pre-trains one model per trial"):
        prepare(space, "tpe", SearchOptions.build({"cohort": 2, "output": str(tmp_path / "b")}))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    from search.evaluate import evaluate

    with pytest.raises(SearchError, match=r"supervised children do not measure"):
        evaluate(None, space=space, baselines="cropflip", output=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    lines = "\n".join(reward_kind(space).summary_lines(space))
    assert "linear probe fitted on 100 labelled images" in lines
    assert "not expressible: the random resized crop" in lines
    rotation = space.replace(**{"reward.ssl.score": "rotation"})
    assert not reward_kind(rotation).accuracy_reward(rotation)  # rotation vs the probe's audit


def test_simclr_views_are_written_in_the_spaces_ops() -> None:
    cifar = load_space("cifar10_ssl")
    policy = simclr_policy(cifar)
    assert list(reference_policies(cifar)) == ["base", "simclr"]
    assert len(policy.sub_policies) == 16
    first = policy.sub_policies[0].ops
    assert [o.name for o in first] == ["RandomResizedCrop", "Brightness", "Contrast", "Color",
                                       "Color"]
    assert [o.probability for o in first] == [1.0, 0.8, 0.8, 0.8, 0.4]
    # SimCLR's crop in every sub-policy, always: scale 0.08-1
    assert all(s.ops[0] == first[0] for s in policy.sub_policies)
    assert get_op("RandomResizedCrop").strength(first[0].magnitude) == pytest.approx(0.08)
    strengths = sorted({round(o.magnitude * 0.9, 4) for s in policy.sub_policies
                        for o in s.ops[1:4]})
    assert strengths == [0.05, 0.15, 0.25, 0.35]  # ColorJitter 0.4 on a grid of 4 levels
    text = simclr_text(cifar)
    assert "RandomResizedCrop at magnitude 1 (scale 0.08-1" in text
    assert "not expressible: hue jitter" in text and "random resized crop" not in text
    uncropped = cifar.replace(**{"policy.ops": [o.name for o in cifar.policy.ops
                                                if o.name != "RandomResizedCrop"]})
    assert [o.name for o in simclr_policy(uncropped).sub_policies[0].ops] == [
        "Brightness", "Contrast", "Color", "Color"]
    assert "not expressible: the random resized crop (scale 0.08-1" in simclr_text(uncropped)
    digits = ssl_space()  # grayscale: no Color, so neither saturation nor grayscale
    assert {o.name for s in simclr_policy(digits).sub_policies for o in s.ops} == {
        "Brightness", "Contrast"}
    no_colour = digits.replace(**{"policy.ops": ["Identity", "Rotate"]})
    assert list(reference_policies(no_colour)) == ["base"]
