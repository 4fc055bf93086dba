"""Tune's driver-side events, forwarded to plain listeners (`search.events.SearchListener`:
progress, MLflow); a cohort trial's events become its members'."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.events import SearchListener
from search.trials import cohorts
from search.trials.config import flat

# Listeners of the search running in this driver, by experiment path. Tune pickles its callbacks
# into the experiment state, so the callback holds only the key and finds its listeners here,
# which also lets a resumed search attach fresh listeners.
LISTENERS: dict[str, list[SearchListener]] = {}
# Each trial's Tune status (TERMINATED, ERROR, PENDING, ...) at the experiment's end, by
# experiment path then trial id: what Tune's public callback hook hands over (`Trial.status`).
STATUSES: dict[str, dict[str, str]] = {}


class Events(Callback):
    """Forwards Tune's driver-side events to plain listeners (progress, MLflow)."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def listeners(self) -> list[SearchListener]:
        return LISTENERS.get(self.key, [])

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        for tid, config, mine in _trials(trial, result):
            for listener in self.listeners:
                listener.trial_result(tid, config, mine)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, config, mine in _trials(trial, trial.last_result):
            for listener in self.listeners:
                listener.trial_complete(tid, config, mine)

    def on_trial_recover(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, _config, _mine in _trials(trial, None):
            for listener in self.listeners:
                retry = getattr(listener, "trial_retry", None)  # optional for plain listeners
                if retry is not None:
                    retry(tid, _error_text(trial))

    def on_experiment_end(self, trials, **info):  # noqa: ANN001
        """Every trial's status once Tune has stopped (after Ctrl-C too: then the trials it
        stopped read TERMINATED, and `run_search` tells them by their epochs)."""
        STATUSES[self.key] = {t.trial_id: str(t.status) for t in trials}

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        for tid, config, _mine in _trials(trial, None):
            for listener in self.listeners:
                listener.trial_error(tid, config, _error_text(trial))


def _trials(trial: Any, result: dict[str, Any] | None
            ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The trials a Tune trial stands for (a cohort's members, or itself), with their results."""
    return cohorts.expand(trial.trial_id, flat(trial.config), dict(result or {}))


def _error_text(trial: Any) -> str:
    """One line: the exception that ended the trial, then where its full traceback is kept.

    Tune writes the log into its driver staging directory first (readable now) and copies it to
    the trial's directory in the experiment storage (`<output>/ray/tune/trial_<id>/`), which
    outlives the Ray session: that is the path users are given.
    """
    staged = getattr(trial, "error_file", None)
    if not staged or not os.path.exists(staged):
        return "error (Tune kept no log)"
    lines = [ln for ln in Path(staged).read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip()[:300] if lines else "error"
    kept = Path(trial.path) / Path(staged).name if getattr(trial, "path", None) else staged
    return f"{last}; full log: {kept}"
