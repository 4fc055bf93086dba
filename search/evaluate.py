"""Is a found policy worth its search? Retrain under it and under free baselines, then test.

`python -m search.evaluate --policy runs/c10/best_policy.yaml` retrains the child from scratch
on all of the dataset's training images under the found policy and under each baseline (no
augmentation, the space's crop/flip, RandAugment, TrivialAugment, AutoAugment) with the same
budget and the same seeds, and measures accuracy on the test set the search never touched:
mean ± std, Student-t 95% confidence intervals, paired differences to each baseline and the cost
in seconds, optionally with test-time augmentation. The tables are printed, written to the
output directory and logged to MLflow as one run with a plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from search.baselines import BASELINES, AlbumentationsFn, ImageFn, baseline, parse_baselines
from search.errors import USER_ERRORS, SearchError
from search.stats import Estimate, estimate
from search.trial import schedule_policies
from spaces.errors import SpaceError
from spaces.policy import Policy, build_pipeline, identity_policy, policy_from_dict
from spaces.schema import BaseAug, Space, load_space, parse_space

if TYPE_CHECKING:
    from children.datasets import Arrays, Splits
    from spaces.schema import ChildSpec, RewardSpec

DEFAULT_RUNS = Path("augsearch-runs")
TTA_COPIES = 8
_TTA_STREAM = 11  # seed-sequence key of the test-time augmentation copies


# ---------------------------------------------------------------- what is compared


@dataclass(frozen=True)
class Arm:
    """One way to train the child: a found policy (file) or a baseline.

    `augment()` gives a fresh per-image function that replaces the trainer's own pipeline
    (torchvision baselines, plain albumentations files), or None to use `base` + `policy`;
    `schedule(e)` gives a pbt schedule's policy of epoch e; `tta()` the per-image function
    test-time augmentation averages over (None: nothing random to average).
    """

    name: str
    kind: str  # policy | schedule | albumentations | baseline
    description: str
    base: BaseAug
    policy: Policy = field(default_factory=identity_policy)
    augment: Callable[[], ImageFn | None] = lambda: None
    tta: Callable[[], ImageFn | None] = lambda: None
    schedule: Callable[[int], Policy] | None = None
    source: str = ""

    @property
    def found(self) -> bool:
        """True for a policy a search found (compared against the baselines)."""
        return self.kind != "baseline"


def baseline_arm(name: str, space: Space) -> Arm:
    """The baseline `name` on the space's base augmentation and image size."""
    b = baseline(name, space.child.base_augmentation)
    size = space.dataset.image_size
    return Arm(b.name, "baseline", b.description, b.base, identity_policy(),
               augment=lambda: b.augment(size), tta=lambda: b.tta(size))


def policy_arm(label: str, path: str | Path, space: Space, epochs: int) -> Arm:
    """An arm from a policy file: augsearch YAML/JSON, a pbt schedule or albumentations JSON."""
    path = Path(path)
    data, fmt = _read(path)
    base, size = space.child.base_augmentation, space.dataset.image_size
    kind = data.get("format")
    if kind == "augsearch-policy":
        policy = policy_from_dict(data, str(path))
        text = policy.describe().replace("\n", " | ")
        return Arm(label, "policy", f"{path.name}: base + {text}", base, policy,
                   tta=lambda: _pipeline_fn(policy, base, size), source=str(path))
    if kind == "augsearch-schedule":
        at, entries = _schedule(data, path, space, epochs)
        last = at(epochs - 1)
        starts = ", ".join(str(start) for start, _ in entries)
        return Arm(label, "schedule", f"{path.name}: pbt schedule of {len(entries)} policies "
                   f"(from epochs {starts} of {epochs})", base, at(0), schedule=at,
                   tta=lambda: _pipeline_fn(last, base, size), source=str(path))
    if "transform" in data and "__version__" in data:
        count = len(_albumentations(path, fmt).transforms)

        def fresh() -> ImageFn:
            return AlbumentationsFn(_albumentations(path, fmt))

        return Arm(label, "albumentations", f"{path.name}: albumentations pipeline of {count} "
                   f"transforms, used as is (its own crop/flip)", base, identity_policy(),
                   augment=fresh, tta=fresh, source=str(path))
    raise SearchError(f"{path}: not a policy file; expected an augsearch policy "
                      f"(format: augsearch-policy), a pbt schedule (format: augsearch-schedule) "
                      f"or an albumentations pipeline saved with albumentations.save")


