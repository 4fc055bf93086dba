"""The Tune-event state machine: what each trial event means for the trial's nested MLflow run.

It runs on Tune's driver event loop and only decides and queues: the first event of a trial
creates its run, each epoch queues its metrics, the end queues the final status, the policy
files and the preview; a resumed search continues the runs it left. The store calls themselves
run on the tracker's single writer thread (`search.tracking.writer`).

One `TrialRuns` is one stage of nested runs under a parent run: the search's trials, or a later
stage such as a confirmation of the best policies. A stage's `tags` are set on every run it
creates (for example `{"stage": "confirm"}`), and a result may carry its own `tags` dict, which
is passed through to its run.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from search.events import SearchListener, finite
from search.tracking.store import PARENT_TAG, TAG_MAX, Point, Store, now_ms
from search.tracking.writer import Writer
from search.trials.config import decode as decode_trial
from search.trials.config import policy_config
from search.trials.references import policy_of
from spaces.policy import Policy, export_albumentations, flat_params, save_policy
from spaces.schema import Space

TRIAL_TAG = "trial_id"
STAGE_TAG = "stage"  # which stage of nested runs a run belongs to
SEARCH_STAGE = "search"
RESULT_TAGS = "tags"  # a result's own tags for its run: {name: value}
# Reward first: the UI's compare view plots the first metric a run logged by default.
EPOCH_METRICS = ("reward", "val_accuracy", "audit_accuracy", "train_accuracy", "train_loss",
                 "train_val_gap", "images_per_s", "val_nll",
                 # reward.kind: self_supervised, every score of its last epoch
                 "probe_accuracy", "knn_accuracy", "rotation_accuracy")
FINAL_METRICS = ("reward", "audit_accuracy", "train_val_gap", "val_accuracy", "train_accuracy")


@dataclass
class TrialRun:
    """What the state machine knows of one trial's nested run."""

    trial_id: str
    config: dict[str, Any] | None
    run_id: str = ""  # set on the writer thread once the run exists
    last_epoch: int = 0  # the last epoch logged
    skip_until: int = 0  # a resumed run: epochs up to this one were logged before the resume
    done: bool = False
    reopen: bool = False  # a resumed run that ended in error: mark it RUNNING on its next event
    node: str = ""
    pending: _Pending = field(default_factory=lambda: _Pending())  # metrics and tags not yet
    # written: one log_batch for whatever events arrived before the writer got to them


