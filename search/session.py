"""One search run end to end: data, Ray, tracking, Tune, outputs.

Order matters for users: everything that can fail on bad input (space, data, tracking server,
resources) fails before any child trains, and whatever finished is written out even when the
search is interrupted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from search.errors import SearchError
from search.events import Progress
from search.outputs import SearchResult, leaderboard_rows, write_outputs
from search.strategies import Strategy
from search.trial import CRASH_ONCE_KEY, TrialContext
from spaces.schema import Space, parse_space

SPACE_FILE = "space.yaml"
RUN_FILE = "run.json"


class SearchSession:
    """A prepared search; `run()` executes it and writes the outputs."""

    def __init__(self, space: Space, strategy: Strategy, opts: Any, output: Path) -> None:
        self.strategy = strategy
        self.output = output
        self.opts = self._resumed_options(opts) if opts.resume else opts
        self.space = self._resumed_space(space) if opts.resume else space

    # ------------------------------------------------------------ set-up

    def _resumed_options(self, opts: Any) -> Any:
        """A resumed search keeps its searcher and seed (the seed fixes the data splits)."""
        path = self.output / RUN_FILE
        if not path.exists():
            raise SearchError(f"nothing to resume in {self.output}: no {RUN_FILE} there; "
                              f"drop --resume to start a new search")
        run = json.loads(path.read_text(encoding="utf-8"))
        if run["searcher"] != self.strategy.name:
            raise SearchError(f"{self.output} holds a {run['searcher']} search; resume it with "
                              f"--searcher {run['searcher']}")
        return dataclasses.replace(opts, seed=run["seed"])

    def _resumed_space(self, space: Space) -> Space:
        path = self.output / SPACE_FILE
        if not path.exists():
            raise SearchError(f"nothing to resume in {self.output}: no {SPACE_FILE} there; "
                              f"drop --resume to start a new search")
        return parse_space(path.read_text(encoding="utf-8"), str(path))

    def _save_space(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.space.model_dump(mode="json"), sort_keys=False)
        (self.output / SPACE_FILE).write_text(text, encoding="utf-8")
        run = {"searcher": self.strategy.name, "seed": self.opts.seed}
        (self.output / RUN_FILE).write_text(json.dumps(run, indent=2), encoding="utf-8")

    def _plan(self, splits: Any) -> Any:
        from search.tune_adapter import Resources, TunePlan

        s = self.space.search
        extra = {CRASH_ONCE_KEY: self.opts.crash_once} if self.opts.crash_once else {}
        return TunePlan(
            ctx=TrialContext(self.space, self.opts.seed, threads=max(1, int(s.cpus_per_trial)),
                             record_schedule=self.strategy.population_based),
            splits=splits, strategy=self.strategy,
            resources=Resources(s.cpus_per_trial, s.gpus_per_trial), trials=s.trials,
            concurrency=s.concurrency, storage=self.output / "ray", seed=self.opts.seed,
            early_stop=bool(self.opts.early_stop), max_failures=self.opts.max_failures,
            extra_config=extra)

    # ------------------------------------------------------------ running

    def run(self) -> SearchResult:
        from search.api import load_splits

        tracker = self._tracker()
        splits = load_splits(self.space, self.opts)
        if not self.opts.resume:
            self._save_space()
        from search import tune_adapter

        connection = tune_adapter.connect(self.opts.address)
        try:
            tune_adapter.check_resources(tune_adapter.Resources(
                self.space.search.cpus_per_trial, self.space.search.gpus_per_trial),
                cluster=connection.cluster)
            plan = self._plan(splits)
            print(f"[augsearch] {self.strategy.name} search on space {self.space.name}: "
                  f"{plan.trials} trials, {plan.resources.cpus:g} CPU / "
                  f"{plan.resources.gpus:g} GPU each; outputs in {self.output}", flush=True)
            listeners: list[Any] = [Progress(plan.trials, already_done=self._finished_before())]
            tracker.start(self.space, self.strategy.name, self.opts, splits,
                          resume=self.opts.resume)
            listeners.append(tracker)
            outcomes = tune_adapter.run_search(plan, listeners, resume=self.opts.resume)
        finally:
            if connection.started:
                tune_adapter.shutdown()
        result = write_outputs(self.space, self.strategy.name,
                               leaderboard_rows(self.space, outcomes), self.output,
                               self.space.search.trials)
        tracker.finish(result)
        return result

    def _finished_before(self) -> int:
        """Trials an interrupted search had finished (its leaderboard), for progress on resume."""
        board = self.output / "leaderboard.csv"
        if not self.opts.resume or not board.exists():
            return 0
        with board.open(encoding="utf-8") as f:
            return sum(1 for row in csv.DictReader(f) if row["status"] != "interrupted")

    def _tracker(self) -> Any:
        """The MLflow tracker, connected and checked before any child trains."""
        from search.tracking import Tracker

        return Tracker.connect(self.opts.tracking_uri, self.opts.experiment, self.space,
                               self.output)
