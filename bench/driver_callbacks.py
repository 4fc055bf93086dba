"""How long do Tune's driver callbacks take per epoch, with MLflow logging inline vs queued?

Runs the same real search (digits, random searcher, MLflow tracking on, a local Ray) with the
tracker making every store call inside Tune's driver callbacks ("inline": how augsearch logged
before the writer thread) and with the tracker queueing them to its single writer thread
("writer thread": how it logs now). The two modes alternate (A B B A) on one machine in one run.
Every call of Tune's `on_trial_result` / `on_trial_complete` / `on_trial_error` into augsearch's
listeners is timed; the per-epoch time is what Tune's event loop waits for each reported epoch.

    python bench/driver_callbacks.py [--trials 8] [--epochs 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, write_section  # noqa: E402

TUNE_WARN_S = 0.5  # Tune's default threshold for its "slow callback" warning
MODES = {"inline": False, "writer thread": True}  # mode -> Tracker(threaded=...)
EVENTS = ("on_trial_result", "on_trial_complete", "on_trial_error")


def _timed(method: Callable[..., Any], name: str, log: dict[str, list[float]]) -> Callable:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            log[name].append(time.perf_counter() - started)

    return call


def run(threaded: bool, trials: int, epochs: int, out: Path) -> dict[str, Any]:
    """One search; returns the callback durations (s) by event, and the search's wall time."""
    from search.api import search
    from search.tracking import Tracker
    from search.tune import callbacks

    log: dict[str, list[float]] = defaultdict(list)
    originals = {name: getattr(callbacks.Events, name) for name in EVENTS}
    connect = Tracker.__dict__["connect"]
    for name, method in originals.items():
        setattr(callbacks.Events, name, _timed(method, name, log))
    Tracker.connect = classmethod(
        lambda cls, *a, **k: connect.__func__(cls, *a, **{**k, "threaded": threaded}))
    try:
        started = time.perf_counter()
        result = search("digits", "random", trials=trials, epochs=epochs, concurrency=2,
                        seed=0, output=out)
        wall = time.perf_counter() - started
    finally:
        for name, method in originals.items():
            setattr(callbacks.Events, name, method)
        Tracker.connect = connect
    ok = sum(r["status"] == "ok" for r in result.leaderboard)
    return {"log": dict(log), "wall": wall, "ok": ok}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    per_epoch = [d for r in runs for d in r["log"].get("on_trial_result", [])]
    ends = [d for r in runs for d in r["log"].get("on_trial_complete", [])]
    total = sum(sum(sum(v) for v in r["log"].values()) for r in runs)
    reported = len(per_epoch) or 1
    return {"epochs": len(per_epoch), "median_ms": 1000 * statistics.median(per_epoch),
            "p95_ms": 1000 * _quantile(per_epoch, 0.95), "max_ms": 1000 * max(per_epoch),
            "end_median_ms": 1000 * statistics.median(ends), "end_max_ms": 1000 * max(ends),
            "per_epoch_ms": 1000 * total / reported,
            "slow": sum(d > TUNE_WARN_S for r in runs for v in r["log"].values() for d in v),
            "wall": statistics.median(r["wall"] for r in runs),
            "ok": sum(r["ok"] for r in runs)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds per mode")
    args = parser.parse_args()
    order = [m for k in range(args.rounds)
             for m in (("inline", "writer thread") if k % 2 == 0 else ("writer thread", "inline"))]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for k, mode in enumerate(order):
            r = run(MODES[mode], args.trials, args.epochs, Path(tmp) / f"run{k}")
            runs[mode].append(r)
            epochs = r["log"].get("on_trial_result", [])
            print(f"{mode}: {len(epochs)} epochs, median callback "
                  f"{1000 * statistics.median(epochs):.1f} ms, max {1000 * max(epochs):.0f} ms, "
                  f"wall {r['wall']:.0f} s", file=sys.stderr, flush=True)
    stats = {mode: summarize(rs) for mode, rs in runs.items()}
    body = report(stats, args)
    print(body)
    write_section("Driver callback time per epoch", body)


def report(stats: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    before, after = stats["inline"], stats["writer thread"]
    lines = ["| MLflow store calls | epochs timed | per-epoch callback median ms | p95 ms | "
             "max ms | trial-end callback median ms | max ms | all callbacks, ms per epoch | "
             f"callbacks over {TUNE_WARN_S:g} s | search wall s (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, s in (("inline (before)", before), ("writer thread (after)", after)):
        lines.append(f"| {mode} | {s['epochs']} | {s['median_ms']:.1f} | {s['p95_ms']:.1f} | "
                     f"{s['max_ms']:.0f} | {s['end_median_ms']:.1f} | {s['end_max_ms']:.0f} | "
                     f"{s['per_epoch_ms']:.1f} | {s['slow']} | {s['wall']:.0f} |")
    ratio = before["per_epoch_ms"] / after["per_epoch_ms"] if after["per_epoch_ms"] else 0.0
    worst = max(after["max_ms"], after["end_max_ms"])
    verdict = "met" if worst < 1000 * TUNE_WARN_S else "NOT met"
    return "\n".join([
        f"`python bench/driver_callbacks.py --trials {args.trials} --epochs {args.epochs} "
        f"--rounds {args.rounds}` — random search on digits, {args.trials} trials x "
        f"{args.epochs} epochs, 2 at a time on a local Ray, MLflow SQLite store in the output "
        f"directory; {args.rounds} searches per mode, alternating. {machine()}.", "",
        "Each cell times augsearch's listeners inside Tune's driver callbacks (`on_trial_result` "
        "per reported epoch, `on_trial_complete` per trial): the time Tune's event loop waits "
        "before it can schedule, checkpoint or stop anything else. *Inline* makes every MLflow "
        "call there (metrics, the preview PNG and artifact uploads at a trial's end), as augsearch "
        "did before; *writer thread* only queues them for the tracker's single writer thread.",
        "", *lines, "",
        f"All driver callbacks per reported epoch: {before['per_epoch_ms']:.1f} ms inline, "
        f"{after['per_epoch_ms']:.1f} ms with the writer thread ({ratio:.0f}x less). Target (no "
        f"callback reaches Tune's {TUNE_WARN_S:g} s slow-callback warning, which augsearch no "
        f"longer raises to 5 s): **{verdict}** (slowest callback with the writer thread "
        f"{worst:.0f} ms; {before['slow']} inline callbacks took longer than {TUNE_WARN_S:g} s). "
        f"Trials ok: {after['ok']} (writer thread), {before['ok']} (inline)."])


if __name__ == "__main__":
    main()
