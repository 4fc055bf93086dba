"""Everything augsearch records in MLflow, split by concern.

- `store`: the MLflow adapter, the only module that imports `mlflow`;
- `writer`: the single writer thread every store call runs on;
- `trials`: the Tune-event state machine of a stage of nested trial runs;
- `tracker`: a search's parent run, its trial stage and the diagnostics at the end;
- `metadata`: run params and tags (versions, hardware, git revision);
- `evaluation`: the run of an evaluation.
"""

from __future__ import annotations

from search.tracking.evaluation import EvaluationLog
from search.tracking.store import TrackingError, check_experiment, check_uri, default_uri
from search.tracking.tracker import PARENT_FILE, Tracker

__all__ = ["PARENT_FILE", "EvaluationLog", "Tracker", "TrackingError", "check_experiment",
           "check_uri", "default_uri"]
