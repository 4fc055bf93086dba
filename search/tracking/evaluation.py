"""An evaluation's MLflow record: one run with params, per-arm metrics and the result files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.events import finite
from search.tracking.metadata import run_tags
from search.tracking.store import Store, default_uri


class EvaluationLog:
    """One MLflow run per evaluation (`search.evaluate`), written once, at the end.

    The default store is a SQLite database in the evaluation's output directory, as for a
    search. The evaluation checks the tracking URI before any child trains
    (`search.tracking.store.check_uri`) and opens the store only once it has results, so a
    failed evaluation leaves no store behind.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.uri
        self.experiment_id = store.experiment_id

    @classmethod
    def connect(cls, tracking_uri: str | None, experiment: str, output: Path) -> EvaluationLog:
        """Open (or create) the store and experiment."""
        output = Path(output).resolve()
        return cls(Store.open(tracking_uri or default_uri(output), experiment, output))

    def log(self, run_name: str, params: dict[str, Any],
            metrics: list[tuple[str, float, int]], files: list[Path]) -> str:
        """Create the run, log params, metrics (name, value, step) and files; returns its id."""
        run_id = self.store.create_run(run_name, run_tags("augsearch.evaluate"))
        self.store.log(run_id, metrics=[(k, float(v), step) for k, v, step in metrics
                                        if finite(v)], params=params)
        for path in files:
            self.store.log_file(run_id, path)
        self.store.end(run_id, "FINISHED")
        return run_id
