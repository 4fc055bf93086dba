"""Validation-overfit diagnostics as pure functions: leaderboard rows in, numbers and PNGs out.

Real policies (sampled from the digits space and decoded), real matplotlib; no MLflow store
(`test_tracking.py` checks what the tracker logs from these functions).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from search.stages.diagnostics import completion_order, overfit_diagnostics, summary, write_plots
from search.trials.compile import sample_configs
from spaces.schema import Space
from tests.conftest import subpolicy_digits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space() -> Space:
    return subpolicy_digits(**{"child.epochs": 3, "reward.last_epochs": 1})


def rows(space: Space, results: list[tuple[str, str, float, float]]) -> list[dict[str, Any]]:
    """Leaderboard rows (trial id, status, reward, audit accuracy) with real policy configs."""
    configs = sample_configs(space, len(results), seed=0)
    return [{"trial_id": t, "status": s, "reward": r, "audit_accuracy": a, "config": c}
            for (t, s, r, a), c in zip(results, configs, strict=True)]


def test_overfit_diagnostics_need_three_finished_trials_for_a_correlation(space: Space) -> None:
    cfg = sample_configs(space, 1, seed=0)[0]
    rows = [{"trial_id": "a", "status": "ok", "reward": 0.5, "audit_accuracy": 0.4, "config": cfg},
            {"trial_id": "b", "status": "failed", "reward": math.nan, "audit_accuracy": math.nan,
             "config": cfg},
            {"trial_id": "c", "status": "ok", "reward": 0.6, "audit_accuracy": 0.62,
             "config": cfg}]
    diag = overfit_diagnostics(rows, space)
    assert diag.spearman is None
    assert diag.best_so_far[0] == 0.5 and diag.best_so_far[1] == 0.5
    assert diag.best_so_far[2] == 0.6
    assert diag.selection_gap == pytest.approx(-0.02)
    assert diag.top_policies == 1 and diag.rest_policies == 1
    assert overfit_diagnostics(rows[:1], space).op_table == []


def test_completion_order_puts_trials_without_a_run_last(space: Space) -> None:
    board = rows(space, [("c", "ok", 0.5, 0.5), ("a", "ok", 0.6, 0.6), ("b", "ok", 0.7, 0.7)])
    ordered = completion_order(board, {"c": 20, "b": 10})
    assert [r["trial_id"] for r in ordered] == ["b", "c", "a"]


def test_summary_is_json_without_nan(space: Space) -> None:
    board = rows(space, [("a", "diverged", math.nan, math.nan), ("b", "ok", 0.6, 0.55)])
    text = json.dumps(summary(overfit_diagnostics(board, space)), allow_nan=False)
    data = json.loads(text)
    assert data["rewards"] == [None, 0.6] and data["best_reward_so_far"] == [None, 0.6]
    assert data["selection_gap"] == pytest.approx(0.05)
    assert "reward_audit_spearman" not in data  # two trials: no correlation, not a null


def test_write_plots_writes_pngs(space: Space, tmp_path: Path) -> None:
    board = rows(space, [("a", "ok", 0.5, 0.52), ("b", "failed", math.nan, math.nan),
                         ("c", "ok", 0.7, 0.64), ("d", "ok", 0.6, 0.61)])
    paths = write_plots(overfit_diagnostics(board, space), tmp_path / "plots")
    assert [p.name for p in paths] == ["overfit.png", "reward_vs_trial.png", "op_importance.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    single = write_plots(overfit_diagnostics(board[:1], space), tmp_path / "one")
    assert [p.name for p in single] == ["overfit.png", "reward_vs_trial.png"]  # no op table


def test_diagnostics_never_import_mlflow() -> None:
    code = ("import sys; from search.stages.diagnostics import overfit_diagnostics; "
            "assert 'mlflow' not in sys.modules and 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.parametrize(("score", "gap"), [("accuracy", 0.9 - 0.7), ("nll", None)])
def test_the_selection_gap_needs_a_reward_in_the_audit_accuracys_units(space: Space, score: str,
                                                                      gap: float | None) -> None:
    """Density matching's -NLL reward is no accuracy: its gap to the audit accuracy would mean
    nothing and is left out; the rank-based diagnostics stay."""
    dm = space.replace(**{"reward.kind": "density_matching", "policy.batch_ops": {},
                          "reward.density": {"score": score}})
    reward = {"accuracy": (0.9, 0.8, 0.6), "nll": (-0.2, -0.4, -0.9)}[score]
    diag = overfit_diagnostics(rows(dm, [("a", "ok", reward[0], 0.7), ("b", "ok", reward[1], 0.75),
                                         ("c", "ok", reward[2], 0.5)]), dm)
    assert diag.audit_regret == pytest.approx(0.05) and diag.spearman == pytest.approx(0.5)
    if gap is None:
        assert math.isnan(diag.selection_gap) and "selection_gap" not in diag.scalars()
    else:
        assert diag.selection_gap == pytest.approx(gap)
