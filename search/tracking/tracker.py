"""A search's MLflow record: one parent run, a stage of nested trial runs, diagnostics at the end.

The tracker is a search listener. Trial events go to the state machine of the search's stage
(`search.tracking.trials`), which queues the store calls; every store call runs on one writer
thread (`search.tracking.writer`), so Tune's event loop never waits for MLflow and a SQLite store
never sees two writers. `start` and `finish` wait for the writer; a failure while trials run is
reported and counted, never fatal (the results also reach leaderboard.csv). A search that stops
by an exception is `abort`ed: its record is ended and everything queued is written before the
exception goes on.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from search.errors import SearchError
from search.events import SearchListener, finite
from search.stages.diagnostics import (
    Diagnostics,
    completion_order,
    op_importance,
    overfit_diagnostics,
    summary,
    write_plots,
)
from search.tracking.metadata import preview_images, run_tags, search_params
from search.tracking.store import Store, TrackingError, default_uri, first_line
from search.tracking.trials import SEARCH_STAGE, STAGE_TAG, TRIAL_TAG, TrialRuns, one_line
from search.tracking.writer import Writer
from spaces.schema import Space

PARENT_FILE = "mlflow_parent.json"
PREVIEW_IMAGES = 8


# The best candidate's margin over the base on fresh replicates (search.stages.verdict), logged
# on the parent run with its simultaneous interval's correction (k candidates, each interval's
# level), its paired SD and the smallest margin the confirmation could find (80% power).
MARGIN_METRICS = ("margin_reward", "margin_audit", "mean_reward", "base_mean_reward",
                  "mean_audit", "base_mean_audit", "confirmed_over_seeds", "correction_k",
                  "interval_level", "paired_sd", "detectable_margin")


def _headroom_metrics(result: Any, tags: dict[str, str]) -> dict[str, float]:
    """The headroom check's figures on the parent run (metrics; its state and arm as tags)."""
    room = getattr(result, "headroom", None)
    if room is None:
        return {}
    prov = room.provenance()
    tags.update({"headroom": prov["state"], "headroom_arm": prov["arm"]})
    if getattr(result, "stopped", ""):
        tags["stopped"] = result.stopped
    low, high = prov["margin_ci95"]
    values = {"headroom_margin": prov["margin"], "headroom_ci95_low": low,
              "headroom_ci95_high": high, "headroom_seeds": prov["seeds"],
              "headroom_detectable": prov["detectable"]}
    return {k: float(v) for k, v in values.items() if finite(v)}


