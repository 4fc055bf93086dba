"""How an evaluation is reported: markdown tables, a plot, files, and MLflow metrics."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.evaluate.statistics import ArmSummary, Difference, Estimate, RunResult

REPORT_FILES = ("evaluation.md", "evaluation.csv", "differences.csv", "runs.csv",
                "evaluation.json", "evaluation.png")


def _num(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _ci(e: Estimate, signed: bool = False) -> str:
    if not math.isfinite(e.ci_low):
        return "— (1 seed)" if e.n == 1 else "—"
    return f"[{_num(e.ci_low, signed)}, {_num(e.ci_high, signed)}]"


def _mean_std(e: Estimate, signed: bool = False) -> str:
    if e.n == 0:
        return "—"
    std = f" ± {e.std:.4f}" if math.isfinite(e.std) else ""
    return _num(e.mean, signed) + std


def arms_table(summaries: Sequence[ArmSummary], tta: int) -> str:
    """Markdown: test accuracy per arm with its 95% CI, TTA beside it, seconds."""
    tta_head = f" | TTA ×{tta} (mean ± std) | TTA 95% CI" if tta else ""
    lines = [f"| arm | test accuracy (mean ± std) | 95% CI{tta_head} | seconds/run | seconds |",
             "|---|---:|---:|" + ("---:|---:|" if tta else "") + "---:|---:|"]
    for s in summaries:
        tta_cols = f" | {_mean_std(s.tta)} | {_ci(s.tta)}" if tta else ""
        lines.append(f"| {s.name} | {_mean_std(s.accuracy)} | {_ci(s.accuracy)}{tta_cols} | "
                     f"{_seconds(s.seconds_per_run)} | {_seconds(s.seconds_total)} |")
    return "\n".join(lines)


def differences_table(differences: Sequence[Difference], tta: int) -> str:
    """Markdown: each found policy minus each other arm, paired over seeds."""
    tta_head = f" | Δ with TTA ×{tta}" if tta else ""
    lines = [f"| policy | vs | Δ test accuracy | 95% CI (paired) | seeds better{tta_head} |",
             "|---|---|---:|---:|---:|" + ("---:|" if tta else "")]
    for d in differences:
        tta_col = f" | {_mean_std(d.tta_diff, True)}" if tta else ""
        lines.append(f"| {d.arm} | {d.other} | {_mean_std(d.diff, True)} | {_ci(d.diff, True)} | "
                     f"{d.wins}/{d.diff.n}{tta_col} |")
    return "\n".join(lines)


def plot(summaries: Sequence[ArmSummary], tta: int) -> Any:
    """Bar per arm: mean test accuracy with its 95% CI, seeds as dots, TTA bars beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.2 * len(summaries) + 2.0), 4.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(summaries))
    with_tta = tta > 0 and any(s.tta.n for s in summaries)
    width = 0.38 if with_tta else 0.6
    shift = width / 2 if with_tta else 0.0
    means = np.array([s.accuracy.mean for s in summaries])
    err = np.array([[s.accuracy.mean - s.accuracy.ci_low, s.accuracy.ci_high - s.accuracy.mean]
                    for s in summaries]).T
    colors = ["C0" if s.kind != "baseline" else "0.6" for s in summaries]
    ax.bar(x - shift, means, width, yerr=np.nan_to_num(err), capsize=4, color=colors,
           label="test accuracy (95% CI)")
    for k, s in enumerate(summaries):
        ax.scatter(np.full(len(s.accuracies), x[k] - shift), s.accuracies, s=12, color="k",
                   zorder=3)
    if with_tta:
        tta_means = np.array([s.tta.mean for s in summaries])
        tta_err = np.array([[s.tta.mean - s.tta.ci_low, s.tta.ci_high - s.tta.mean]
                            for s in summaries]).T
        ax.bar(x + shift, np.nan_to_num(tta_means), width, yerr=np.nan_to_num(tta_err),
               capsize=4, color="C2", alpha=0.75, label=f"with TTA ×{tta}")
    low = np.nanmin(np.concatenate([means, [s.tta.mean for s in summaries]]))
    ax.set_ylim(max(0.0, float(low) - 0.1) if math.isfinite(low) else 0.0, None)
    ax.set_xticks(x, [s.name for s in summaries], rotation=20, ha="right")
    n = max((s.accuracy.n for s in summaries), default=0)
    ax.set(ylabel="test accuracy", title=f"Test accuracy over {n} seed(s): found policies (blue) "
                                         f"vs baselines (grey)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


# ---------------------------------------------------------------- the result


@dataclass
class EvaluationResult:
    """Per-arm estimates, paired differences, every run, and where it was all written."""

    arms: list[ArmSummary]
    differences: list[Difference]
    runs: list[RunResult]
    settings: dict[str, Any]
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    run_id: str = ""

    def table(self) -> str:
        """Both tables and what each arm is, as markdown."""
        tta = int(self.settings.get("tta", 0))
        parts = [arms_table(self.arms, tta)]
        if self.differences:
            parts.append(differences_table(self.differences, tta))
        parts.append("\n".join(f"- `{s.name}`: {s.description}" for s in self.arms))
        return "\n\n".join(parts)

    def summary(self) -> str:
        s = self.settings
        head = (f"test accuracy on {s['test_images']} test images the search never touched; "
                f"{s['model']} trained {s['epochs']} epochs on {s['train_images']} training "
                f"images, seeds {s['seeds']}")
        files = "\n".join(f"  {name}: {path}" for name, path in self.files.items())
        return f"{head}\n\n{self.table()}\n\nMLflow run {self.run_id}; files:\n{files}"


def write_files(result: EvaluationResult) -> dict[str, Path]:
    """evaluation.md/.csv/.json, runs.csv, differences.csv and evaluation.png in the output."""
    out = result.output_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in REPORT_FILES}
    files["evaluation.md"].write_text(result.table() + "\n", encoding="utf-8")
    _csv(files["evaluation.csv"], [
        {"arm": s.name, "kind": s.kind, "n": s.accuracy.n, "mean": s.accuracy.mean,
         "std": s.accuracy.std, "ci_low": s.accuracy.ci_low, "ci_high": s.accuracy.ci_high,
         "tta_mean": s.tta.mean, "tta_ci_low": s.tta.ci_low, "tta_ci_high": s.tta.ci_high,
         "seconds_per_run": s.seconds_per_run, "seconds": s.seconds_total,
         "description": s.description} for s in result.arms])
    _csv(files["differences.csv"], [
        {"policy": d.arm, "vs": d.other, "n": d.diff.n, "diff_mean": d.diff.mean,
         "ci_low": d.diff.ci_low, "ci_high": d.diff.ci_high, "seeds_better": d.wins,
         "tta_diff_mean": d.tta_diff.mean} for d in result.differences])
    _csv(files["runs.csv"], [asdict(r) for r in result.runs])
    payload = {"settings": result.settings, "arms": [asdict(s) for s in result.arms],
               "differences": [asdict(d) for d in result.differences],
               "runs": [asdict(r) for r in result.runs]}
    files["evaluation.json"].write_text(json.dumps(_no_nan(payload), indent=2) + "\n",
                                        encoding="utf-8")
    plot(result.arms, int(result.settings.get("tta", 0))).savefig(files["evaluation.png"],
                                                                   dpi=110)
    return files


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        if not rows:
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _no_nan(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def mlflow_metrics(result: EvaluationResult) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    for s in result.arms:
        for key, e in (("accuracy", s.accuracy), ("tta_accuracy", s.tta)):
            out += [(f"{s.name}.{key}_{part}", getattr(e, part), 0)
                    for part in ("mean", "std", "ci_low", "ci_high")]
        out += [(f"{s.name}.seconds_per_run", s.seconds_per_run, 0),
                (f"{s.name}.seconds", s.seconds_total, 0)]
    for r in result.runs:  # step = seed: the per-seed accuracies
        out += [(f"{r.arm}.accuracy", r.accuracy, r.seed),
                (f"{r.arm}.tta_accuracy", r.tta_accuracy, r.seed)]
    for d in result.differences:
        key = f"diff.{d.arm}_vs_{d.other}"
        out += [(f"{key}.mean", d.diff.mean, 0), (f"{key}.ci_low", d.diff.ci_low, 0),
                (f"{key}.ci_high", d.diff.ci_high, 0), (f"{key}.seeds_better", d.wins, 0)]
    return out