class _Pending:
    """Metrics and tags of one run waiting for the writer; filled on Tune's event loop and
    drained on the writer thread, so that events that come close together (a one-result trial's
    result and end, a slow store's backlog) cost one store call, not one each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: list[Point] = []
        self.tags: dict[str, str] = {}
        self.scheduled = False

    def add(self, metrics: list[Point], tags: dict[str, str]) -> bool:
        """Add; True when a drain must be scheduled (none is waiting)."""
        with self.lock:
            self.metrics.extend(metrics)
            self.tags.update(tags)
            schedule, self.scheduled = not self.scheduled, True
            return schedule

    def take(self) -> tuple[list[list[Point]], dict[str, str]]:
        """The waiting tags, and the waiting metrics in rounds that each hold a (key, step) once
        (PBT may report an epoch again after an exploit: both values are kept, in order)."""
        with self.lock:
            metrics, tags = self.metrics, self.tags
            self.metrics, self.tags, self.scheduled = [], {}, False
        rounds: list[list[Point]] = []
        seen: list[set[tuple[str, int]]] = []
        for point in metrics:
            k = next((i for i, keys in enumerate(seen) if (point[0], point[2]) not in keys),
                     len(rounds))
            if k == len(rounds):
                rounds.append([])
                seen.append(set())
            rounds[k].append(point)
            seen[k].add((point[0], point[2]))
        return rounds, tags


class TrialRuns(SearchListener):
    """One stage of nested runs under `parent_id`, driven by trial events."""

    def __init__(self, store: Store, writer: Writer, parent_id: str, space: Space,
                 images: np.ndarray | None = None, tags: dict[str, str] | None = None,
                 name: str = "trial-{}") -> None:
        self.store = store
        self.writer = writer
        self.parent_id = parent_id
        self.space = space
        self.images = images
        self.tags = dict(tags or {})
        self.name = name
        self.runs: dict[str, TrialRun] = {}

    # ------------------------------------------------------------ resume

    def restore(self) -> None:
        """Take over the stage's runs from the store (a resumed search; on the writer thread).

        Finished trials are done; unfinished or errored ones (Tune re-runs them) continue their
        run from the last epoch it logged.
        """
        for run in self.store.children(self.parent_id):
            tags = run.data.tags
            if tags.get(STAGE_TAG, SEARCH_STAGE) != self.tags.get(STAGE_TAG, SEARCH_STAGE):
                continue  # another stage's run
            trial_id, status = tags.get(TRIAL_TAG, ""), run.info.status
            errored = status == "FAILED" and tags.get("status") == "error"
            last = max(self.store.steps(run.info.run_id, "val_accuracy"), default=0)
            self.runs[trial_id] = TrialRun(
                trial_id, None, run.info.run_id, last_epoch=last, skip_until=last,
                done=status == "FINISHED" or (status == "FAILED" and not errored),
                reopen=status != "RUNNING")

    # ------------------------------------------------------------ events

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Per-epoch metrics into the trial's run (created on first sight)."""
        run = self._run_for(trial_id, config, result)
        epoch = _epoch(result)
        # After a PBT exploit a trial may report an epoch again (it continues from the donor's
        # checkpoint): that is logged. Only epochs logged before a resume are skipped.
        if run is None or epoch is None or epoch <= run.skip_until:
            return
        self._policy_change(run, config, epoch)
        tags = {**self._node_tag(run, result), **_result_tags(result)}
        self._log(run, _metrics(result, EPOCH_METRICS, epoch), tags)
        run.last_epoch = epoch

    def trial_complete(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any]) -> None:
        """Final metrics, status, policy files and preview; the run ends FINISHED or FAILED."""
        run = self._run_for(trial_id, config, result)
        if run is None:
            return
        epoch = _epoch(result)
        epoch = run.last_epoch if epoch is None else epoch
        self._policy_change(run, config, epoch)
        metrics = [] if epoch == run.last_epoch and epoch > 0 else _metrics(
            result, FINAL_METRICS, epoch)
        ok = finite(result.get("reward"))
        tags = {"status": str(result.get("status") or ("ok" if ok else "failed")),
                **self._node_tag(run, result), **_result_tags(result)}
        if result.get("error"):
            tags["error"] = str(result["error"])
        self._log(run, metrics, tags)
        policy = self.decode(policy_config(config))
        if policy is not None:
            self.writer.submit(f"trial {run.trial_id}", self._log_policy_files, run, policy,
                               dict(result))
        self._end(run, "FINISHED" if ok else "FAILED")

    def trial_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        """The trial failed for good: its run ends FAILED with the error."""
        run = self._run_for(trial_id, config)
        if run is None:
            return
        self._log(run, tags={"status": "error", "error": error})
        self._end(run, "FAILED")

    def end_unended(self) -> None:
        """Runs whose end Tune never reported (an interrupted search) end KILLED."""
        for run in self.runs.values():
            if not run.done and not run.reopen:
                self._end(run, "KILLED")

    # ------------------------------------------------------------ the state machine

    def _run_for(self, trial_id: str, config: dict[str, Any],
                 result: dict[str, Any] | None = None) -> TrialRun | None:
        run = self.runs.get(trial_id)
        if run is None:
            run = self.runs[trial_id] = self._new_run(trial_id, config, result)
        elif run.done:
            return None  # finished before a resume, or a duplicate event
        elif run.reopen:
            self._submit(run, "reopen")
            self._log(run, tags={"status": "running"})
            run.reopen = False
        if run.config is None:
            run.config = policy_config(config)
        return run

    def _new_run(self, trial_id: str, config: dict[str, Any],
                 result: dict[str, Any] | None) -> TrialRun:
        cfg = policy_config(config)
        run = TrialRun(trial_id, cfg)
        # Runs start at the first event (after epoch 1): date them back to the trial's start.
        ran = (result or {}).get("time_total_s")
        start = now_ms() - int(1000 * ran) if finite(ran) and ran > 0 else None
        policy = self.decode(cfg)
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id, "status": "running",
                "policy": one_line(policy), **self.tags, **config_tags(config),
                **{k: str(result[k]) for k in SEED_TAGS if result and k in result}}
        params = {k: str(v) for k, v in flat_params(policy).items()} if policy else {}
        if not params:  # a config this space cannot decode: keep it readable anyway
            params = {k: str(v) for k, v in cfg.items()}
        self.writer.submit(f"trial {trial_id}", self._create, run, tags, start, params)
        return run

    def _create(self, run: TrialRun, tags: dict[str, str], start: int | None,
                params: dict[str, str]) -> None:
        run.run_id = self.store.create_run(self.name.format(run.trial_id), tags, start)
        self._drain(run, params)  # with what arrived meanwhile (a one-result trial: all of it)

    def _node_tag(self, run: TrialRun, result: dict[str, Any]) -> dict[str, str]:
        node = str(result.get("node_id") or "")
        if not node or node == run.node:
            return {}
        run.node = node
        return {"node_id": node}

    def _policy_change(self, run: TrialRun, config: dict[str, Any], epoch: int) -> None:
        """PBT replaces a trial's policy on exploit; params are immutable, so log a file."""
        cfg = policy_config(config)
        if run.config is None or cfg == run.config:
            run.config = cfg
            return
        run.config = cfg
        policy = self.decode(cfg)
        if policy is not None:
            self.writer.submit(f"trial {run.trial_id}", self._log_schedule_policy, run, policy,
                               epoch)
        self._log(run, tags={"policy": one_line(policy),
                                       "policy_changed_at_epoch": str(epoch)})

    def _end(self, run: TrialRun, status: str) -> None:
        self._submit(run, "end", status)
        run.done = True

    def _log(self, run: TrialRun, metrics: list[Point] | None = None,
             tags: dict[str, str] | None = None) -> None:
        """Queue metrics and tags for the run; one store call takes all that are waiting."""
        if run.pending.add(metrics or [], tags or {}):
            self.writer.submit(f"trial {run.trial_id}", self._drain, run)

    def _drain(self, run: TrialRun, params: dict[str, str] | None = None) -> None:
        rounds, tags = run.pending.take()
        if not run.run_id:
            return  # creating the run failed (already reported)
        first = rounds[0] if rounds else []
        if first or tags or params:
            self.store.log(run.run_id, metrics=first, params=params, tags=tags)
        for metrics in rounds[1:]:
            self.store.log(run.run_id, metrics=metrics)

    def _submit(self, run: TrialRun, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue `store.<method>(run_id, ...)`; the run id is read when the call runs."""
        self.writer.submit(f"trial {run.trial_id}", self._on_run, run, method, args, kwargs)

    def _on_run(self, run: TrialRun, method: str, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> None:
        if run.run_id:  # no run if creating it failed (already reported)
            getattr(self.store, method)(run.run_id, *args, **kwargs)

    # ------------------------------------------------------------ files (writer thread)

    def _log_policy_files(self, run: TrialRun, policy: Policy, result: dict[str, Any]) -> None:
        if not run.run_id:
            return
        provenance = {"space": self.space.name, "trial": run.trial_id, "mlflow_run": run.run_id,
                      **{k: round(float(result[k]), 6) for k in ("reward", "audit_accuracy")
                         if finite(result.get(k))}}
        policy = replace(policy, provenance=provenance)
        base, size = self.space.child.base_augmentation, self.space.dataset.image_size
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            export_albumentations(policy, base, size, d / "policy.json")
            save_policy(policy, d / "policy.yaml")
            if self.images is not None:
                from spaces.preview import preview

                preview(policy, self.images, d / "preview.png", base, size)
            if result.get("schedule"):
                (d / "schedule.json").write_text(str(result["schedule"]), encoding="utf-8")
            self.store.log_folder(run.run_id, d)

    def _log_schedule_policy(self, run: TrialRun, policy: Policy, epoch: int) -> None:
        if not run.run_id:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = save_policy(policy, Path(tmp) / f"policy_epoch{epoch}.yaml")
            self.store.log_file(run.run_id, path, "schedule")

    def decode(self, cfg: dict[str, Any]) -> Policy | None:
        try:
            return policy_of(self.space, cfg)
        except (KeyError, ValueError, TypeError):
            return None


# A trial's seeds (search.trials.seeds.trial_seeds), as tags: enough to retrain it identically.
SEED_TAGS = ("common_seed", "aug_seed")


def config_tags(config: dict[str, Any]) -> dict[str, str]:
    """Tags of what a trial's config carries besides its dimensions (`TrialConfig`): a reference
    arm, a confirmation run's candidate and fresh replicate, a density-matching fold model's
    fold."""
    trial = decode_trial(config)
    values = {"reference": trial.reference, "candidate": trial.candidate,
              "replicate": trial.replicate or None, "fold": trial.fold}
    return {tag: str(value) for tag, value in values.items() if value not in (None, "")}


def one_line(policy: Policy | None) -> str:
    return policy.describe().replace("\n", " | ")[:TAG_MAX] if policy is not None else "?"


def _metrics(result: dict[str, Any], keys: tuple[str, ...], step: int) -> list[Point]:
    return [(k, float(result[k]), step) for k in keys if finite(result.get(k))]


def _result_tags(result: dict[str, Any]) -> dict[str, str]:
    tags = result.get(RESULT_TAGS)
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _epoch(result: dict[str, Any]) -> int | None:
    epoch = result.get("epoch")
    if isinstance(epoch, bool) or not finite(epoch):
        return None
    return int(epoch)