class Tracker(SearchListener):
    """Logs a search into MLflow: parent run, nested trial runs, artifacts, diagnostics."""

    def __init__(self, store: Store, space: Space, output: Path, threaded: bool = True) -> None:
        self.store = store
        self.uri = store.uri
        self.experiment_id = store.experiment_id
        self.space = space
        self.output = Path(output).resolve()
        self.parent_id = ""
        self.errors: list[str] = []
        self.writer = Writer(self._failed, threaded)
        self.trials: TrialRuns | None = None
        self._stages: list[TrialRuns] = []  # every stage of nested runs, the search's first
        self._images: Any = None

    @classmethod
    def connect(cls, tracking_uri: str | None, experiment: str | None, space: Space,
                output: Path, threaded: bool = True) -> Tracker:
        """Open (or create) the store and experiment; fail fast if the server is unreachable.

        `threaded=False` makes every store call inline, in the caller (measured against the
        writer thread by bench/driver_callbacks.py).
        """
        output = Path(output).resolve()
        store = Store.open(tracking_uri or default_uri(output),
                           experiment or f"augsearch-{space.name}", output)
        return cls(store, space, output, threaded)

    # ------------------------------------------------------------ the parent run

    def start(self, space: Space, searcher: str, opts: Any, splits: Any, resume: bool) -> None:
        """Create the parent run (or reopen it on resume) and log what the search is."""
        self.space = space
        self._images = preview_images(splits.train.x, splits.train.y, PREVIEW_IMAGES)
        try:
            self.writer.call(self._start, searcher, opts, resume)
        except TrackingError as err:
            raise SearchError(f"cannot start the MLflow record in {self.uri} ({err}); check "
                              f"--tracking-uri or drop it to use a local SQLite store") from None

    def _start(self, searcher: str, opts: Any, resume: bool) -> None:
        parent = self._reopen_parent() if resume else None
        if parent is not None:
            self.parent_id, tags = parent
            self.store.reopen(self.parent_id)
            resumed = int(tags.get("resumed", "0")) + 1
            self.store.log(self.parent_id, tags={"resumed": str(resumed), "status": "running"})
            self.trials = self.stage({STAGE_TAG: SEARCH_STAGE})
            self.trials.restore()
            return
        tags = {**run_tags("augsearch"), "searcher": searcher, "status": "running"}
        self.parent_id = self.store.create_run(self.output.name, tags)
        self.store.log(self.parent_id,
                       params=search_params(self.space, searcher, opts, self.output))
        text = yaml.safe_dump(self.space.model_dump(mode="json"), sort_keys=False)
        self.store.log_text(self.parent_id, text, "space.yaml")
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / PARENT_FILE).write_text(json.dumps(
            {"run_id": self.parent_id, "experiment_id": self.experiment_id,
             "tracking_uri": self.uri}, indent=2) + "\n", encoding="utf-8")
        self.trials = self.stage({STAGE_TAG: SEARCH_STAGE})

    def _reopen_parent(self) -> tuple[str, dict[str, str]] | None:
        path = self.output / PARENT_FILE
        if not path.exists():
            return None
        run_id = json.loads(path.read_text(encoding="utf-8")).get("run_id", "")
        tags = self.store.run_tags(run_id)
        return None if tags is None else (run_id, tags)  # another store: a new parent there

    def stage(self, tags: dict[str, str], name: str = "trial-{}",
              resume: bool = False) -> TrialRuns:
        """A stage of nested runs under this parent, on this writer; `tags` mark its runs.
        `resume` takes over the stage's runs an interrupted search left in the store."""
        runs = TrialRuns(self.store, self.writer, self.parent_id, self.space, self._images,
                         tags, name)
        self._stages.append(runs)
        if resume:
            self.writer.call(runs.restore)
        return runs

    # ------------------------------------------------------------ trial events

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        self._search_stage().trial_result(trial_id, config, result)

    def trial_complete(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any]) -> None:
        self._search_stage().trial_complete(trial_id, config, result)

    def trial_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        self._search_stage().trial_error(trial_id, config, error)

    def _search_stage(self) -> TrialRuns:
        if self.trials is None:
            raise RuntimeError("Tracker.start() must run before trial events")
        return self.trials

    def _failed(self, label: str, err: BaseException) -> None:
        detail = first_line(err) if isinstance(err, (TrackingError, OSError)) else \
            f"{type(err).__name__}: {first_line(err)}"
        msg = f"MLflow logging failed for {label}: {detail}"
        self.errors.append(msg)
        print(f"[augsearch] warning: {msg}; the search goes on (results are also in "
              f"leaderboard.csv)", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ reading back

    def flush(self) -> None:
        """Wait until everything logged so far is in the store."""
        self.writer.flush()

    def run_id(self, trial_id: str) -> str:
        """The MLflow run id of a trial's nested run (waits for the writer)."""
        self.flush()
        return self._search_stage().runs[trial_id].run_id

    def nested_runs(self) -> list[Any]:
        """The trial runs of this search, from the store."""
        return self.writer.call(self.store.children, self.parent_id)

    # ------------------------------------------------------------ the end

    def finish(self, result: Any) -> None:
        """Best policy, leaderboard, diagnostics and plots on the parent run; end it."""
        self._end_unended()
        try:
            self.writer.call(self._finish, result)
        except (TrackingError, OSError) as err:
            self._failed("the parent run", err)
        except BaseException as err:
            self._end_parent(err)
            raise
        finally:
            self.writer.close()

    def abort(self, error: BaseException) -> None:
        """End the record of a search that stopped by `error`, then write everything queued and
        stop the writer; raising `error` stays the caller's (a store failure here is only
        reported). Runs Tune left unended end KILLED; the parent ends FAILED with the error as
        a tag, or KILLED on Ctrl-C. A resumed search reopens them."""
        self._end_unended()
        self._end_parent(error)
        self.writer.close()

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        self.writer.close()

    def _end_unended(self) -> None:
        for stage in self._stages:
            stage.end_unended()

    def _end_parent(self, error: BaseException) -> None:
        if not self.parent_id:
            return
        interrupted = isinstance(error, KeyboardInterrupt)
        tags = {"status": "interrupted" if interrupted else "failed"}
        if not interrupted:
            tags["error"] = f"{type(error).__name__}: {first_line(error)}"
        self.writer.submit("the parent run", self._end_with, tags,
                           "KILLED" if interrupted else "FAILED")

    def _end_with(self, tags: dict[str, str], status: str) -> None:
        self.store.log(self.parent_id, tags=tags)
        self.store.end(self.parent_id, status)

    def _finish(self, result: Any) -> None:
        pid = self.parent_id
        for path in result.files.values():
            self.store.log_file(pid, path)
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
        provenance = result.best_policy.provenance if result.best_policy else {}
        metrics.update({k: provenance[k] for k in MARGIN_METRICS if finite(provenance.get(k))})
        for key in ("margin_reward", "margin_audit"):
            low, high = provenance.get(f"{key}_ci95") or (None, None)
            if finite(low) and finite(high):
                metrics.update({f"{key}_ci95_low": low, f"{key}_ci95_high": high})
        tags = {"best_trial": result.best_trial or "-",
                "best_policy": one_line(result.best_policy) if result.best_policy else "-",
                "status": "finished" if complete else "interrupted",
                "verdict": str(provenance.get("verdict", "unconfirmed")),
                "exported": str(provenance.get("exported", "-"))}
        if provenance.get("why"):
            tags["why"] = str(provenance["why"])
        metrics.update(_headroom_metrics(result, tags))
        metrics.update({k: v for k, v in getattr(result, "metrics", {}).items()
                        if math.isfinite(v)})
        if provenance.get("correction"):  # confirmed: the best candidate, exported or not
            tags["candidate"] = str(provenance.get("candidate", "-"))
            tags["decided_on"] = str(provenance.get("decided_on", "-"))
            tags["margin_ci"] = (f"simultaneous {provenance.get('confidence', 0.95):.0%}, "
                                 f"{provenance['correction']} over {provenance['correction_k']} "
                                 f"candidates")
        self.store.log(pid, metrics=[(k, float(v), 0) for k, v in metrics.items()], tags=tags)
        self.store.end(pid, "FINISHED" if complete else "KILLED")

    def _end_times(self) -> dict[str, int]:
        return {r.data.tags.get(TRIAL_TAG, ""): r.info.end_time or r.info.start_time or 0
                for r in self.store.children(self.parent_id)}

    def _new_steps(self, key: str, values: list[float]) -> list[tuple[str, float, int]]:
        """A per-trial series, minus the steps a run before a resume already logged."""
        logged = max(self.store.steps(self.parent_id, key), default=0)
        return [(key, float(v), k) for k, v in enumerate(values, 1) if k > logged and finite(v)]

    def _log_diagnostics(self, diag: Diagnostics) -> None:
        pid = self.parent_id
        series = []
        for key, values in (("best_reward_so_far", diag.best_so_far),
                            ("best_audit_accuracy_so_far", diag.best_audit_so_far),
                            ("trial_reward", diag.rewards)):
            series += self._new_steps(key, values)
        self.store.log(pid, metrics=series)
        if diag.op_table:
            self.store.log_dict(pid, op_importance(diag), "diagnostics/op_importance.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in write_plots(diag, Path(tmp)):
                self.store.log_file(pid, path, "diagnostics")
        self.store.log_text(pid, json.dumps(summary(diag), indent=2), "diagnostics/summary.json")
