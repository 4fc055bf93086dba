"""What a confirmed search exports: the base unless the best candidate's corrected interval lies
above 0; an unproven candidate is written beside it as candidate_policy.* (candidate_schedule.json
for PBT). Real outputs (albumentations files, policy YAML, schedules read back as the evaluation
reads them) from leaderboards and confirmations built with search.stages.confirm's own functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest

from search.evaluate.arms import policy_arm
from search.stages.confirm import (
    FAILED,
    INTERRUPTED,
    Confirmation,
    Measurement,
    candidates,
    verdict,
)
from search.stages.outputs import leaderboard_rows, write_outputs
from search.trials.compile import decode, sample_configs
from search.trials.config import TrialConfig, encode
from search.trials.references import BASE
from search.trials.schedule import schedule_to_json
from search.tune import TrialOutcome
from spaces.policy import identity_policy, load_policy
from spaces.schema import Space, load_space

EPOCHS = 6


@pytest.fixture(scope="module")
def space() -> Space:
    return load_space("digits").replace(**{"child.epochs": EPOCHS, "reward.last_epochs": 1})


def leaderboard(space: Space, schedules: bool = False) -> tuple[list[dict[str, Any]], list[dict]]:
    """Four searched trials t0..t3 (t0 best) and the base arm b, as Tune outcomes."""
    configs = sample_configs(space, 4, seed=5)
    outcomes = []
    for i, (config, reward) in enumerate(zip(configs, (0.9, 0.85, 0.8, 0.75), strict=True)):
        result = {"reward": reward, "audit_accuracy": reward, "epoch": EPOCHS}
        if schedules:  # a pbt trial: its policy changed once, at epoch 3
            result["schedule"] = json.dumps(schedule_to_json(
                space, [(0, configs[(i + 1) % 4]), (3, config)], EPOCHS))
        outcomes.append(TrialOutcome(f"t{i}", config, result, "ok"))
    outcomes.append(TrialOutcome("b", encode(TrialConfig(reference=BASE)),
                                 {"reward": 0.7, "audit_accuracy": 0.7, "epoch": EPOCHS}, "ok"))
    return leaderboard_rows(space, outcomes), configs


def confirmed(rows: list[dict[str, Any]], margins: dict[str, list[float]],
              replay: bool = False) -> Confirmation:
    """The top 2 and the base, confirmed on 4 fresh replicates: the base scores 0.80 + 0.01 s at
    replicate s, a candidate that plus its margins."""
    cands = candidates(rows, top=2, replay=replay)
    measured = {c.key: Measurement() for c in cands}
    for c in cands:
        extra = [0.0] * 4 if c.is_base else margins[c.key]
        for s, m in enumerate(extra, 1):
            measured[c.key].add(s, 0.80 + 0.01 * s + m, 0.80 + 0.01 * s + m)
    return Confirmation(cands, measured, verdict(cands, measured), replay)


def written(out: Path, name: str) -> Any:
    """A written policy file read back: the augsearch YAML, and the albumentations JSON run."""
    pipeline = A.load(str(out / f"{name}.json"), data_format="json")
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    assert pipeline(image=image)["image"].shape == image.shape
    return load_policy(out / f"{name}.yaml")


WITHIN_NOISE = {"t0": [0.03, -0.02, 0.04, -0.01], "t1": [0.0, 0.0, -0.01, 0.0]}
SIGNIFICANT = {"t0": [0.0, 0.0, 0.0, 0.0], "t1": [0.03, 0.031, 0.029, 0.03]}
BASE_BEST = {"t0": [-0.01, -0.02, 0.0, -0.01], "t1": [-0.03, -0.02, -0.02, -0.02]}


@pytest.mark.parametrize(("margins", "kind"), [(WITHIN_NOISE, "within_noise"),
                                               (BASE_BEST, "kept_base")])
def test_an_unproven_best_candidate_keeps_the_base_and_is_written_beside_it(
        space: Space, tmp_path: Path, margins: dict[str, list[float]], kind: str) -> None:
    rows, configs = leaderboard(space)
    conf = confirmed(rows, margins)
    assert conf.verdict.decision.value == kind and conf.verdict.best.key == "t0"
    result = write_outputs(space, "tpe", rows, tmp_path, 5, conf)
    best = written(tmp_path, "best_policy")
    assert best.sub_policies == identity_policy().sub_policies  # the base: crop/flip only
    assert best.provenance["trial"] == "b" and result.best_trial == "b"
    assert best.provenance["exported"] == "base" and best.provenance["verdict"] == kind
    assert best.provenance["candidate"] == "t0" and "keep the base" in best.provenance["why"]
    candidate = written(tmp_path, "candidate_policy")
    assert candidate.sub_policies == decode(space, configs[0]).sub_policies
    assert candidate.provenance["trial"] == "t0" and candidate.provenance["verdict"] == kind
    assert candidate.provenance["margin_reward"] == pytest.approx(np.mean(margins["t0"]))
    assert candidate.provenance["correction"] == "bonferroni"
    assert candidate.provenance["correction_k"] == 2
    summary = result.summary()
    assert "exported: the base (crop/flip only)" in summary
    assert "best candidate: trial t0" in summary
    assert f"not exported: {tmp_path / 'candidate_policy.yaml'}" in summary
    assert not (tmp_path / "schedule.json").exists()


def test_a_candidate_whose_corrected_interval_excludes_zero_is_exported(space: Space,
                                                                         tmp_path: Path) -> None:
    rows, configs = leaderboard(space)
    conf = confirmed(rows, SIGNIFICANT)
    assert conf.verdict.best.key == "t1" and conf.verdict.beats_base
    result = write_outputs(space, "tpe", rows, tmp_path, 5, conf)
    best = written(tmp_path, "best_policy")
    assert best.sub_policies == decode(space, configs[1]).sub_policies
    assert best.provenance["trial"] == "t1" and best.provenance["exported"] == "candidate"
    assert best.provenance["verdict"] == "beats_base"
    assert best.provenance["margin_reward_ci95"][0] > 0
    assert not list(tmp_path.glob("candidate_*"))
    assert "exported: the best candidate, trial t1" in result.summary()
    assert "beats crop/flip" in result.summary()


def test_pbt_keeps_the_base_as_a_one_entry_schedule_and_writes_the_candidates(
        space: Space, tmp_path: Path) -> None:
    rows, configs = leaderboard(space, schedules=True)
    conf = confirmed(rows, {"t0": WITHIN_NOISE["t0"], "t1": WITHIN_NOISE["t1"]}, replay=True)
    assert conf.verdict.base.key == BASE and not conf.verdict.beats_base
    write_outputs(space, "pbt", rows, tmp_path, 5, conf)
    base = policy_arm("base", tmp_path / "schedule.json", space, EPOCHS)  # as evaluate reads it
    assert base.kind == "schedule"
    assert all(base.schedule(e).sub_policies == identity_policy().sub_policies
               for e in range(EPOCHS))
    saved = json.loads((tmp_path / "schedule.json").read_text())
    assert saved["provenance"]["exported"] == "base" and len(saved["entries"]) == 1
    cand = policy_arm("candidate", tmp_path / "candidate_schedule.json", space, EPOCHS)
    assert cand.schedule(0).sub_policies == decode(space, configs[1]).sub_policies
    assert cand.schedule(EPOCHS - 1).sub_policies == decode(space, configs[0]).sub_policies
    assert json.loads((tmp_path / "candidate_schedule.json").read_text())["provenance"][
        "candidate"] == "t0"


def test_unconfirmed_searches_export_the_best_reward(space: Space, tmp_path: Path) -> None:
    rows, configs = leaderboard(space)
    result = write_outputs(space, "tpe", rows, tmp_path, 5)
    best = written(tmp_path, "best_policy")
    assert best.sub_policies == decode(space, configs[0]).sub_policies
    assert best.provenance["exported"] == "candidate" and "verdict" not in best.provenance
    assert best.provenance["margin_reward"] == pytest.approx(0.2)
    assert "not confirmed (--confirm 0)" in result.summary()
    assert not list(tmp_path.glob("candidate_*"))


@pytest.mark.parametrize(("status", "reason"), [
    (INTERRUPTED, "the confirmation was interrupted after 3 of its 12 trainings"),
    (FAILED, "none of the confirmation's 12 trainings finished")])
def test_a_confirmation_that_decided_nothing_exports_the_base_and_says_why(
        space: Space, tmp_path: Path, status: str, reason: str) -> None:
    """Asked for and unfinished (Ctrl-C, every run failing): the search's top trial t0 is not
    exported unconfirmed (it was before), and the summary does not blame --confirm 0."""
    rows, _ = leaderboard(space)
    result = write_outputs(space, "tpe", rows, tmp_path, 5,
                           Confirmation.unfinished(status, reason))
    best = written(tmp_path, "best_policy")
    assert best.sub_policies == identity_policy().sub_policies
    assert best.provenance["trial"] == "b" and result.best_trial == "b"
    assert best.provenance["exported"] == "base"
    assert best.provenance["verdict"] == f"unconfirmed_{status}"
    assert reason in best.provenance["why"] and "--resume" in best.provenance["why"]
    summary = result.summary()
    assert f"exported: the base (crop/flip only), unconfirmed: {reason}" in summary
    assert "--confirm 0" not in summary


def test_an_unfinished_confirmation_of_pbt_exports_the_base_as_a_schedule(
        space: Space, tmp_path: Path) -> None:
    rows, _ = leaderboard(space, schedules=True)
    write_outputs(space, "pbt", rows, tmp_path, 5,
                  Confirmation.unfinished(INTERRUPTED, "interrupted", replay=True))
    base = policy_arm("base", tmp_path / "schedule.json", space, EPOCHS)
    assert all(base.schedule(e).sub_policies == identity_policy().sub_policies
               for e in range(EPOCHS))
    assert json.loads((tmp_path / "schedule.json").read_text())["provenance"]["exported"] == \
        "base"
