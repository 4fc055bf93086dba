"""The single writer: one thread makes every MLflow call of a run, in the order they were asked.

Tune delivers trial events on its driver event loop; logging an epoch, rendering a preview or
uploading an artifact there would stall the loop that schedules trials. The tracker therefore
only queues work here and returns. The thread is a `ThreadPoolExecutor` with one worker (never
more): a SQLite store sees a single writer and each run's calls stay in order.

MLflow's own asynchronous logging (`log_batch(..., synchronous=False)`) does not replace it. It
covers metrics, params and tags only, not run creation (whose id the later calls need) or
artifacts, and with its defaults (MLflow 3.17) it hands each batch to a pool of 10 threads:
on a SQLite store, 100 tag updates of one run queued in order ended on the last value in 0 of
8 runs (`bench/mlflow_async.py`; a trial's `status: ok` could end as `running`). Only two
process-wide environment variables (`MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE=1`, a buffering
delay) restore order, which would change every other MLflow user in the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


class Writer:
    """Runs submitted calls one at a time on its own thread (or inline, `threaded=False`).

    A failing submitted call is handed to `on_error(label, error)` and the writer goes on: a
    tracking failure must not end a search whose results also reach leaderboard.csv.
    """

    def __init__(self, on_error: Callable[[str, BaseException], None],
                 threaded: bool = True) -> None:
        self.on_error = on_error
        self.threaded = threaded
        self.busy_s = 0.0  # time spent running calls (for the driver-callback benchmark)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` after everything submitted before; returns at once."""
        if self.threaded:
            self._executor().submit(self._reported, label, fn, *args)
        else:
            self._reported(label, fn, *args)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(*args)` after everything submitted before, wait, and return its result (or
        raise its exception here)."""
        if self.threaded:
            return self._executor().submit(self._timed, fn, *args).result()
        return self._timed(fn, *args)

    def flush(self) -> None:
        """Wait until every call submitted so far has run."""
        self.call(lambda: None)

    def close(self) -> None:
        """Run what is queued, then stop the thread (a later call starts another)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="augsearch-mlflow")
            return self._pool

    def _timed(self, fn: Callable[..., _T], *args: Any) -> _T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy_s += time.perf_counter() - started

    def _reported(self, label: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._timed(fn, *args)
        except Exception as err:  # a thread boundary: report every failure, keep writing
            self.on_error(label, err)
