"""A search and an evaluation end to end on the batched augmentation path (real Ray, real data).

The search runs with `augmentation="batched"`; its best trial is then replayed outside Ray and
must reproduce the reward Ray reported, on the batched path. The evaluation retrains the found
policy from its best_policy.yaml (the space.yaml beside it carries the path) and must equal a
direct batched training of the same child and seed.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from search.api import SearchOptions, search
from search.evaluate import EvaluateOptions, evaluate, make_plan
from search.prepare.checks import load_splits
from search.trials.context import TrialContext
from search.trials.trial import run_trial
from spaces.schema import parse_space
from tests.conftest import SHARED_DATA


def test_the_flag_sets_the_space_and_a_bad_value_is_one_clear_line() -> None:
    from search.errors import SearchError
    from search.prepare.checks import apply_options
    from search.run import build_parser, main
    from spaces.schema import load_space

    def prepare_space(name: str, opts: SearchOptions):
        return apply_options(load_space(name), opts)

    assert build_parser().parse_args(["--augmentation", "batched"]).augmentation == "batched"
    assert prepare_space("digits", SearchOptions()).child.augmentation == "auto"
    space = prepare_space("digits", SearchOptions(augmentation="albumentations"))
    assert space.child.augmentation == "albumentations"
    with pytest.raises(SearchError, match="--augmentation .*child.augmentation") as err:
        prepare_space("digits", SearchOptions(augmentation="gpu"))
    assert "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        main(["--augmentation", "gpu", "--dry-run"])
    assert exit_.value.code == 2


def _data() -> dict[str, str]:
    tiny = SHARED_DATA / "cifar10_tiny.npz"
    return {"space": "cifar10", "data": str(tiny)} if tiny.exists() else {"space": "digits"}


@pytest.fixture(scope="module")
def batched_search(ray_session, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    args = _data()
    out = tmp_path_factory.mktemp("batched") / "search"
    # unconfirmed: the best reward is exported (confirmed, it would be the base unless proven)
    search(args.pop("space"), "random", output=out, smoke_test=True, seed=0,
           augmentation="batched", confirm=0, **args)
    return out, args


@pytest.mark.slow
def test_a_search_runs_on_the_batched_path_and_exports_plain_albumentations(batched_search):
    import albumentations as A
    import numpy as np

    out, args = batched_search
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    space = parse_space((out / "space.yaml").read_text(), "space.yaml")
    assert space.child.augmentation == "batched"
    exported = json.loads((out / "best_policy.json").read_text())
    assert set(exported) == {"__version__", "transform"}  # plain albumentations, nothing else
    pipe = A.load(str(out / "best_policy.json"), data_format="json")
    size, channels = space.dataset.image_size, space.dataset.channels  # cifar10, or digits
    image = np.zeros((size, size, channels), np.uint8)
    assert pipe(image=image)["image"].shape[:2] == (size, size)
    # the best trial, replayed outside Ray, reproduces its reward on the batched path
    best = rows[0]
    splits = load_splits(space, SearchOptions(seed=0, **args))
    metrics = run_trial(json.loads(best["config"]), TrialContext(space, 0, threads=1), splits,
                        report=lambda metrics, checkpoint: None)
    assert metrics.augmentation == "batched"
    assert metrics.reward == pytest.approx(float(best["reward"]), abs=1e-4)


@pytest.mark.slow
def test_an_evaluation_runs_the_found_policy_on_the_batched_path(batched_search, tmp_path):
    from children.train import train_child
    from spaces.policy import load_policy

    out, args = batched_search
    result = evaluate(out / "best_policy.yaml", baselines="", seeds=1, epochs=2, threads=1,
                      output=tmp_path / "eval", quiet=True, data=args.get("data"))
    [run] = result.runs
    assert 0.0 <= run.accuracy <= 1.0 and math.isfinite(run.train_loss)
    space = parse_space((out / "space.yaml").read_text(), "space.yaml")
    plan = make_plan(space, EvaluateOptions(epochs=2, threads=1, data=args.get("data")))
    assert plan.child.augmentation == "batched"
    direct = train_child(plan.child, plan.reward, load_policy(out / "best_policy.yaml"),
                         plan.splits, seed=0, threads=1, epochs=2)
    assert direct.augmentation == "batched"
    assert direct.history[-1].train_loss == run.train_loss
    assert direct.val_accuracy == run.accuracy
