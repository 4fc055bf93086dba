"""This process and its descendants (Ray's processes, its workers), read from /proc, and a
background thread that samples them: where the benches' CPU-time and memory figures come from."""

from __future__ import annotations

import threading
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of `pid` (none if it has exited)."""
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids.extend(int(c) for c in (task / "children").read_text().split())
    except (OSError, ValueError):
        pass
    return kids


def process_tree(root: int) -> list[int]:
    """`root` and every descendant, parents first."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children(pid))
    return out


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
