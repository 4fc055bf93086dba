"""bench/procs.py: the process tree and its CPU time and memory, read back from real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.procs import command, cpu_seconds, process_tree, pss_mb

# A child that starts a grandchild burning CPU for 2 s, and waits for it.
TREE = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 2: pass'])")


def test_the_tree_holds_every_descendant_with_its_cpu_time_and_memory() -> None:
    child = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 30
        while len(process_tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(child.pid)
        assert len(tree) == 2 and tree[0] == child.pid
        grandchild = tree[1]
        mine = process_tree(os.getpid())  # a test session's Ray processes may be there too
        assert mine[0] == os.getpid() and {child.pid, grandchild} <= set(mine)
        while (cpu_seconds(grandchild) or 0.0) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (cpu_seconds(grandchild) or 0.0) >= 0.5  # it burns CPU: its time grows
        assert 1.0 < pss_mb(grandchild) < 500.0
        assert command(grandchild) == sys.executable
    finally:
        child.wait(timeout=60)
    assert process_tree(child.pid) == [] and cpu_seconds(child.pid) is None
    assert pss_mb(child.pid) == 0.0 and command(child.pid) is None
