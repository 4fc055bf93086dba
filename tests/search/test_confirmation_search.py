"""Common random numbers and the confirmation stage, in real searches on a real local Ray."""

from __future__ import annotations

import base64
import csv
import math
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from scipy import stats

from search.api import search
from tests.conftest import subpolicy_digits

pytestmark = pytest.mark.slow


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_trials_share_common_seeds_and_the_same_policy_gives_the_same_reward(ray_session,
                                                                            tmp_path: Path):
    """Every searched policy is the same here (one op, fixed probability): under common random
    numbers each trial trains it identically; all trials share the common seed."""
    space = subpolicy_digits(**{
        "policy.ops": ["Identity"], "policy.search_probability": False,
        "policy.batch_ops": {}, "search.confirm": 0})
    result = search(space, "tpe", smoke_test=True, trials=4, seed=3, output=tmp_path / "out",
                    confirm=0)
    rows = [r for r in result.leaderboard if r["status"] == "ok"]
    assert len(rows) == 4
    searched = [r for r in rows if not r["reference"]]
    assert len(searched) == 3 and [r["reference"] for r in rows if r["reference"]] == ["base"]
    assert len({r["reward"] for r in searched}) == 1
    assert len({r["audit_accuracy"] for r in searched}) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("augsearch-digits").experiment_id])
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    seeds = {r.data.tags["common_seed"] for r in nested}
    assert len(nested) == 4 and len(seeds) == 1  # the base arm too: same weights, same order
    aug = {r.data.tags.get("reference", ""): r.data.tags["aug_seed"] for r in nested}
    assert aug["base"] != aug[""]  # the augmentation's own draws stay per policy


