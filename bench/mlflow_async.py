"""Can MLflow's asynchronous logging replace the tracker's single writer thread?

The tracker (search/tracking/writer.py) makes every MLflow call of a run on one thread, in the
order it was asked. MLflow 3 logs metrics, params and tags asynchronously too
(`MlflowClient.log_batch(..., synchronous=False)`, flushed by the store's
`flush_async_logging`). Each mode here queues `--updates` updates of one run (tag `status` =
0, 1, ..., and a metric at each step) on a SQLite store, flushes, and reads the tag back: kept in
order, it holds the last value. Modes, each in its own process (the settings are process-wide
environment variables): MLflow's defaults; MLflow with one logging thread and its 1 s buffering
delay; plain `log_batch` calls on one thread (what the writer does).

    python bench/mlflow_async.py [--runs 8] [--updates 100] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {
    "MLflow async, defaults": {},
    "MLflow async, 1 thread + 1 s buffering": {"MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE": "1",
                                               "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1"},
    "synchronous, one thread (the writer)": {},
}


def measure(mode: str, runs: int, updates: int) -> dict[str, float]:
    """In this process: `runs` runs of `updates` queued updates each, in `mode`."""
    import logging

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    asynchronous = mode.startswith("MLflow async")
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        store = client._tracking_client.store
        calls = [0]
        log_batch = store.log_batch

        def counted(*args, **kwargs):
            calls[0] += 1
            return log_batch(*args, **kwargs)

        store.log_batch = counted
        store._async_logging_queue._logging_func = counted  # the async queue's store call
        experiment = client.create_experiment("order")
        in_order, seconds = 0, 0.0
        for _ in range(runs):
            run = client.create_run(experiment).info.run_id
            started = time.perf_counter()
            for i in range(updates):
                client.log_batch(run, metrics=[Metric("m", i, 0, i)],
                                 tags=[RunTag("status", str(i))], synchronous=not asynchronous)
            store.flush_async_logging()
            seconds += time.perf_counter() - started
            in_order += client.get_run(run).data.tags["status"] == str(updates - 1)
    return {"in_order": in_order, "runs": runs, "calls": calls[0] / runs,
            "seconds": seconds / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--write", action="store_true",
                        help="replace this section of docs/BENCHMARKS.md")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.runs, args.updates)))
        return
    rows = []
    for mode, env in MODES.items():
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--runs", str(args.runs),
                              "--updates", str(args.updates)], capture_output=True, text=True,
                             env={**os.environ, **env}, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(f"| {mode} | {r['in_order']:.0f} of {r['runs']:.0f} | {r['calls']:.0f} | "
                    f"{r['seconds']:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    import mlflow

    from bench.report import machine, write_section

    body = "\n".join([
        f"`python bench/mlflow_async.py --runs {args.runs} --updates {args.updates}` — MLflow "
        f"{mlflow.__version__}, SQLite store in a temporary directory; {machine()}.", "",
        f"Each run gets {args.updates} updates queued in order (tag `status` = 0..."
        f"{args.updates - 1} and one metric step each), then a flush. A run ends on the last "
        f"value only if its calls were written in order.", "",
        "| mode | runs ending on the last value | store calls per run | s per run |",
        "|---|---:|---:|---:|", *rows])
    print(body)
    if args.write:
        write_section("MLflow asynchronous logging vs the single writer", body)


if __name__ == "__main__":
    main()
