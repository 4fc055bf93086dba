"""The MLflow adapter: the only module that imports `mlflow`.

One parent run per search and one nested run per trial, written by a single writer (this tracker,
called from the Tune callback in the driver), so a SQLite store never sees two writers at once.
Every call names its run id explicitly: events from concurrent trials arrive interleaved, so the
fluent API's "active run" would attribute them to the wrong trial.

At the end the parent run gets the best policy, the leaderboard and the validation-overfit
diagnostics that `search.diagnostics` computes and plots (pure functions, no MLflow).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from search.diagnostics import (
    Diagnostics,
    completion_order,
    op_importance,
    overfit_diagnostics,
    summary,
    write_plots,
)
from search.errors import SearchError
from search.events import finite
from search.outputs import SearchResult
from search.references import policy_of, reference_of
from search.trial import policy_config
from spaces.policy import Policy, export_albumentations, flat_params, save_policy
from spaces.schema import Space

PARENT_FILE = "mlflow_parent.json"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "trial_id"
# Reward first: the UI's compare view plots the first metric a run logged by default.
EPOCH_METRICS = ("reward", "val_accuracy", "audit_accuracy", "train_accuracy", "train_loss",
                 "train_val_gap", "images_per_s")
FINAL_METRICS = ("reward", "audit_accuracy", "train_val_gap", "val_accuracy", "train_accuracy")
VERSIONED = ("augsearch", "ray", "optuna", "torch", "albumentations", "mlflow", "numpy")
PREVIEW_IMAGES = 8
HEALTH_TIMEOUT_S = 5.0
_BATCH = 100  # MLflow's limit of params + tags per log_batch call
_TAG_MAX = 5000


def default_uri(output: Path) -> str:
    """The local store of a search: a SQLite database in its output directory (absolute)."""
    return f"sqlite:///{Path(output).resolve()}/{DB_FILE}"


@dataclass
class _TrialRun:
    """What the tracker remembers of a trial's nested run."""

    run_id: str
    trial_id: str
    config: dict[str, Any] | None
    last_epoch: int = 0  # the last epoch logged
    skip_until: int = 0  # a resumed run: epochs up to this one were logged before the resume
    done: bool = False
    reopen: bool = False  # a resumed run that ended in error: mark it RUNNING on its next event
    node: str = ""