def _read(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        raise SearchError(f"{path}: no such policy file; pass --policy with the best_policy.yaml, "
                          f"best_policy.json or schedule.json a search wrote")
    fmt = "json" if path.suffix == ".json" else "yaml"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except OSError as err:
        raise SearchError(f"{path}: cannot read the policy file ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise SearchError(f"{path}: not valid {fmt.upper()}: {str(err).splitlines()[0]}; pass "
                          f"a policy file a search wrote") from None
    if not isinstance(data, dict):
        raise SearchError(f"{path}: not a policy file (a {type(data).__name__}, not a mapping); "
                          f"pass the best_policy.yaml, best_policy.json or schedule.json a "
                          f"search wrote")
    return data, fmt


def _albumentations(path: Path, fmt: str) -> Any:
    import albumentations as A

    try:
        return A.load(str(path), data_format=fmt)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise SearchError(f"{path}: albumentations cannot load this pipeline ({err!r}); save it "
                          f"with albumentations.save") from None


def _pipeline_fn(policy: Policy, base: BaseAug, size: int) -> ImageFn | None:
    pipeline = build_pipeline(policy, base, size)
    return AlbumentationsFn(pipeline) if pipeline.transforms else None


def scale_schedule(entries: list[tuple[int, dict[str, Any]]], from_epochs: int,
                   to_epochs: int) -> list[tuple[int, dict[str, Any]]]:
    """Map a schedule's first epochs from `from_epochs` to `to_epochs`, proportionally."""
    scaled = [(math.floor(start * to_epochs / from_epochs + 0.5), cfg) for start, cfg in entries]
    return [(0, cfg) if k == 0 else (start, cfg) for k, (start, cfg) in enumerate(scaled)]


def _schedule(data: dict[str, Any], path: Path, space: Space, epochs: int
              ) -> tuple[Callable[[int], Policy], list[tuple[int, dict[str, Any]]]]:
    try:
        total = int(data["epochs"])
        entries = [(int(e["epochs"][0]), dict(e["config"])) for e in data["entries"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise SearchError(f"{path}: a schedule needs 'epochs' and 'entries' of "
                          f"{{epochs: [start, end], config: {{...}}}}; this one is incomplete; "
                          f"pass the schedule.json a pbt search wrote") from None
    if not entries or total < 1:
        raise SearchError(f"{path}: the schedule holds no policy; pass the schedule.json a pbt "
                          f"search wrote")
    scaled = scale_schedule(sorted(entries, key=lambda e: e[0]), total, epochs)
    try:
        return schedule_policies(space, scaled), scaled
    except (KeyError, ValueError, TypeError) as err:
        raise SearchError(f"{path}: the schedule's policies do not fit space '{space.name}' "
                          f"(missing or unknown {err}); pass --space with the space the search "
                          f"used (its space.yaml)") from None


# ---------------------------------------------------------------- options and set-up


@dataclass(frozen=True)
class EvaluateOptions:
    """Everything an evaluation can be told besides the policy files."""

    space: str | Path | Space | None = None
    data: str | None = None
    data_dir: str | None = None
    baselines: str | Sequence[str] = BASELINES
    seeds: int = 3
    epochs: int | None = None
    model: str | None = None
    tta: int = 0  # test-time augmentation copies (0 = off)
    threads: int | None = None
    output: str | Path | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False


@dataclass(frozen=True)
class Plan:
    """What every arm shares: the child, the budget, the data, the seeds."""

    space: Space
    child: ChildSpec
    reward: RewardSpec
    splits: Splits
    epochs: int
    seeds: tuple[int, ...]
    tta: int
    threads: int | None


def policy_sources(policies: Any) -> list[tuple[str, Path]]:
    """(label, path) pairs from a path, a list of `[LABEL=]PATH` strings or a label → path map."""
    if policies is None:
        return []
    if isinstance(policies, (str, Path)):
        policies = [policies]
    if not isinstance(policies, Mapping):
        policies = list(policies)
    if isinstance(policies, Mapping):
        pairs = [(str(k), Path(v)) for k, v in policies.items()]
    else:
        pairs = []
        for k, item in enumerate(policies, 1):
            text = str(item)
            label = "policy" if len(policies) == 1 else f"policy{k}"
            if "=" in text and not Path(text).exists():
                label, text = text.split("=", 1)
            pairs.append((label.strip(), Path(text)))
    labels = [label for label, _ in pairs]
    bad = [label for label in labels if not label or label in BASELINES]
    if bad or len(set(labels)) != len(labels):
        raise SearchError(f"policy labels must be distinct, non-empty and not a baseline name, "
                          f"got {labels}; write --policy LABEL=FILE")
    return pairs


def resolve_space(space: str | Path | Space | None, sources: list[tuple[str, Path]]) -> Space:
    """--space, else the space.yaml a search left beside the policy, else its provenance."""
    if isinstance(space, Space):
        return space
    if space is not None:
        return load_space(space)
    for _, path in sources:
        beside = path.parent / "space.yaml"
        if beside.is_file():
            return parse_space(beside.read_text(encoding="utf-8"), str(beside))
    for _, path in sources:
        name = (_read(path)[0].get("provenance") or {}).get("space")
        if name:
            try:
                return load_space(str(name))
            except SpaceError:
                break
    if sources:
        raise SearchError(f"{sources[0][1]}: cannot tell which space this policy was searched "
                          f"in (no space.yaml beside it); pass --space NAME|PATH")
    return load_space("digits")


def make_plan(space: Space, opts: EvaluateOptions) -> Plan:
    """The child with --epochs/--model applied and the full training split against the test set.

    The full training split is every training image of the dataset (the search's train subset,
    validation pool and audit set together). The trainer's per-epoch "validation" runs on the
    test set, so its final value is the plain test accuracy; nothing selects on it (the budget is
    fixed).
    """
    from children.datasets import Arrays, Splits, load_dataset

    child = evaluation_child(space, opts)
    epochs = child.epochs
    data = load_dataset(space.dataset, data=opts.data, data_dir=opts.data_dir)
    test = Arrays(data.x_test, data.y_test)
    train = Arrays(data.x_train, data.y_train)
    splits = Splits(train, test, Arrays(data.x_train[:0], data.y_train[:0]), test,
                    space.dataset.num_classes)
    reward = space.reward.model_copy(update={"val_sample_size": len(test), "last_epochs": 1,
                                             "max_train_val_gap": None})
    return Plan(space, child, reward, splits, epochs, tuple(range(opts.seeds)), opts.tta,
                opts.threads)


def evaluation_child(space: Space, opts: EvaluateOptions) -> ChildSpec:
    """The space's child with --model and --epochs applied, checked."""
    from children.models import model_names

    epochs = opts.epochs if opts.epochs is not None else space.child.epochs
    model = opts.model or space.child.model
    if model not in model_names():
        raise SearchError(f"unknown child model '{model}'; known models: "
                          f"{', '.join(model_names())}")
    _check_counts(opts, epochs)
    return space.child.model_copy(update={"model": model, "epochs": epochs})


def _check_counts(opts: EvaluateOptions, epochs: int) -> None:
    for flag, value, low in (("--seeds", opts.seeds, 1), ("--epochs", epochs, 1),
                             ("--tta", opts.tta, 0)):
        if value < low:
            raise SearchError(f"{flag} must be at least {low}, got {value}")


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class RunResult:
    """One child trained under one arm with one seed."""

    arm: str
    seed: int
    accuracy: float  # plain test accuracy
    tta_accuracy: float  # NaN without test-time augmentation
    train_accuracy: float
    train_loss: float  # last epoch's: tells arms apart where accuracies tie on tiny data
    seconds: float  # training, test and TTA


def run_arm(arm: Arm, plan: Plan, seed: int) -> RunResult:
    """Train the child from scratch under `arm` with `seed` and test it (with TTA if asked)."""
    from children.train import train_child

    tta: dict[str, float] = {}

    def on_end(predict: Callable[[np.ndarray], np.ndarray]) -> None:
        fn = arm.tta() if plan.tta else None
        if fn is not None:
            tta["accuracy"] = tta_accuracy(predict, fn, plan.splits.test, plan.tta, seed)

    child = plan.child.model_copy(update={"base_augmentation": arm.base})
    started = time.perf_counter()
    metrics = train_child(child, plan.reward, arm.policy, plan.splits, seed=seed,
                          threads=plan.threads, epochs=plan.epochs, schedule=arm.schedule,
                          augment=arm.augment(), on_end=on_end)
    return RunResult(arm.name, seed, metrics.val_accuracy, tta.get("accuracy", math.nan),
                     metrics.train_accuracy, metrics.history[-1].train_loss,
                     time.perf_counter() - started)


def tta_accuracy(predict: Callable[[np.ndarray], np.ndarray], fn: ImageFn, test: Arrays,
                 copies: int, seed: int) -> float:
    """Accuracy of class probabilities averaged over `copies` augmented copies of each image."""
    import torch

    total: Any = 0.0
    for k in range(copies):
        copy_seed = int(np.random.SeedSequence((seed, _TTA_STREAM, k)).generate_state(1)[0])
        reseed = getattr(fn, "set_random_seed", None)
        if reseed is not None:
            reseed(copy_seed)
        torch.manual_seed(copy_seed)  # torchvision ops draw from torch's global RNG
        images = np.empty_like(test.x)
        for i, image in enumerate(test.x):
            images[i] = np.asarray(fn(np.array(image))).reshape(images.shape[1:])
        total = total + predict(images)
    return float((np.asarray(total).argmax(1) == test.y).mean())


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ArmSummary:
    """An arm's test accuracy over the seeds (and with TTA), and what it cost."""

    name: str
    kind: str
    description: str
    accuracies: list[float]
    accuracy: Estimate
    tta: Estimate
    seconds_per_run: float
    seconds_total: float


@dataclass(frozen=True)
class Difference:
    """A found policy minus another arm, paired by seed."""

    arm: str
    other: str
    diff: Estimate
    wins: int  # seeds where the policy is more accurate
    tta_diff: Estimate


def summarize(arms: Sequence[Arm], runs: Sequence[RunResult]
              ) -> tuple[list[ArmSummary], list[Difference]]:
    """Per-arm estimates, and each found policy against every baseline and later policy."""
    by_arm = {arm.name: [r for r in runs if r.arm == arm.name] for arm in arms}
    summaries = []
    for arm in arms:
        rs = by_arm[arm.name]
        seconds = [r.seconds for r in rs]
        summaries.append(ArmSummary(
            arm.name, arm.kind, arm.description, [r.accuracy for r in rs],
            estimate([r.accuracy for r in rs]), estimate([r.tta_accuracy for r in rs]),
            float(np.mean(seconds)) if seconds else math.nan, float(np.sum(seconds))))
    differences = []
    for i, arm in enumerate(arms):
        if not arm.found:
            continue
        for other in arms:
            if other is arm or (other.found and arms.index(other) < i):
                continue
            pairs = _paired(by_arm[arm.name], by_arm[other.name])
            diffs = [a.accuracy - b.accuracy for a, b in pairs]
            tta = [a.tta_accuracy - b.tta_accuracy for a, b in pairs]
            differences.append(Difference(arm.name, other.name, estimate(diffs),
                                          sum(d > 0 for d in diffs), estimate(tta)))
    return summaries, differences


def _paired(a: list[RunResult], b: list[RunResult]) -> list[tuple[RunResult, RunResult]]:
    seeds = {r.seed: r for r in b}
    return [(r, seeds[r.seed]) for r in a if r.seed in seeds]


# ---------------------------------------------------------------- tables, files, plot


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
    files = {"evaluation.md": out / "evaluation.md", "evaluation.csv": out / "evaluation.csv",
             "differences.csv": out / "differences.csv", "runs.csv": out / "runs.csv",
             "evaluation.json": out / "evaluation.json", "evaluation.png": out / "evaluation.png"}
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


def _metrics(result: EvaluationResult) -> list[tuple[str, float, int]]:
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


# ---------------------------------------------------------------- the whole evaluation


def evaluate(policies: Any = (), **options: Any) -> EvaluationResult:
    """Retrain under each policy file and baseline, seeds 0..N-1 each, and test.

    `policies` is a path, a list of `[LABEL=]PATH` or a label → path mapping; keyword options
    are those of `EvaluateOptions` (the CLI flags). Raises SearchError, SpaceError or DataError
    for bad input, before any child trains.
    """
    try:
        opts = EvaluateOptions(**options)
    except TypeError as err:
        raise SearchError(f"{err}; valid options: "
                          f"{', '.join(EvaluateOptions.__dataclass_fields__)}") from None
    names = parse_baselines(opts.baselines)
    sources = policy_sources(policies)
    space = resolve_space(opts.space, sources)
    epochs = evaluation_child(space, opts).epochs
    arms = [policy_arm(label, path, space, epochs) for label, path in sources]
    arms += [baseline_arm(name, space) for name in names]
    if not arms:
        raise SearchError("nothing to evaluate: pass --policy FILE and/or --baselines")
    output = _output_dir(opts)
    from search.tracking import EvaluationLog

    log = EvaluationLog.connect(opts.tracking_uri, opts.experiment or
                                f"augsearch-{space.name}-eval", output)
    plan = make_plan(space, opts)
    started = time.perf_counter()
    runs = []
    for seed in plan.seeds:  # arms interleaved per seed: machine load drifts evenly over arms
        for arm in arms:
            run = run_arm(arm, plan, seed)
            runs.append(run)
            if not opts.quiet:
                tta = f" (TTA {run.tta_accuracy:.4f})" if math.isfinite(run.tta_accuracy) else ""
                print(f"[augsearch] {arm.name} seed {seed}: test accuracy {run.accuracy:.4f}"
                      f"{tta}, {run.seconds:.0f} s", file=sys.stderr, flush=True)
    summaries, differences = summarize(arms, runs)
    settings = _settings(plan, sources, names, opts, time.perf_counter() - started)
    result = EvaluationResult(summaries, differences, runs, settings, output)
    result.files = write_files(result)
    result.run_id = log.log(output.name, settings, _metrics(result), list(result.files.values()))
    return result


def _output_dir(opts: EvaluateOptions) -> Path:
    if opts.output is not None:
        return Path(opts.output).resolve()
    return (DEFAULT_RUNS / f"eval-{time.strftime('%Y%m%d-%H%M%S')}").resolve()


def _settings(plan: Plan, sources: list[tuple[str, Path]], baselines: list[str],
              opts: EvaluateOptions, seconds: float) -> dict[str, Any]:
    c = plan.child
    return {"space": plan.space.name, "policies": ",".join(f"{k}={v}" for k, v in sources),
            "baselines": ",".join(baselines), "seeds": len(plan.seeds), "epochs": plan.epochs,
            "model": c.model, "width": c.width, "batch_size": c.batch_size,
            "optimizer": c.optimizer.name, "lr": c.optimizer.lr, "schedule": c.schedule,
            "tta": plan.tta, "data": opts.data or plan.space.dataset.name,
            "train_images": len(plan.splits.train), "test_images": len(plan.splits.test),
            "threads": plan.threads, "seconds": round(seconds, 1)}


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search.evaluate",
        description="Retrain the child from scratch on all training images under a found "
                    "policy and under standard baselines (same budget, same seeds) and compare "
                    "their accuracy on the test set the search never touched.")
    p.add_argument("--policy", action="append", default=[], metavar="[LABEL=]FILE",
                   help="best_policy.yaml (augsearch), best_policy.json (plain albumentations) "
                        "or schedule.json (pbt); repeat to compare several")
    p.add_argument("--space", help="built-in space name or space YAML (default: the space.yaml "
                                   "beside the policy, else the policy's provenance)")
    p.add_argument("--data", help="an .npz file or image folder overriding the space's dataset")
    p.add_argument("--data-dir", help="where built-in datasets are cached or downloaded")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"comma-separated, from {','.join(BASELINES)} (default: all; '' for "
                        f"none)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds 0..N-1, the same for every arm (default: 3)")
    p.add_argument("--epochs", type=int, help="child epochs (default: the space's)")
    p.add_argument("--model", help="child model, e.g. wrn_28_10 for a final run (default: the "
                                   "space's)")
    p.add_argument("--tta", type=int, nargs="?", const=TTA_COPIES, default=0, metavar="K",
                   help=f"also report test-time augmentation: class probabilities averaged "
                        f"over K augmented copies of each test image (K default {TTA_COPIES})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--output", help="output directory (default: ./augsearch-runs/eval-<time>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: a SQLite store in the "
                                          "output directory)")
    p.add_argument("--experiment", help="MLflow experiment (default: augsearch-<space>-eval)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args.policy, space=args.space, data=args.data, data_dir=args.data_dir,
                          baselines=args.baselines, seeds=args.seeds, epochs=args.epochs,
                          model=args.model, tta=args.tta, threads=args.threads,
                          output=args.output, tracking_uri=args.tracking_uri,
                          experiment=args.experiment)
    except USER_ERRORS as err:
        print(f"augsearch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("augsearch: evaluation interrupted", file=sys.stderr)
        return 130
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
