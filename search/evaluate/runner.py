"""Running an evaluation: every arm under every seed, then the statistics and the report.

`evaluate` checks everything first (baselines, policy files, space, model, counts, output
directory, tracking URI, data), before any child trains, and creates the output directory and
the MLflow store only once there are results, so a refused evaluation leaves nothing behind.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import SearchError
from search.evaluate.arms import Arm, baseline_arm, policy_arm
from search.evaluate.baselines import ImageFn, parse_baselines
from search.evaluate.plan import (
    EvaluateOptions,
    Plan,
    evaluation_child,
    load_data,
    make_plan,
    policy_sources,
    resolve_space,
)
from search.evaluate.report import (
    REPORT_FILES,
    EvaluationResult,
    mlflow_metrics,
    write_files,
)
from search.evaluate.statistics import RunResult, summarize
from search.prepare.paths import check_creatable, default_output
from spaces.schema import Space

if TYPE_CHECKING:
    from children.datasets import Arrays

_TTA_STREAM = 11  # seed-sequence key of the test-time augmentation copies


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



def evaluate(policies: Any = (), **options: Any) -> EvaluationResult:
    """Retrain under each policy file and baseline, seeds 0..N-1 each, and test.

    `policies` is a path, a list of `[LABEL=]PATH` or a label → path mapping; keyword options
    are those of `EvaluateOptions` (the CLI flags). Raises SearchError, SpaceError or DataError
    for bad input, before any child trains or any file is written.
    """
    unknown = sorted(set(options) - set(EvaluateOptions.__dataclass_fields__))
    if unknown:
        raise SearchError(f"unknown option(s) {', '.join(unknown)}; valid options: "
                          f"{', '.join(EvaluateOptions.__dataclass_fields__)}")
    opts = EvaluateOptions(**options)
    plan, arms, sources, names, output = _prepare(policies, opts)
    started = time.perf_counter()
    runs = []
    for run in _runs(policies, opts, plan, arms):
        runs.append(run)
        if not opts.quiet:
            tta = f" (TTA {run.tta_accuracy:.4f})" if math.isfinite(run.tta_accuracy) else ""
            print(f"[augsearch] {run.arm} seed {run.seed}: test accuracy {run.accuracy:.4f}"
                  f"{tta}, {run.seconds:.0f} s ({len(runs)}/{len(arms) * len(plan.seeds)})",
                  file=sys.stderr, flush=True)
    summaries, differences = summarize(arms, runs)
    settings = _settings(plan, sources, names, opts, time.perf_counter() - started)
    result = EvaluationResult(summaries, differences, runs, settings, output)
    result.files = write_files(result)
    from search.tracking import EvaluationLog

    log = EvaluationLog.connect(opts.tracking_uri, _experiment(plan.space, opts), output)
    result.run_id = log.log(output.name, settings, mlflow_metrics(result),
                            list(result.files.values()))
    return result


def _runs(policies: Any, opts: EvaluateOptions, plan: Plan, arms: list[Arm]
          ) -> Iterator[RunResult]:
    """Every arm under every seed, arms interleaved per seed (machine load drifts evenly over
    arms); with `workers` > 1 in that many processes, each rebuilding the arms it trains."""
    jobs = [(k, seed) for seed in plan.seeds for k in range(len(arms))]
    if opts.workers <= 1:
        for k, seed in jobs:
            yield run_arm(arms[k], plan, seed)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no inherited torch/OpenCV thread state
    with ProcessPoolExecutor(opts.workers, mp_context=context, initializer=_start_worker,
                             initargs=(policies, opts, plan)) as pool:
        yield from pool.map(_work, jobs)


_WORKER: dict[str, Any] = {}  # a worker process's plan and arms, built once


def _start_worker(policies: Any, opts: EvaluateOptions, plan: Plan) -> None:
    space = plan.space
    epochs = plan.epochs
    arms = [policy_arm(label, path, space, epochs) for label, path in policy_sources(policies)]
    arms += [baseline_arm(name, space) for name in parse_baselines(opts.baselines)]
    _WORKER.update(plan=plan, arms=arms)


def _work(job: tuple[int, int]) -> RunResult:
    k, seed = job
    return run_arm(_WORKER["arms"][k], _WORKER["plan"], seed)


def _prepare(policies: Any, opts: EvaluateOptions
             ) -> tuple[Plan, list[Arm], list[tuple[str, Path]], list[str], Path]:
    """Every check an evaluation makes before it trains; nothing is created."""
    names = parse_baselines(opts.baselines)
    sources = policy_sources(policies)
    space = resolve_space(opts.space, sources)
    epochs = evaluation_child(space, opts).epochs
    arms = [policy_arm(label, path, space, epochs) for label, path in sources]
    arms += [baseline_arm(name, space) for name in names]
    if not arms:
        raise SearchError("nothing to evaluate; pass --policy FILE and/or --baselines")
    output = _output(opts)
    if opts.tracking_uri is not None:
        from search.tracking import check_experiment, check_uri

        check_uri(opts.tracking_uri)
        check_experiment(opts.tracking_uri, _experiment(space, opts))
    plan = make_plan(space, opts, load_data(space, opts))
    return plan, arms, sources, names, output


def _output(opts: EvaluateOptions) -> Path:
    """The output directory: new, or one that holds no earlier evaluation."""
    if opts.output is None:
        output = default_output("eval")
        check_creatable(output, f"the output directory {output}", "pass --output DIR")
        return output
    output = Path(opts.output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise SearchError(f"--output {output} is a file, not a directory; pass --output with a "
                          f"directory path")
    found = [n for n in (*REPORT_FILES, "mlflow.db") if (output / n).exists()]
    if found:
        raise SearchError(f"--output {output} already holds an evaluation ({', '.join(found)}); "
                          f"pass --output with a new directory")
    check_creatable(output / "evaluation.md", f"--output {output}",
                    "pass --output with a writable path")
    return output


def _experiment(space: Space, opts: EvaluateOptions) -> str:
    return opts.experiment or f"augsearch-{space.name}-eval"


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
