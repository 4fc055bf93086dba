"""Search events seen by the driver, and the progress line users watch during a run."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


class SearchListener:
    """Receives driver-side events of a running search (no Ray types cross this boundary).

    Every method is a no-op here, so a listener implements only the events it needs. Events
    arrive on Tune's event loop: a listener must return quickly (MLflow writes are queued to the
    tracker's writer thread, never done here).
    """

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        """A trial reported an epoch."""

    def trial_complete(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any]) -> None:
        """A trial ended normally (its reward may still be NaN: a diverged child)."""

    def trial_retry(self, trial_id: str, error: str) -> None:
        """A trial failed and Tune restarts it from its last checkpoint; it is not done."""

    def trial_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        """A trial failed for good (Tune's retries are used up); `error` is one line."""


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Progress(SearchListener):
    """Prints `trials done/total, best reward so far, time left` as trials finish.

    Only trials that ended count as done: a trial Tune retries (now, or after `--resume`) counts
    once, when it finally ends.
    """

    def __init__(self, total: int, already_done: int = 0, stream: TextIO | None = None,
                 stage: str = "") -> None:
        self.total = total
        self.stage = f"{stage} " if stage else ""
        self.done = already_done
        self.failed = 0
        self.best = float("nan")
        self.start = time.monotonic()
        self.started_done = already_done
        self.stream = stream or sys.stdout

    def trial_complete(self, trial_id: str, config: dict[str, Any],
                       result: dict[str, Any]) -> None:
        reward = result.get("reward")
        if finite(reward) and not (reward <= self.best):
            self.best = float(reward)
        if not finite(reward):
            self.failed += 1
        self._tick(trial_id, reward, str(result.get("error") or ""))

    def trial_retry(self, trial_id: str, error: str) -> None:
        print(f"[augsearch] {trial_id} failed and is retried from its last checkpoint: {error}",
              file=self.stream, flush=True)

    def trial_error(self, trial_id: str, config: dict[str, Any], error: str) -> None:
        self.failed += 1
        self._tick(trial_id, None, error)

    def _tick(self, trial_id: str, reward: Any, error: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        new = self.done - self.started_done
        left = elapsed / new * max(self.total - self.done, 0) if new else float("nan")
        what = f"reward {reward:.4f}" if finite(reward) else f"failed {error}".rstrip()
        best = f"{self.best:.4f}" if finite(self.best) else "-"
        print(f"[augsearch] {self.stage}{self.done}/{self.total} trials ({self.failed} failed) | "
              f"{trial_id}: {what} | best {best} | elapsed {_clock(elapsed)}, "
              f"left ~{_clock(left)}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
