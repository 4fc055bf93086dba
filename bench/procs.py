"""This process and its descendants (Ray's processes, its workers), found and read with psutil,
and a background thread that samples them: where the benches' CPU-time and memory figures come
from."""

from __future__ import annotations

import threading

import psutil


def process_tree(root: int) -> list[int]:
    """`root` and every descendant, parents first (none if `root` has exited)."""
    try:
        return [root, *(p.pid for p in psutil.Process(root).children(recursive=True))]
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (not of its children); None if it cannot be read."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def pss_mb(pid: int) -> float:
    """Proportional set size of `pid` in MB (shared pages split among their users); 0 if it
    cannot be read."""
    try:
        return psutil.Process(pid).memory_full_info().pss / 2**20
    except psutil.Error:
        return 0.0


def command(pid: int) -> str | None:
    """The first word of `pid`'s command line (Ray renames its workers `ray::...`); None if
    it cannot be read."""
    try:
        words = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    return words[0] if words else ""


class Sampler:
    """Calls `sample()` every `interval` seconds in a daemon thread while the `with` block runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        raise NotImplementedError
