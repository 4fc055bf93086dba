"""Evaluation against baselines on real data: the tables, TTA, pbt replay, MLflow, user errors.

The CLI runs once on the real CIFAR-10 sample (skipped without ../shared/data) with every
baseline and a policy; schedule replay and plain albumentations files use scikit-learn digits.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from scipy.stats import t

from search.errors import SearchError
from search.evaluate import (
    EvaluateOptions,
    estimate,
    evaluate,
    main,
    make_plan,
    policy_arm,
    policy_sources,
    run_arm,
    scale_schedule,
)
from search.evaluate.baselines import BASELINES, baseline
from search.trials.compile import decode, sample_configs
from search.trials.schedule import schedule_to_json
from spaces.policy import BatchOps, Op, Policy, SubPolicy, export_albumentations, save_policy
from spaces.schema import BaseAug, Space, load_space
from tests.conftest import shared_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
POLICY = Policy((SubPolicy((Op("Rotate", 0.3, 0.6), Op("Color", 0.5, 0.5))),
                 SubPolicy((Op("Cutout", 0.4, 0.5),))),
                BatchOps(mixup_alpha=0.2), {"space": "cifar10"})
ARMS = ["policy", *BASELINES]


def _space(name: str, **changes: Any) -> Space:
    """A built-in space with a child small enough for tests."""
    base = {"child.width": 8, "child.epochs": 1, "reward.last_epochs": 1,
            "child.batch_size": 64}
    return load_space(name).replace(**{**base, **changes})


def _write_space(space: Space, path: Path) -> Path:
    path.write_text(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False),
                    encoding="utf-8")
    return path


def _table_rows(text: str) -> dict[str, list[str]]:
    """The first markdown table of `text`, by its first column."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not set(cells[0]) <= set("-:"):  # not the separator row
            rows.setdefault(cells[0], cells[1:])
    return rows


# ---------------------------------------------------------------- the CLI on real CIFAR-10