@pytest.fixture(scope="module")
def confirmed(ray_session, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A small real search with confirmation: the top 2 and the base, 2 fresh replicates each."""
    out = tmp_path_factory.mktemp("confirmed") / "out"
    result = search("digits", "tpe", smoke_test=True, trials=5, epochs=3, seed=1, output=out,
                    confirm=2, confirm_seeds=2)
    return out, result


def _unpacked(text: str) -> np.ndarray:
    """confirm.csv's `audit_hits` (`<count>:<base64 of packed bits>`) as 0/1 per image."""
    count, _, data = text.partition(":")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[:int(count)].astype(float)


def nested_runs(out: Path) -> list:
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("augsearch-digits")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_confirmation_estimates_on_fresh_replicates_with_a_corrected_paired_ci(confirmed):
    """The verdict, computed independently from confirm.csv's rows with scipy: the best paired
    audit margin among the 2 candidates over replicates 1 and 2 (the search trial, replicate 0,
    only selected; the audit images selected nothing), a Student-t interval at 1 - 0.05/2 whose
    variance counts the seeds and the audit images (two-way random effects on each image's
    correctness, never below the seeds-only variance), the pool's margin beside it; the exported
    files follow the decision."""
    out, result = confirmed
    runs = read_csv(out / "confirm.csv")
    fresh: dict[str, dict[int, tuple[float, float]]] = {}
    for row in runs:
        if row["used_for"] == "estimation":
            assert row["source"] == "confirm" and row["status"] == "ok"
            fresh.setdefault(row["candidate"], {})[int(row["replicate"])] = (
                float(row["reward"]), float(row["audit_accuracy"]))
    assert len(fresh) == 3 and all(sorted(v) == [1, 2] for v in fresh.values())
    hits = {(row["candidate"], int(row["replicate"])): _unpacked(row["audit_hits"])
            for row in runs if row["used_for"] == "estimation"}
    assert len({len(h) for h in hits.values()}) == 1 and len(hits[next(iter(hits))]) >= 20
    selected = {r["candidate"] for r in runs if r["replicate"] == "0"}
    assert {r["source"] for r in runs if r["replicate"] == "0"} == {"search"}
    base = next(r["candidate"] for r in runs if r["reference"] == "base")
    assert selected == set(fresh)  # each candidate's search trial is listed, never used

    def diffs(key: str, i: int) -> list[float]:
        return [fresh[key][r][i] - fresh[base][r][i] for r in (1, 2)]

    best = max((k for k in fresh if k != base), key=lambda k: mean(diffs(k, 1)))
    grid = np.array([hits[(best, r)] - hits[(base, r)] for r in (1, 2)])  # seeds x images
    seeds_only = stats.tvar(grid.mean(axis=1)) / 2
    seed_ms = grid.shape[1] * stats.tvar(grid.mean(axis=1))
    image_ms = 2 * stats.tvar(grid.mean(axis=0))
    resid = grid - grid.mean(axis=1, keepdims=True) - grid.mean(axis=0) + grid.mean()
    resid_ms = (resid ** 2).sum() / (grid.shape[1] - 1)
    var = max(seeds_only, (seed_ms + image_ms - resid_ms) / grid.size)
    half = stats.t.ppf(1 - 0.025 / 2, 1) * math.sqrt(var)
    low, high = mean(diffs(best, 1)) - half, mean(diffs(best, 1)) + half
    expected = ("beats_base" if low > 0 else "kept_base" if mean(diffs(best, 1)) <= 0
                else "within_noise")
    exported = best if expected == "beats_base" else base
    prov = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]
    assert prov["trial"] == exported and prov["candidate"] == best
    assert prov["decided_on"] == "audit" and prov["verdict"] == expected
    assert prov["confirmed_over_seeds"] == 2 and prov["estimation_replicates"] == [1, 2]
    assert prov["margin_audit"] == pytest.approx(mean(diffs(best, 1)), abs=1e-6)
    assert prov["margin_audit_ci95"] == pytest.approx([low, high], abs=1e-6)
    assert prov["margin_reward"] == pytest.approx(mean(diffs(best, 0)), abs=1e-6)
    assert prov["correction"] == "bonferroni" and prov["correction_k"] == 2
    assert prov["exported"] == ("candidate" if expected == "beats_base" else "base")
    assert (out / "candidate_policy.yaml").exists() == (expected != "beats_base")
    summary = result.summary()
    assert ("exported: the base (crop/flip only)" in summary) == (expected != "beats_base")
    assert "decided on the audit images" in summary and "could find a margin of" in summary
    if expected == "kept_base":
        assert "no policy beat crop/flip; keep the base" in summary
    runs_ = nested_runs(out)
    confirming = [r for r in runs_ if r.data.tags.get("stage") == "confirm"]
    assert len(confirming) == sum(r["source"] == "confirm" for r in runs) == 6
    parent = [r for r in runs_ if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.data.tags["verdict"] == expected
    assert parent.data.tags["exported"] == prov["exported"]
    assert parent.data.tags["candidate"] == best
    assert parent.data.metrics["margin_audit"] == pytest.approx(mean(diffs(best, 1)), abs=1e-6)
    assert parent.data.tags["decided_on"] == "audit"
    assert parent.data.metrics["detectable_margin"] == pytest.approx(
        prov["detectable_margin"], abs=1e-6)
    assert parent.data.metrics["correction_k"] == 2


def test_replicate_s_shares_its_common_seed_across_the_base_and_every_candidate(confirmed):
    """What the trainings reported (the runs' common_seed tags): one common seed per replicate,
    the same for the base and each candidate, another for every replicate and for the search's
    own trials (replicate 0)."""
    out, _ = confirmed
    runs_ = nested_runs(out)
    by_replicate: dict[str, set[str]] = {}
    candidates_at: dict[str, set[str]] = {}
    for run in runs_:
        if run.data.tags.get("stage") != "confirm":
            continue
        rep = run.data.tags["replicate"]
        by_replicate.setdefault(rep, set()).add(run.data.tags["common_seed"])
        candidates_at.setdefault(rep, set()).add(run.data.tags["candidate"])
    assert sorted(by_replicate) == ["1", "2"]
    assert all(len(c) == 3 for c in candidates_at.values())  # the base and both candidates
    assert all(len(seeds) == 1 for seeds in by_replicate.values()), by_replicate
    searched = {r.data.tags["common_seed"] for r in runs_ if r.data.tags.get("stage") == "search"}
    assert len(searched) == 1
    seeds = [next(iter(by_replicate["1"])), next(iter(by_replicate["2"])), next(iter(searched))]
    assert len(set(seeds)) == 3, seeds


def shifted_digits(path: Path) -> Path:
    """scikit-learn's digits (real, 8x8), each pasted at a random place on a 16x16 canvas: a
    child trained on 50 of them without augmentation does not learn that a digit can be
    anywhere, and translations teach it; a policy of translations beats no augmentation by
    ~15 audit points (4 seeds: +7 to +24)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    canvas = np.zeros((len(d.images), 16, 16, 1), np.uint8)
    for i, img in enumerate((d.images * (255 / 16)).astype(np.uint8)):
        r, c = rng.integers(0, 9, 2)
        canvas[i, r:r + 8, c:c + 8, 0] = img
    y = d.target.astype(np.uint8)
    np.savez(path, x_train=canvas[:1497], y_train=y[:1497], x_test=canvas[1497:],
             y_test=y[1497:])
    return path


def test_a_policy_that_truly_helps_beats_the_base_on_real_trainings(ray_session, tmp_path):
    """Real children, a real confirmation, an effect built into the data: the search's best
    (translations, or the TrivialAugment arm made of them) beats the base on the audit images
    with an interval that counts the seeds and the images, and is exported."""
    space = subpolicy_digits(**{
        "policy.ops": [{"name": "TranslateX", "magnitude": [0.6, 0.6]},
                       {"name": "TranslateY", "magnitude": [0.6, 0.6]}],
        "policy.sub_policies": 1, "policy.ops_per_sub_policy": 2,
        "policy.search_probability": False, "policy.probability": [0.8, 0.8],
        "policy.batch_ops": {}, "child.base_augmentation": {"crop": False, "flip": False},
        "child.epochs": 60, "dataset.resize": False})
    out = tmp_path / "out"
    result = search(space, "tpe", data=str(shifted_digits(tmp_path / "shifted.npz")), trials=3,
                    seed=0, output=out, confirm=1, confirm_seeds=4)
    v = result.confirmation.verdict
    assert v.beats_base and v.images_counted and v.margin.ci_low > 0
    prov = yaml.safe_load((out / "best_policy.yaml").read_text())["provenance"]
    assert prov["verdict"] == "beats_base" and prov["exported"] == "candidate"
    assert prov["trial"] == prov["candidate"] == result.best_trial != "base"
    assert prov["margin_audit_ci95"][0] > 0 and prov["interval_counts"] == "seeds and images"
    assert not (out / "candidate_policy.yaml").exists()
    assert "exported: the best candidate" in result.summary()
    parent = [r for r in nested_runs(out) if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.data.tags["verdict"] == "beats_base"
    assert parent.data.metrics["margin_audit_ci95_low"] > 0
