"""The MLflow store adapter: the only module in augsearch that imports `mlflow`.

Everything else speaks in run ids, plain dicts and (key, value, step) tuples. Connecting checks
the store before anything is logged (a server must answer, an experiment must not be deleted),
and every call made while a search runs turns MLflow's exceptions into `TrackingError`, which the
tracker reports without stopping the search. Every call names its run id explicitly: MLflow's
fluent "active run" cannot follow interleaved trials.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from search.errors import SearchError
from search.prepare.paths import check_creatable

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
PARENT_TAG = "mlflow.parentRunId"
HEALTH_TIMEOUT_S = 5.0
TAG_MAX = 5000  # MLflow's limit on a tag or param value
_PER_CALL = 100  # MLflow's limit of params + tags per log_batch call
_METRICS_PER_CALL = 1000

Point = tuple[str, float, int]  # a metric: key, value, step
_T = TypeVar("_T")


class TrackingError(RuntimeError):
    """A store call failed while a run was being logged (server gone, disk full, ...)."""


def _tracked(method: Callable[..., _T]) -> Callable[..., _T]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> _T:
        try:
            return method(*args, **kwargs)
        except MlflowException as err:
            raise TrackingError(first_line(err)) from None

    return call


def default_uri(output: Path) -> str:
    """The local store of a run: a SQLite database in its output directory (absolute)."""
    return f"sqlite:///{Path(output).resolve()}/{DB_FILE}"


def check_uri(uri: str) -> None:
    """Before anything is created: a URI MLflow can use, whose server answers."""
    hint = "pass --tracking-uri sqlite:////abs/path/mlflow.db or http://HOST:PORT, or drop it"
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif uri.startswith("sqlite:///"):
        check_creatable(_sqlite_path(uri), f"the MLflow store {uri}", hint)
    elif uri.startswith("file:") or "://" not in uri:
        raise SearchError(f"--tracking-uri {uri}: MLflow's file store is no longer supported; "
                          f"{hint}")


def check_server(uri: str) -> None:
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


def check_experiment(uri: str, name: str) -> None:
    """In a store that exists already, experiment `name` is usable (not deleted); reads only."""
    if uri.startswith("sqlite:///") and not _sqlite_path(uri).is_file():
        return  # created later, with the experiment
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    except MlflowException as err:
        raise SearchError(f"cannot use the MLflow tracking store {uri} ({first_line(err)}); "
                          f"check --tracking-uri or drop it to use a local SQLite store") from None
    if found is not None and found.lifecycle_stage == "deleted":
        raise SearchError(_deleted(name, found.experiment_id))


class Store:
    """An MLflow tracking store and one experiment in it."""

    def __init__(self, client: MlflowClient, uri: str, experiment_id: str) -> None:
        self.client = client
        self.uri = uri
        self.experiment_id = experiment_id

    @classmethod
    def open(cls, uri: str, experiment: str, output: Path) -> Store:
        """Open (or create) the store and the experiment; user-facing problems are SearchErrors.

        A local store keeps its artifacts beside the database (`mlartifacts/`), not in the
        working directory's `./mlruns`.
        """
        # MLflow's INFO lines (creating/upgrading the SQLite tables) are noise in the CLI.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        check_uri(uri)
        if uri.startswith("sqlite:///"):
            _sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, experiment, _artifact_location(uri, output))
        except MlflowException as err:
            raise SearchError(f"cannot use the MLflow tracking store {uri} ({first_line(err)}); "
                              f"check --tracking-uri or drop it to use a local SQLite "
                              f"store") from None
        return cls(client, uri, experiment_id)

    # ------------------------------------------------------------ writing

    @_tracked
    def create_run(self, name: str, tags: dict[str, str], start_time: int | None = None) -> str:
        run = self.client.create_run(self.experiment_id, start_time=start_time, run_name=name,
                                     tags=_clipped(tags))
        return run.info.run_id

    @_tracked
    def log(self, run_id: str, metrics: Iterable[Point] = (), params: dict[str, Any] | None = None,
            tags: dict[str, Any] | None = None) -> None:
        """Metrics, params and tags in as few `log_batch` calls as MLflow's limits allow."""
        now = now_ms()
        ms = [Metric(_key(k), float(v), now, int(step)) for k, v, step in metrics]
        ps = [Param(_key(k), v) for k, v in _clipped(params or {}).items()]
        ts = [RunTag(k, v) for k, v in _clipped(tags or {}).items()]
        if len(ps) + len(ts) <= _PER_CALL and len(ms) <= _METRICS_PER_CALL:
            if ms or ps or ts:
                self.client.log_batch(run_id, metrics=ms, params=ps, tags=ts)
            return
        for chunk in _chunks(ps, _PER_CALL):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(ts, _PER_CALL):
            self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(ms, _METRICS_PER_CALL):
            self.client.log_batch(run_id, metrics=chunk)

    @_tracked
    def log_file(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    @_tracked
    def log_folder(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), folder)

    @_tracked
    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    @_tracked
    def log_dict(self, run_id: str, data: dict[str, Any], name: str) -> None:
        self.client.log_dict(run_id, data, name)

    @_tracked
    def reopen(self, run_id: str) -> None:
        """Mark an ended run RUNNING again (a resumed search continues it)."""
        self.client.update_run(run_id, status="RUNNING")

    @_tracked
    def end(self, run_id: str, status: str) -> None:
        """End a run: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------ reading

    @_tracked
    def run_tags(self, run_id: str) -> dict[str, str] | None:
        """A run's tags, or None if this experiment holds no such run."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return dict(run.data.tags) if run.info.experiment_id == self.experiment_id else None

    @_tracked
    def children(self, parent_id: str) -> list[Any]:
        """The nested runs of `parent_id` (MLflow `Run` objects, read by attribute only)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id],
                                           f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                           max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    @_tracked
    def steps(self, run_id: str, key: str) -> list[int]:
        """The steps at which `key` was logged in a run."""
        return [m.step for m in self.client.get_metric_history(run_id, key)]


# ---------------------------------------------------------------- helpers


def now_ms() -> int:
    return int(time.time() * 1000)


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error, cut after a whole sentence when it is long."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    if len(line) <= limit:
        return line
    end = line.rfind(". ", 0, limit)
    return line[:end + 1] if end > 0 else line[:limit] + "..."


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: anything else becomes _."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _clipped(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:TAG_MAX] for k, v in values.items()}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[start:start + size] for start in range(0, len(items), size))


def _network_reason(err: Exception) -> str:
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
    return match.group(1).strip().lower() if match else type(err).__name__


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):])


def _artifact_location(uri: str, output: Path) -> str | None:
    """Artifacts next to a local store (not in the cwd's ./mlruns); servers decide their own."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        return (_sqlite_path(uri).resolve().parent / ARTIFACTS_DIR).as_uri()
    return (Path(output).resolve() / ARTIFACTS_DIR).as_uri()


def _experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(
            name, artifact_location=artifact_location,
            tags={"mlflow.experimentKind": "custom_model_development"})
    if found.lifecycle_stage == "deleted":
        raise SearchError(_deleted(name, found.experiment_id))
    return found.experiment_id


def _deleted(name: str, experiment_id: str) -> str:
    return (f"MLflow experiment '{name}' was deleted; restore it with `mlflow experiments "
            f"restore --experiment-id {experiment_id}` or pass another --experiment")