@pytest.fixture(scope="module")
def cifar_eval(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`python -m search.evaluate` once: a policy and every baseline, 2 seeds, 3 epochs, TTA."""
    data = shared_file("cifar10_tiny.npz")
    folder = tmp_path_factory.mktemp("eval")
    space = _space("cifar10", **{"dataset.train_size": 100, "dataset.val_pool_size": 60,
                                 "dataset.audit_size": 40, "reward.val_sample_size": 50})
    _write_space(space, folder / "space.yaml")  # found beside the policy, as a search leaves it
    policy = save_policy(POLICY, folder / "best_policy.yaml")
    out = folder / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--policy", str(policy), "--data", str(data), "--seeds", "2",
                     "--epochs", "3", "--tta", "2", "--threads", "1", "--output", str(out)])
    return {"code": code, "stdout": stdout.getvalue(), "out": out, "space": space}


@pytest.mark.slow
def test_the_policy_and_every_baseline_get_a_row_with_accuracy_and_ci(cifar_eval):
    assert cifar_eval["code"] == 0
    text = cifar_eval["stdout"]
    header = next(line for line in text.splitlines() if line.startswith("| arm"))
    assert "test accuracy (mean ± std)" in header and "| 95% CI |" in header
    assert "seconds/run" in header
    rows = _table_rows(text)
    assert list(rows)[1:] == ARMS  # after the header row, in order
    for arm in ARMS:
        mean = float(rows[arm][0].split("±")[0])
        low, high = (float(v) for v in re.findall(r"-?\d+\.\d+", rows[arm][1]))
        assert 0.0 <= mean <= 1.0 and low <= mean <= high, (arm, rows[arm])
        assert float(rows[arm][-1]) > 0  # seconds
    assert "on 100 test images the search never touched" in text
    assert "on 200 training images" in text  # the whole training split, not the search's subset
    for baseline_name in BASELINES:
        assert re.search(rf"^\| policy \| {baseline_name} \| [+-]\d\.\d{{4}} ± \d\.\d{{4}} \| "
                         rf"\[[+-]\d\.\d{{4}}, [+-]\d\.\d{{4}}\] \| \d/2 \|", text, re.M)


@pytest.mark.slow
def test_tta_accuracy_is_reported_beside_plain_accuracy(cifar_eval):
    text = cifar_eval["stdout"]
    assert "TTA ×2 (mean ± std)" in text
    rows = _table_rows(text)
    for arm in ARMS:
        tta = rows[arm][2]
        if arm == "none":
            assert tta == "—"  # nothing random to average
        else:
            assert 0.0 <= float(tta.split("±")[0]) <= 1.0
    runs = json.loads((cifar_eval["out"] / "evaluation.json").read_text())["runs"]
    assert len(runs) == 2 * len(ARMS) and {r["seed"] for r in runs} == {0, 1}
    for run in runs:
        assert 0.0 <= run["accuracy"] <= 1.0
        assert (run["tta_accuracy"] is None) == (run["arm"] == "none")
    # every arm trained on its own augmented images: same seed, different training batches
    assert len({r["train_loss"] for r in runs if r["seed"] == 0}) == len(ARMS)


@pytest.mark.slow
def test_differences_are_paired_by_seed(cifar_eval):
    saved = json.loads((cifar_eval["out"] / "evaluation.json").read_text())
    acc = {(r["arm"], r["seed"]): r["accuracy"] for r in saved["runs"]}
    for d in saved["differences"]:
        diffs = [acc[(d["arm"], s)] - acc[(d["other"], s)] for s in (0, 1)]
        assert d["diff"]["mean"] == pytest.approx(np.mean(diffs))
        assert d["wins"] == sum(x > 0 for x in diffs)
    assert [d["other"] for d in saved["differences"]] == list(BASELINES)


@pytest.mark.slow
def test_the_evaluation_is_one_queryable_mlflow_run_with_a_plot(cifar_eval):
    out, space = cifar_eval["out"], cifar_eval["space"]
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name(f"augsearch-{space.name}-eval")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["seeds"] == "2" and run.data.params["epochs"] == "3"
    assert run.data.params["model"] == space.child.model  # the space's child, no --model given
    assert "best_policy.yaml" in run.data.params["policies"]
    for arm in ARMS:
        for key in ("accuracy_mean", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high"):
            assert math.isfinite(run.data.metrics[f"{arm}.{key}"])
        history = client.get_metric_history(run.info.run_id, f"{arm}.accuracy")
        assert sorted(m.step for m in history) == [0, 1]
    assert "diff.policy_vs_cropflip.mean" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"evaluation.png", "evaluation.csv", "evaluation.md"} <= names
    png = Path(client.download_artifacts(run.info.run_id, "evaluation.png", str(out / "dl")))
    assert png.read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- policy files on digits


@pytest.fixture(scope="module")
def digits() -> Space:
    return _space("digits", **{"child.epochs": 2})


def test_a_pbt_schedule_replays_epoch_by_epoch_scaled_to_the_budget(digits, tmp_path):
    first, second = sample_configs(digits, 2, seed=3)
    assert decode(digits, first) != decode(digits, second)
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(schedule_to_json(digits, [(0, first), (1, second)], epochs=2)))
    arm = policy_arm("pbt", path, digits, epochs=4)  # the search ran 2 epochs: 1 -> 2 of 4
    assert arm.kind == "schedule" and arm.schedule is not None
    assert [arm.schedule(e) for e in range(4)] == [decode(digits, first)] * 2 + \
        [decode(digits, second)] * 2
    asked: list[int] = []

    def recording(epoch: int) -> Policy:
        asked.append(epoch)
        return arm.schedule(epoch)

    plan = make_plan(digits, EvaluateOptions(epochs=4, threads=1))
    result = run_arm(replace(arm, schedule=recording), plan, seed=0)
    assert asked == [0, 1, 2, 3]  # the trainer consults the schedule every epoch
    assert 0.0 <= result.accuracy <= 1.0 and math.isnan(result.tta_accuracy)


def test_a_plain_albumentations_file_is_used_as_is(digits, tmp_path):
    base, size = digits.child.base_augmentation, digits.dataset.image_size
    path = export_albumentations(POLICY, base, size, tmp_path / "best_policy.json")
    arm = policy_arm("alb", path, digits, epochs=1)
    assert arm.kind == "albumentations"
    names = [type(t).__name__ for t in arm.augment().pipeline.transforms]
    assert names == ["Pad", "RandomCrop", "OneOf"]  # the file's own crop, not a second one
    result = evaluate({"alb": path}, space=digits, baselines="", seeds=1, epochs=1, tta=2,
                      threads=1, output=tmp_path / "out", quiet=True)
    [summary] = result.arms
    assert summary.name == "alb" and summary.kind == "albumentations"
    assert 0.0 <= summary.accuracy.mean <= 1.0 and 0.0 <= summary.tta.mean <= 1.0
    assert result.settings["train_images"] == 1497  # every digits training image


def test_the_trainer_feeds_the_augment_function_and_hands_back_a_predictor(digits):
    from children.datasets import load_dataset, make_splits
    from children.train import train_child
    from spaces.policy import identity_policy

    splits = make_splits(load_dataset(digits.dataset), digits.dataset, seed=0)
    child = digits.child.model_copy(update={"base_augmentation": BaseAug(crop=False,
                                                                         flip=False)})
    first: dict[str, np.ndarray] = {}
    predicted: list[np.ndarray] = []

    def train(name: str, augment: Any) -> None:
        train_child(child, digits.reward, identity_policy(), splits, seed=0, threads=1,
                    epochs=1, augment=augment,
                    on_batch=lambda x, y: first.setdefault(name, x.numpy().copy()),
                    on_end=lambda predict: predicted.append(predict(splits.test.x[:7])))

    train("plain", None)
    train("inverted", lambda image: 255 - image)
    # the same images in the same order: normalised x + normalised (255 - x) is one constant
    assert first["plain"].std() > 0.5 and np.ptp(first["plain"] + first["inverted"]) < 1e-4
    for probabilities in predicted:
        assert probabilities.shape == (7, 10) and probabilities.dtype == np.float32
        assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_workers_train_the_same_runs_and_train_size_takes_the_search_budget(digits, tmp_path):
    """Two worker processes give exactly the runs one process gives (seeded, per arm); the
    train size picks the images a seed-0 search trains its children on."""
    from children.datasets import load_dataset, make_splits

    path = save_policy(POLICY, tmp_path / "best_policy.yaml")
    common = dict(space=digits, baselines="none,cropflip", seeds=2, epochs=1, threads=1,
                  quiet=True, train_size=digits.dataset.train_size)
    one = evaluate({"p": path}, output=tmp_path / "one", **common)
    two = evaluate({"p": path}, output=tmp_path / "two", workers=2, **common)
    key = sorted((r.arm, r.seed, r.accuracy, r.train_loss) for r in one.runs)
    assert key == sorted((r.arm, r.seed, r.accuracy, r.train_loss) for r in two.runs)
    assert len(key) == 6 and one.settings["train_images"] == digits.dataset.train_size
    plan = make_plan(digits, EvaluateOptions(train_size=digits.dataset.train_size))
    search_train = make_splits(load_dataset(digits.dataset), digits.dataset, seed=0).train
    assert sorted(map(bytes, plan.splits.train.x)) == sorted(map(bytes, search_train.x))


def test_torchvision_baselines_keep_shape_and_dtype_on_rgb_and_grayscale():
    rng = np.random.default_rng(0)
    for name in ("randaugment", "trivialaugment", "autoaugment"):
        for shape in ((32, 32, 3), (16, 16, 1)):
            fn = baseline(name, BaseAug(crop_padding=2)).augment(shape[0])
            fn.set_random_seed(0)
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            out = [fn(image) for _ in range(10)]
            assert all(o.shape == shape and o.dtype == np.uint8 for o in out)
            assert any(not np.array_equal(o, image) for o in out)


# ---------------------------------------------------------------- statistics


def test_estimate_is_the_student_t_interval_of_the_mean():
    e = estimate([0.5, 0.6, 0.7])
    half = t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert (e.n, e.mean, e.std) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert (e.ci_low, e.ci_high) == (pytest.approx(0.6 - half), pytest.approx(0.6 + half))
    one = estimate([0.4, math.nan])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.ci_low) and math.isnan(one.std)


def test_schedule_epochs_scale_proportionally():
    entries = [(0, {"a": 1}), (5, {"b": 2}), (8, {"c": 3})]
    assert [s for s, _ in scale_schedule(entries, 10, 20)] == [0, 10, 16]
    assert [s for s, _ in scale_schedule(entries, 10, 4)] == [0, 2, 3]
    assert [s for s, _ in scale_schedule([(1, {})], 10, 4)] == [0]  # starts at epoch 0


def test_policy_labels_come_from_label_equals_file_or_their_position():
    assert policy_sources("a/best_policy.yaml") == [("policy", Path("a/best_policy.yaml"))]
    assert policy_sources(["tpe=a.yaml", "b.yaml"]) == [("tpe", Path("a.yaml")),
                                                        ("policy2", Path("b.yaml"))]
    with pytest.raises(SearchError, match="distinct, non-empty and not a baseline name"):
        policy_sources(["cropflip=a.yaml"])
    with pytest.raises(SearchError, match="distinct"):
        policy_sources(["x=a.yaml", "x=b.yaml"])


# ---------------------------------------------------------------- user errors


def _corrupt(tmp: Path) -> Path:
    path = tmp / "best_policy.json"
    path.write_text('{"format": "augsearch-policy", "sub_', encoding="utf-8")
    return path


def _not_a_policy(tmp: Path) -> Path:
    path = tmp / "notes.yaml"
    path.write_text("hello: world\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--baselines", "cropflip,randaugmnt"],
     "unknown baseline 'randaugmnt'; choose from: none, cropflip, cutout, randaugment, "
     "trivialaugment, autoaugment"),
    (["--policy", "{tmp}/missing.yaml"], "missing.yaml: no such policy file"),
    (["--policy", "{corrupt}"], "best_policy.json: not valid JSON"),
    (["--policy", "{not_a_policy}", "--space", "digits"], "notes.yaml: not a policy file"),
    (["--space", "cifar11"], "unknown space 'cifar11'"),
    (["--model", "resnet9000"], "--model 'resnet9000' is unknown; known models: basiccnn"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
])
def test_user_errors_exit_2_with_one_line(args, message, tmp_path, capsys):
    filled = [a.format(tmp=tmp_path, corrupt=_corrupt(tmp_path),
                       not_a_policy=_not_a_policy(tmp_path)) for a in args]
    code = main([*filled, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("augsearch: error: ") and "\n" not in err
    assert message in err
    assert not (tmp_path / "out" / "evaluation.md").exists()