class Tracker:
    """Logs a search into MLflow: parent run, nested trial runs, artifacts, diagnostics."""

    def __init__(self, client: MlflowClient, uri: str, experiment_id: str, space: Space,
                 output: Path) -> None:
        self.client = client
        self.uri = uri
        self.experiment_id = experiment_id
        self.space = space
        self.output = output
        self.parent_id = ""
        self.errors: list[str] = []
        self._runs: dict[str, _TrialRun] = {}
        self._images: np.ndarray | None = None

    # ------------------------------------------------------------ connecting

    @classmethod
    def connect(cls, tracking_uri: str | None, experiment: str | None, space: Space,
                output: Path) -> Tracker:
        """Open (or create) the store and experiment; fail fast if the server is unreachable."""
        # MLflow's INFO lines (creating/upgrading the SQLite tables) are noise in the CLI.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        output = Path(output).resolve()
        uri = tracking_uri or default_uri(output)
        if uri.startswith(("http://", "https://")):
            _check_server(uri)
        if uri.startswith("sqlite:"):
            folder = _sqlite_path(uri).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SearchError(f"cannot create the MLflow store in {folder} ({err.strerror}); "
                                  f"choose a writable --output or pass --tracking-uri") from None
        name = experiment or f"augsearch-{space.name}"
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, name, _artifact_location(uri, output))
        except MlflowException as err:
            raise SearchError(f"cannot use the MLflow tracking store {uri} "
                              f"({_first_line(err)}); check --tracking-uri or drop it to use a "
                              f"local SQLite store") from None
        return cls(client, uri, experiment_id, space, output)

    # ------------------------------------------------------------ the parent run

    def start(self, space: Space, searcher: str, opts: Any, splits: Any, resume: bool) -> None:
        """Create the parent run (or reopen it on resume) and log what the search is."""
        self.space = space
        self._images = preview_images(splits.train.x, splits.train.y, PREVIEW_IMAGES)
        parent = self._reopen_parent() if resume else None
        if parent is not None:
            self.parent_id = parent
            self.client.update_run(parent, status="RUNNING")
            resumed = int(self.client.get_run(parent).data.tags.get("resumed", "0")) + 1
            self._log_batch(parent, tags={"resumed": str(resumed), "status": "running"})
            self._load_trials()
            return
        run = self.client.create_run(self.experiment_id, run_name=self.output.name,
                                     tags=_parent_tags(searcher))
        self.parent_id = run.info.run_id
        self._log_batch(self.parent_id, params=_parent_params(space, searcher, opts, self.output))
        text = yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False)
        self.client.log_text(self.parent_id, text, "space.yaml")
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / PARENT_FILE).write_text(json.dumps(
            {"run_id": self.parent_id, "experiment_id": self.experiment_id, "tracking_uri":
             self.uri}, indent=2) + "\n", encoding="utf-8")

    def _reopen_parent(self) -> str | None:
        path = self.output / PARENT_FILE
        if not path.exists():
            return None
        run_id = json.loads(path.read_text(encoding="utf-8")).get("run_id", "")
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None  # another store: start a new parent there
        return run_id if run.info.experiment_id == self.experiment_id else None

    def _load_trials(self) -> None:
        """On resume: finished trials are done; unfinished or errored ones continue their run."""
        for run in self.nested_runs():
            trial_id = run.data.tags.get(TRIAL_TAG, "")
            status = run.info.status
            errored = status == "FAILED" and run.data.tags.get("status") == "error"
            last = max((m.step for m in self.client.get_metric_history(
                run.info.run_id, "val_accuracy")), default=0)
            self._runs[trial_id] = _TrialRun(
                run.info.run_id, trial_id, None, last_epoch=last, skip_until=last,
                done=status == "FINISHED" or (status == "FAILED" and not errored),
                reopen=status != "RUNNING")

    def nested_runs(self) -> list[Any]:
        """The trial runs of this search, from the store."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.parent_id}'",
                max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # ------------------------------------------------------------ trial events

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Per-epoch metrics into the trial's nested run (created on first sight)."""
        self._guard(trial_id, self._result, trial_id, config, result)

    def trial_complete(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any]) -> None:
        """Final metrics, status, policy files and preview; the run ends FINISHED or FAILED."""
        self._guard(trial_id, self._complete, trial_id, config, result)

    def trial_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        """The trial crashed (after Tune's retries): its run ends FAILED with the error."""
        self._guard(trial_id, self._error, trial_id, config, error)

    def _guard(self, trial_id: str, method: Any, *args: Any) -> None:
        # A tracking failure must not kill a search whose results still reach leaderboard.csv;
        # it is reported loudly and counted on the parent run.
        try:
            method(*args)
        except (MlflowException, OSError) as err:
            msg = f"MLflow logging failed for trial {trial_id}: {_first_line(err)}"
            self.errors.append(msg)
            print(f"[augsearch] warning: {msg}; the search goes on (results are also in "
                  f"leaderboard.csv)", file=sys.stderr, flush=True)

    def _result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        run = self._run_for(trial_id, config, result)
        epoch = _epoch(result)
        # After a PBT exploit a trial may report an epoch again (it continues from the donor's
        # checkpoint): that is logged. Only epochs logged before a resume are skipped.
        if run is None or epoch is None or epoch <= run.skip_until:
            return
        self._policy_change(run, config, epoch)
        tags = self._node_tag(run, result)
        self._log_batch(run.run_id, metrics=_metrics(result, EPOCH_METRICS, epoch), tags=tags)
        run.last_epoch = epoch

    def _complete(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        run = self._run_for(trial_id, config, result)
        if run is None:
            return
        epoch = _epoch(result)
        epoch = run.last_epoch if epoch is None else epoch
        self._policy_change(run, config, epoch)
        metrics = [] if epoch == run.last_epoch and epoch > 0 else _metrics(
            result, FINAL_METRICS, epoch)
        ok = finite(result.get("reward"))
        status = str(result.get("status") or ("ok" if ok else "failed"))
        tags = {"status": status, **self._node_tag(run, result)}
        if result.get("error"):
            tags["error"] = str(result["error"])[:_TAG_MAX]
        self._log_batch(run.run_id, metrics=metrics, tags=tags)
        self._log_policy_files(run, config, result)
        self._end(run, "FINISHED" if ok else "FAILED")

    def _error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        run = self._run_for(trial_id, config)
        if run is None:
            return
        self._log_batch(run.run_id, tags={"status": "error", "error": error[:_TAG_MAX]})
        self._end(run, "FAILED")

    def _end(self, run: _TrialRun, status: str) -> None:
        self.client.set_terminated(run.run_id, status=status)
        run.done = True

    def _run_for(self, trial_id: str, config: dict[str, Any],
                 result: dict[str, Any] | None = None) -> _TrialRun | None:
        run = self._runs.get(trial_id)
        if run is None:
            run = self._runs[trial_id] = self._new_trial_run(trial_id, config, result)
        elif run.done:
            return None  # finished before a resume, or a duplicate event
        elif run.reopen:
            self.client.update_run(run.run_id, status="RUNNING")
            self.client.set_tag(run.run_id, "status", "running")
            run.reopen = False
        if run.config is None:
            run.config = policy_config(config)
        return run

    def _new_trial_run(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any] | None) -> _TrialRun:
        cfg = policy_config(config)
        # Runs start at the first event (after epoch 1): date them back to the trial's start.
        ran = (result or {}).get("time_total_s")
        start = _now() - int(1000 * ran) if finite(ran) and ran > 0 else None
        policy = self._decode(cfg)
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id, "status": "running",
                "policy": _one_line(policy)[:_TAG_MAX], "stage": "search",
                **({"reference": reference_of(config)} if reference_of(config) else {})}
        run = self.client.create_run(self.experiment_id, start_time=start,
                                     run_name=f"trial-{trial_id}", tags=tags)
        params = {k: str(v) for k, v in flat_params(policy).items()} if policy else {}
        if not params:  # a config this space cannot decode: keep it readable anyway
            params = {k: str(v)[:_TAG_MAX] for k, v in cfg.items()}
        self._log_batch(run.info.run_id, params=params)
        return _TrialRun(run.info.run_id, trial_id, cfg)

    def _node_tag(self, run: _TrialRun, result: dict[str, Any]) -> dict[str, str]:
        node = str(result.get("node_id") or "")
        if not node or node == run.node:
            return {}
        run.node = node
        return {"node_id": node}

    def _policy_change(self, run: _TrialRun, config: dict[str, Any], epoch: int) -> None:
        """PBT replaces a trial's policy on exploit; params are immutable, so log a file."""
        cfg = policy_config(config)
        if run.config is None or cfg == run.config:
            run.config = cfg
            return
        run.config = cfg
        policy = self._decode(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            if policy is not None:
                path = save_policy(policy, Path(tmp) / f"policy_epoch{epoch}.yaml")
                self.client.log_artifact(run.run_id, str(path), "schedule")
        self._log_batch(run.run_id, tags={"policy": _one_line(policy)[:_TAG_MAX],
                                          "policy_changed_at_epoch": str(epoch)})

    def _log_policy_files(self, run: _TrialRun, config: dict[str, Any],
                          result: dict[str, Any]) -> None:
        policy = self._decode(policy_config(config))
        if policy is None:
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
            if self._images is not None:
                from spaces.preview import preview

                preview(policy, self._images, d / "preview.png", base, size)
            if result.get("schedule"):
                (d / "schedule.json").write_text(str(result["schedule"]), encoding="utf-8")
            self.client.log_artifacts(run.run_id, str(d))

    def _decode(self, cfg: dict[str, Any]) -> Policy | None:
        try:
            return policy_of(self.space, cfg)
        except (KeyError, ValueError, TypeError):
            return None

    # ------------------------------------------------------------ the end

    def finish(self, result: SearchResult) -> None:
        """Best policy, leaderboard, diagnostics and plots on the parent run; end it."""
        for run in self._runs.values():
            if not run.done and not run.reopen:
                self._end(run, "KILLED")  # Tune never reported its end
        pid = self.parent_id
        for path in result.files.values():
            self.client.log_artifact(pid, str(path))
        # Interrupted trials are left out: they finish (and take their place) after a resume.
        ended = [r for r in result.leaderboard if r["status"] != "interrupted"]
        diag = overfit_diagnostics(completion_order(ended, self._end_times()), self.space,
                                   result.best_trial)
        self._log_diagnostics(diag)
        count = Counter(r["status"] for r in result.leaderboard)
        metrics = {**diag.scalars(), "trials_ok": count["ok"],
                   "trials_failed": len(ended) - count["ok"],
                   "trials_interrupted": count["interrupted"],
                   "tracking_errors": len(self.errors)}
        complete = getattr(result, "complete", True)
        tags = {"best_trial": result.best_trial or "-",
                "best_policy": _one_line(result.best_policy)[:_TAG_MAX]
                if result.best_policy else "-",
                "status": "finished" if complete else "interrupted"}
        self._log_batch(pid, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()],
                        tags=tags)
        self.client.set_terminated(pid, status="FINISHED" if complete else "KILLED")

    def _new_steps(self, key: str, values: list[float]) -> list[Metric]:
        """A per-trial series, minus the steps a run before a resume already logged."""
        logged = max((m.step for m in self.client.get_metric_history(self.parent_id, key)),
                     default=0)
        ts = _now()
        return [Metric(key, float(v), ts, k) for k, v in enumerate(values, 1)
                if k > logged and finite(v)]

    def _end_times(self) -> dict[str, int]:
        return {r.data.tags.get(TRIAL_TAG, ""): r.info.end_time or r.info.start_time or 0
                for r in self.nested_runs()}

    def _log_diagnostics(self, diag: Diagnostics) -> None:
        pid = self.parent_id
        series = []
        for key, values in (("best_reward_so_far", diag.best_so_far),
                            ("best_audit_accuracy_so_far", diag.best_audit_so_far),
                            ("trial_reward", diag.rewards)):
            series += self._new_steps(key, values)
        self._log_batch(pid, metrics=series)
        if diag.op_table:
            self.client.log_dict(pid, op_importance(diag), "diagnostics/op_importance.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in write_plots(diag, Path(tmp)):
                self.client.log_artifact(pid, str(path), "diagnostics")
        self.client.log_text(pid, json.dumps(summary(diag), indent=2),
                             "diagnostics/summary.json")

    # ------------------------------------------------------------ helpers

    def _log_batch(self, run_id: str, *, metrics: list[Metric] | None = None,
                   params: dict[str, str] | None = None,
                   tags: dict[str, str] | None = None) -> None:
        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        ms = list(metrics or [])
        if len(ps) + len(ts) <= _BATCH and len(ms) <= 1000:
            if ps or ts or ms:
                self.client.log_batch(run_id, metrics=ms, params=ps, tags=ts)
            return
        for start in range(0, len(ps), _BATCH):
            self.client.log_batch(run_id, params=ps[start:start + _BATCH])
        for start in range(0, len(ts), _BATCH):
            self.client.log_batch(run_id, tags=ts[start:start + _BATCH])
        for start in range(0, len(ms), 1000):
            self.client.log_batch(run_id, metrics=ms[start:start + 1000])


# ---------------------------------------------------------------- run metadata


def preview_images(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """`n` training images, one per class first, copied out of (read-only) shared memory."""
    first: dict[int, int] = {}
    for i, label in enumerate(np.asarray(y).tolist()):
        first.setdefault(int(label), i)
    chosen = [first[k] for k in sorted(first)][:n]
    taken = set(chosen)
    chosen += [i for i in range(min(len(x), 2 * n)) if i not in taken][:n - len(chosen)]
    return np.array(x[chosen])


def _parent_params(space: Space, searcher: str, opts: Any, output: Path) -> dict[str, str]:
    d, c, s = space.dataset, space.child, space.search
    params: dict[str, Any] = {
        "space": space.name, "searcher": searcher, "seed": getattr(opts, "seed", 0),
        "trials": s.trials, "concurrency": s.concurrency, "cpus_per_trial": s.cpus_per_trial,
        "gpus_per_trial": s.gpus_per_trial, "dataset": d.name, "train_size": d.train_size,
        "val_pool_size": d.val_pool_size, "audit_size": d.audit_size,
        "image_size": d.image_size, "child_model": c.model, "child_width": c.width,
        "epochs": c.epochs, "batch_size": c.batch_size, "reward_metric": space.reward.metric,
        "reward_last_epochs": space.reward.last_epochs,
        "val_sample_size": space.reward.val_sample_size,
        "sub_policies": space.policy.sub_policies,
        "ops_per_sub_policy": space.policy.ops_per_sub_policy,
        "ops": ",".join(o.name for o in space.policy.ops), "output": str(output),
    }
    for key in ("early_stop", "address", "data", "smoke_test"):
        value = getattr(opts, key, None)
        if value not in (None, False, ""):
            params[key] = value
    return {k: str(v)[:_TAG_MAX] for k, v in params.items()}


def _parent_tags(searcher: str) -> dict[str, str]:
    tags = {f"version.{name}": _version(name) for name in VERSIONED}
    tags["version.python"] = platform.python_version()
    tags.update(_hardware())
    revision = _git_revision()
    if revision:
        tags["mlflow.source.git.commit"] = revision
        tags["git_revision"] = revision
    tags["mlflow.source.name"] = "augsearch"
    tags["searcher"] = searcher
    tags["status"] = "running"
    return tags


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _hardware() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": str(os.cpu_count()), "gpus": _gpus()}


def _gpus() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = [ln.split("(")[0].strip() for ln in out.stdout.splitlines() if ln.startswith("GPU")]
    return "; ".join(names) if names else "none"


def _git_revision() -> str:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# ---------------------------------------------------------------- store helpers


def _check_server(uri: str) -> None:
    """Fail in seconds, before any child trains, when the server does not answer."""
    import requests

    hint = ("start it with `mlflow server --host 127.0.0.1 --port 5000` or drop --tracking-uri "
            "to use a local SQLite store")
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S)
    except requests.Timeout:
        raise SearchError(f"cannot reach the MLflow tracking server at {uri} (no answer within "
                          f"{HEALTH_TIMEOUT_S:g} s); {hint}") from None
    except requests.RequestException as err:
        raise SearchError(f"cannot reach the MLflow tracking server at {uri} "
                          f"({_network_reason(err)}); {hint}") from None
    if response.status_code >= 500:
        raise SearchError(f"the MLflow tracking server at {uri} answered HTTP "
                          f"{response.status_code} on /health; {hint}")


def _network_reason(err: Exception) -> str:
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
    return match.group(1).strip().lower() if match else type(err).__name__


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else Path(DB_FILE)


def _artifact_location(uri: str, output: Path) -> str | None:
    """Artifacts next to a local store (not in the cwd's ./mlruns); servers decide their own."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        return (_sqlite_path(uri).resolve().parent / ARTIFACTS_DIR).as_uri()
    return (output / ARTIFACTS_DIR).as_uri()


def _experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(
            name, artifact_location=artifact_location,
            tags={"mlflow.experimentKind": "custom_model_development"})
    if found.lifecycle_stage == "deleted":
        raise SearchError(f"MLflow experiment '{name}' was deleted; restore it with `mlflow "
                          f"experiments restore --experiment-id {found.experiment_id}` or pass "
                          f"another --experiment")
    return found.experiment_id


def _metrics(result: dict[str, Any], keys: tuple[str, ...], step: int) -> list[Metric]:
    ts = _now()
    return [Metric(k, float(result[k]), ts, step) for k in keys if finite(result.get(k))]


def _epoch(result: dict[str, Any]) -> int | None:
    epoch = result.get("epoch")
    if isinstance(epoch, bool) or not finite(epoch):
        return None
    return int(epoch)


def _one_line(policy: Policy | None) -> str:
    return policy.describe().replace("\n", " | ") if policy is not None else "?"


def _first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error, cut after a whole sentence when it is long."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    if len(line) <= limit:
        return line
    end = line.rfind(". ", 0, limit)
    return line[:end + 1] if end > 0 else line[:limit] + "..."


def _now() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- evaluation runs


class EvaluationLog:
    """One MLflow run per evaluation (`search.evaluate`): params, per-arm metrics, artifacts.

    Connected (and a server checked) before any child trains, written once at the end; the
    default store is a SQLite database in the evaluation's output directory, as for a search.
    """

    def __init__(self, client: MlflowClient, uri: str, experiment_id: str) -> None:
        self.client = client
        self.uri = uri
        self.experiment_id = experiment_id

    @classmethod
    def connect(cls, tracking_uri: str | None, experiment: str, output: Path) -> EvaluationLog:
        """Open (or create) the store and experiment; fail fast if the server is unreachable."""
        output = Path(output).resolve()
        uri = tracking_uri or default_uri(output)
        if uri.startswith(("http://", "https://")):
            _check_server(uri)
        try:
            if uri.startswith("sqlite:"):
                _sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, experiment, _artifact_location(uri, output))
        except OSError as err:
            raise SearchError(f"cannot create the MLflow store for {uri} ({err.strerror}); "
                              f"choose a writable --output or pass --tracking-uri") from None
        except MlflowException as err:
            raise SearchError(f"cannot use the MLflow tracking store {uri} "
                              f"({_first_line(err)}); check --tracking-uri or drop it to use a "
                              f"local SQLite store") from None
        return cls(client, uri, experiment_id)

    def log(self, run_name: str, params: dict[str, Any],
            metrics: list[tuple[str, float, int]], files: list[Path]) -> str:
        """Create the run, log params, metrics (name, value, step) and files; returns its id."""
        tags = {f"version.{name}": _version(name) for name in VERSIONED}
        tags.update(_hardware())
        revision = _git_revision()
        if revision:
            tags["mlflow.source.git.commit"] = revision
        tags["mlflow.source.name"] = "augsearch.evaluate"
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        ts = _now()
        ms = [Metric(_metric_key(k), float(v), ts, step) for k, v, step in metrics if finite(v)]
        ps = {_metric_key(k): str(v)[:_TAG_MAX] for k, v in params.items()}
        # Same batching as a search's runs: MLflow caps params/tags and metrics per call.
        ps_list = [Param(k, v) for k, v in ps.items()]
        for start in range(0, len(ps_list), _BATCH):
            self.client.log_batch(run_id, params=ps_list[start:start + _BATCH])
        for start in range(0, len(ms), 1000):
            self.client.log_batch(run_id, metrics=ms[start:start + 1000])
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: anything else becomes _."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)
