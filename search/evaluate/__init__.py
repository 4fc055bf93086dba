"""Is a found policy worth its search? Retrain under it and under free baselines, then test.

`python -m search.evaluate --policy runs/c10/best_policy.yaml` retrains the child from scratch
on all of the dataset's training images under the found policy and under each baseline (no
augmentation, the space's crop/flip, crop/flip + Cutout, RandAugment, TrivialAugment,
AutoAugment) with the same budget and the same seeds, and measures accuracy on the test set the
search never touched: mean ± std, Student-t 95% confidence intervals, paired differences to each
baseline and the cost in seconds, optionally with test-time augmentation. The tables are
printed, written to the output directory and logged to MLflow as one run with a plot.

The package, by concern: `arms` (what is compared), `plan` (options, checks, the shared budget),
`runner` (training every arm, the whole evaluation), `statistics` (estimates over seeds, paired
differences), `report` (tables, plot, files, MLflow metrics), `cli` (the command line).
"""

from __future__ import annotations

from search.evaluate.arms import Arm, baseline_arm, policy_arm, scale_schedule
from search.evaluate.cli import build_parser, main
from search.evaluate.plan import (
    EvaluateOptions,
    Plan,
    evaluation_child,
    make_plan,
    policy_sources,
    resolve_space,
)
from search.evaluate.report import EvaluationResult, arms_table, differences_table, write_files
from search.evaluate.runner import evaluate, run_arm, tta_accuracy
from search.evaluate.statistics import (
    ArmSummary,
    Difference,
    Estimate,
    RunResult,
    estimate,
    summarize,
)

__all__ = ["Arm", "ArmSummary", "Difference", "Estimate", "EvaluateOptions", "EvaluationResult",
           "Plan", "RunResult", "arms_table", "baseline_arm", "build_parser", "differences_table",
           "estimate", "evaluate", "evaluation_child", "main", "make_plan", "policy_arm",
           "policy_sources", "resolve_space", "run_arm", "scale_schedule", "summarize",
           "tta_accuracy", "write_files"]
