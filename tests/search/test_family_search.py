"""Policy families in a search: TPE over a family's few numbers, the reference arms in the
compact drawn form with their old meaning, the dry run, and real searches (slow) whose
leaderboards hold only the family's numbers and whose exported policies every consumer reads."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest

from children.augment import load_augment
from search.api import search
from search.prepare.checks import prepare
from search.prepare.options import SearchOptions
from search.prepare.summary import dry_run
from search.strategies import get_strategy
from search.trials.compile import decode, define_by_run, flat_dimensions
from search.trials.references import (
    MAGNITUDE_LEVELS,
    TRIVIAL_OPS,
    randaugment_policy,
    trivial_policy,
)
from spaces.ops import get_op
from spaces.policy import Policy, flat_params, load_policy, policy_to_dict, save_policy
from spaces.schema import load_space
from tests.spaces.family_spaces import family_space

FAMILIES = {"randaugment": {"ra_n", "ra_magnitude", "ra_probability"},
            "trivialaugment": {"ta_ceiling"}}


def _meaning(policy: Policy) -> Counter:
    """What a one-op-per-image policy applies, as a distribution over (op, magnitude)."""
    out: Counter = Counter()
    if policy.draw is not None:
        for op in policy.draw.ops:
            levels = policy.draw.magnitudes(op)
            for m in levels:
                out[op.name, round(m, 6)] += 1 / len(policy.draw.ops) / len(levels)
    for sub in policy.sub_policies:
        (op,) = sub.ops
        out[op.name, round(op.magnitude, 6)] += 1 / len(policy.sub_policies)
    return out


@pytest.mark.parametrize("name", ["cifar10", "digits"])
def test_the_trivialaugment_arm_means_what_its_sub_policies_meant(name: str) -> None:
    space = load_space(name)
    old = []  # the arm as sub-policies: each (op, level) one single-op sub-policy
    for choice in (o for o in space.policy.ops if o.name in TRIVIAL_OPS):
        low, high = choice.magnitude
        for k in range(MAGNITUDE_LEVELS):
            level = (low + (high - low) * (k + 0.5) / MAGNITUDE_LEVELS
                     if get_op(choice.name).has_magnitude else 0.0)
            old.append(((choice.name, round(level, 6)), 1 / MAGNITUDE_LEVELS))
    chosen = {n for (n, _), _ in old}
    expected: Counter = Counter()
    for key, weight in old:
        expected[key] += weight / len(chosen)
    arm = trivial_policy(space)
    assert arm.draw is not None and arm.draw.n == 1 and arm.sub_policies == ()
    got = _meaning(arm)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k]) for k in expected)


def test_the_light_randaugment_arm_is_two_draws_from_fourteen_ops() -> None:
    space = load_space("cifar10")
    arm = randaugment_policy(space)
    assert arm.draw.n == 2 and len(arm.draw.ops) == 14  # not 196 ordered pairs
    declared = {o.name: o.magnitude for o in space.policy.ops}
    for op in arm.draw.ops:
        low, high = declared[op.name]
        m = low + 0.3 * (high - low) if get_op(op.name).has_magnitude else 0.0
        assert op.magnitude == (pytest.approx(m), pytest.approx(m)) and op.probability == 1.0
    assert len(flat_params(arm)) < 70 and len(json.dumps(policy_to_dict(arm))) < 2000


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", list(FAMILIES))
def test_tpe_searches_a_family_s_numbers_reproducibly(name: str) -> None:
    """Past its random start-up trials, TPE proposes the family's numbers and only them, inside
    their ranges, the same under the same seed."""
    space = family_space(name, batch_ops={})
    dims = {d.name: d for d in flat_dimensions(space)}

    def run(seed: int) -> list[dict]:
        study = optuna.create_study(direction="maximize",
                                    sampler=get_strategy("tpe").make_sampler(seed))
        suggest = define_by_run(space)
        for _ in range(16):
            trial = study.ask()
            suggest(trial)
            policy = decode(space, trial.params)
            strength = np.mean([op.magnitude[1] * op.probability for op in policy.draw.ops])
            study.tell(trial, -abs(strength - 0.3))
        return [t.params for t in study.trials]

    first = run(3)
    assert first == run(3) and first != run(4)
    for params in first:
        assert set(params) == FAMILIES[name]
        assert all(dims[k].low <= v <= dims[k].high for k, v in params.items())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_dry_run_shows_the_family_s_numbers(name: str, tmp_path: Path) -> None:
    prepared = prepare(family_space(name), "tpe", SearchOptions(output=tmp_path / "out"))
    text = dry_run(prepared)
    line = next(t for t in text.splitlines() if t.startswith("  policy"))
    assert line.startswith(f"  policy    {name}: ") and "(searched)" in line
    assert "sub-policies" not in text and "op(s) per image, drawn with replacement" in text
    assert not (tmp_path / "out").exists()


def _rows(out: Path) -> list[dict]:
    with (out / "leaderboard.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_real_search_of_a_family_searches_only_its_numbers(ray_session, tmp_path: Path,
                                                             name: str) -> None:
    import albumentations as A

    space = family_space(name, batch_ops={})
    out = tmp_path / "out"
    result = search(space, "tpe", smoke_test=True, trials=5, seed=0, output=out)
    rows = _rows(out)
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    searched = [json.loads(r["config"]) for r in rows if not r["reference"]]
    assert len(searched) == 3 and all(set(c) == FAMILIES[name] for c in searched)
    assert {r["reference"] for r in rows} == {"", "base", "trivialaugment"}
    # every written policy: plain albumentations, PolicyAugment and the policy reader take it
    written = [p for p in ("best_policy", "candidate_policy") if (out / f"{p}.yaml").exists()]
    drawn = [load_policy(out / f"{p}.yaml") for p in written]
    assert any(p.draw is not None for p in drawn) and result.best_policy in drawn
    for stem in written:
        pipeline = A.load(str(out / f"{stem}.json"), data_format="json")
        image = np.zeros((16, 16, 1), np.uint8)
        assert pipeline(image=image)["image"].shape == image.shape
        augment = load_augment(out / f"{stem}.yaml")
        assert augment.policy == load_policy(out / f"{stem}.yaml")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_search_evaluate_trains_with_a_family_s_policy_file(name: str, tmp_path: Path) -> None:
    """`search.evaluate --policy` on a drawn policy beside its space, as a search leaves it:
    the batched path, one epoch."""
    import yaml

    from search.evaluate import evaluate

    space = family_space(name).replace(**{"child.epochs": 1, "reward.last_epochs": 1,
                                          "child.batch_size": 128})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space.model_dump(mode="json")))
    policy = decode(space, {"ra_n": 2, "ra_magnitude": 0.4, "ta_ceiling": 0.5})
    path = save_policy(policy, tmp_path / "best_policy.yaml")
    result = evaluate({"found": path}, baselines="", seeds=1, epochs=1, threads=1,
                      output=tmp_path / "out", quiet=True)
    [summary] = result.arms
    assert summary.name == "found" and summary.kind == "policy"
    assert 0.0 <= summary.accuracy.mean <= 1.0


@pytest.mark.slow
def test_pbt_explores_randaugment_s_whole_number_of_ops(ray_session, tmp_path: Path) -> None:
    """PBT over N, M and p: every config it trains, explored ones included, holds a whole N
    inside its range, and its schedule replays as drawn policies."""
    from search.trials.schedule import schedule_policies

    space = family_space("randaugment", batch_ops={})
    out = tmp_path / "out"
    search(space, "pbt", smoke_test=True, epochs=4, confirm=0, seed=0, output=out)
    schedule = json.loads((out / "schedule.json").read_text())
    configs = [e["config"] for e in schedule["entries"]]
    configs += [json.loads(r["config"]) for r in _rows(out)]
    for config in configs:
        searched = {k: v for k, v in config.items() if not k.startswith("_")}
        if not searched:  # the base, as its population member
            continue
        assert set(searched) == FAMILIES["randaugment"]
        assert isinstance(searched["ra_n"], int) and 1 <= searched["ra_n"] <= 3
        assert 0.5 <= searched["ra_probability"] <= 1.0
    replay = schedule_policies(space, [(e["epochs"][0], e["config"]) for e in
                                       schedule["entries"]])
    assert all(replay(epoch).draw is not None or replay(epoch) == Policy()
               for epoch in range(4))
