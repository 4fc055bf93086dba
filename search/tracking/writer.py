"""The single writer: one thread makes every MLflow call of a run, in the order they were asked.

Tune delivers trial events on its driver event loop; logging an epoch, rendering a preview or
uploading an artifact there would stall the loop that schedules trials. The tracker therefore
only queues work here and returns. One thread (never a pool) keeps a SQLite store to a single
writer and keeps each run's calls in order. MLflow's own asynchronous logging covers metrics,
params and tags only, not run creation or artifacts, so it cannot replace this.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

_T = TypeVar("_T")
_STOP = object()


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
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, label: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` after everything submitted before; returns at once."""
        if not self.threaded:
            self._run(label, fn, args, None)
            return
        self._start()
        self._queue.put((label, fn, args, None))

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(*args)` after everything submitted before, wait, and return its result (or
        raise its exception here)."""
        future: Future[Any] = Future()
        if self.threaded:
            self._start()
            self._queue.put((fn.__name__, fn, args, future))
        else:
            self._run(fn.__name__, fn, args, future)
        return future.result()

    def flush(self) -> None:
        """Wait until every call submitted so far has run."""
        self.call(lambda: None)

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="augsearch-mlflow",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._run(*item)

    def _run(self, label: str, fn: Callable[..., Any], args: tuple[Any, ...],
             future: Future[Any] | None) -> None:
        started = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as err:  # a thread boundary: report every failure, keep writing
            if future is not None:
                future.set_exception(err)
            else:
                self.on_error(label, err)
        else:
            if future is not None:
                future.set_result(result)
        finally:
            self.busy_s += time.perf_counter() - started
