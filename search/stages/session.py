"""One checked search run end to end: Ray, the output directory, tracking, Tune, the outputs.

The request was checked completely by `search.prepare` before this starts. Ray starts (or is
attached to) first, and a cluster's resources are checked, before anything is written. Then the
output directory, the MLflow store and the parent run are created; if that set-up fails, a
directory this run created is removed again. Whatever finished is written out even when the
search is interrupted. Whatever stops the run after the tracker exists, writing the outputs
included, ends its MLflow record (parent run FAILED, or KILLED on Ctrl-C) and writes every
queued call before the exception reaches the caller unchanged.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from typing import Any

import yaml

from search import density
from search.events import Progress
from search.outputs import SearchResult, leaderboard_rows, write_outputs
from search.prepare import SPACE_FILE, Prepared
from search.resume import RunRecord
from search.tracking.trials import STAGE_TAG
from search.trial import CRASH_ONCE_KEY, TrialContext

CONFIRM_EXPERIMENT = "confirm"  # the confirmation stage's Tune experiment, beside the search's
CONFIRM_FILE = "confirm_candidates.json"  # what the confirmation retrains (read on resume)

# Statuses of trials that a resumed search does not run again.
ENDED = ("ok", "failed", "diverged")


class SearchSession:
    """A prepared search; `run()` executes it and writes the outputs."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.space = prepared.space
        self.strategy = prepared.strategy
        self.opts = prepared.opts
        self.output = prepared.output

    def run(self) -> SearchResult:
        from search import tune_adapter

        s = self.space.search
        resources = tune_adapter.Resources(s.cpus_per_trial, s.gpus_per_trial)
        connection = tune_adapter.connect(self.opts.address)
        tracker = None
        try:
            try:
                tune_adapter.check_resources(resources, cluster=connection.cluster)
                tracker = self._set_up()
                plan = self._plan(self.prepared.splits)
                searching = self._density_plan(plan, tracker) if self.density else plan
                outcomes = [] if searching is None else self._search(searching, tracker)
                rows = leaderboard_rows(self.space, outcomes)
                merged = density.merged_policy(self.space, outcomes) if self.density else None
                confirmation, interrupted = self._confirm(plan, rows, tracker, merged)
                interrupted = interrupted or searching is None
            finally:
                if connection.started:
                    tune_adapter.shutdown()
            proposal = density.proposal_row(self.space, merged) if self.density else None
            result = write_outputs(self.space, self.strategy.name, rows, self.output,
                                   self.space.search.trials, confirmation, proposal)
            result.files.update(density.write_merged(self.space, merged, self.output))
            result.interrupted = interrupted
        except BaseException as err:
            if tracker is not None:
                tracker.abort(err)
            raise
        tracker.finish(result)
        return result

    def _search(self, plan: Any, tracker: Any) -> list[Any]:
        from search import tune_adapter

        print(f"[augsearch] {self.strategy.name} search on space {self.space.name}: "
              f"{plan.trials} trials, {plan.resources.cpus:g} CPU / "
              f"{plan.resources.gpus:g} GPU each; outputs in {self.output}", flush=True)
        listeners = [Progress(plan.trials, already_done=self._ended_before()), tracker]
        # density matching: a search interrupted while its fold models trained has no state yet
        resume = self.opts.resume and tune_adapter.can_resume(plan.storage, plan.name)
        return tune_adapter.run_search(plan, listeners, resume=resume)

    # ------------------------------------------------------------ density matching

    @property
    def density(self) -> bool:
        return self.space.reward.density_matching

    def _density_plan(self, plan: Any, tracker: Any) -> Any:
        """The fold models (trained now, or restored), and the search plan that scores with
        them; None when the fold stage was interrupted."""
        models = density.train_fold_models(plan, tracker, self.output, self.opts.resume)
        return None if models is None else density.search_plan(plan, models)

    # ------------------------------------------------------------ confirmation

    def _confirm(self, plan: Any, rows: list[dict[str, Any]], tracker: Any,
                 merged: Any = None) -> tuple[Any, bool]:
        """Train the top policies and the base under fresh seeds (a second Tune experiment,
        nested MLflow runs tagged stage=confirm); the search's rewards chose the candidates and
        are no replicate. Returns the confirmation (None when off, the search is unfinished or
        the stage was interrupted) and whether it was interrupted."""
        from search import confirm, tune_adapter

        s = self.space.search
        unfinished = any(r["status"] == "interrupted" for r in rows) or len(rows) < s.trials
        if s.confirm == 0 or unfinished:
            return None, False
        # The search's reward is no child's (PBT's changed policy mid-training, replayed from
        # its schedule; density matching trained none): confirm.csv leaves it out.
        replay = self.strategy.population_based or self.density
        saved = self.output / CONFIRM_FILE
        if self.opts.resume and saved.exists():  # the same candidates as before the interrupt
            cands = confirm.load_candidates(saved)
        else:
            # a density-matching trial reports once: it "trained" its one epoch
            epochs = 1 if self.density else self.space.child.epochs
            cands = confirm.candidates(rows, s.confirm, replay, epochs)
            if self.density:  # the merged policy, under reward.density.final: merged
                cands = density.with_proposal(self.space, cands, merged, s.confirm)
            if len(cands) < 2:  # no searched policy finished: nothing to confirm
                return None, False
            confirm.save_candidates(cands, saved)
        measured = confirm.measurements(cands)
        configs = confirm.confirm_configs(cands, s.confirm_seeds)
        if configs:
            print(f"[augsearch] confirming the {len(cands) - 1} best policies and the base with "
                  f"{s.confirm_seeds} fresh seeds: {len(configs)} trainings", flush=True)
            stage = replace(plan, configs=configs, name=CONFIRM_EXPERIMENT, trials=len(configs),
                            references=False, early_stop=False, extra_config={},
                            ctx=replace(plan.ctx, record_schedule=False))
            resume = self.opts.resume and tune_adapter.can_resume(plan.storage,
                                                                  CONFIRM_EXPERIMENT)
            listeners = [Progress(len(configs), stage="confirm"),
                         tracker.stage({STAGE_TAG: confirm.CONFIRM}, name="confirm-{}",
                                       resume=resume)]
            outcomes = tune_adapter.run_search(stage, listeners, resume=resume)
            if len(outcomes) < len(configs) or any(o.status == "interrupted"
                                                   for o in outcomes):
                return None, True
            confirm.record(measured, outcomes)
        return confirm.Confirmation(cands, measured, confirm.verdict(cands, measured),
                                    replay), False

    # ------------------------------------------------------------ set-up

    def _set_up(self) -> Any:
        """Output directory, MLflow store and parent run, run record; undone if it fails."""
        from search.tracking import Tracker

        tracker = None
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            tracker = Tracker.connect(self.opts.tracking_uri, self.opts.experiment, self.space,
                                      self.output)
            if not self.opts.resume:
                text = yaml.safe_dump(self.space.model_dump(mode="json"), sort_keys=False)
                (self.output / SPACE_FILE).write_text(text, encoding="utf-8")
            tracker.start(self.space, self.strategy.name, self.opts, self.prepared.splits,
                          resume=self.opts.resume)
            if not self.opts.resume:
                RunRecord.of(self.prepared.space_key, self.strategy.name,
                             self.opts).write(self.output)
            return tracker
        except BaseException as err:
            if tracker is not None:
                tracker.abort(err)
            if not self.prepared.output_existed:
                shutil.rmtree(self.output, ignore_errors=True)
            raise

    def _plan(self, splits: Any) -> Any:
        from search import tune_adapter
        from search.tune_adapter import Resources, TunePlan

        s = self.space.search
        extra = {CRASH_ONCE_KEY: self.opts.crash_once} if self.opts.crash_once else {}
        return TunePlan(
            ctx=TrialContext(self.space, self.opts.seed or 0,
                             threads=max(1, int(s.cpus_per_trial)),
                             record_schedule=self.strategy.population_based),
            splits=splits, strategy=self.strategy,
            resources=Resources(s.cpus_per_trial, s.gpus_per_trial), trials=s.trials,
            concurrency=s.concurrency, storage=tune_adapter.storage_of(self.output),
            seed=self.opts.seed or 0,
            early_stop=bool(self.opts.early_stop), max_failures=self.opts.max_failures,
            extra_config=extra)

    def _ended_before(self) -> int:
        """Trials an interrupted search had ended (its leaderboard), for progress on resume.

        Errored and interrupted trials do not count: Tune runs them again.
        """
        board = self.output / "leaderboard.csv"
        if not self.opts.resume or not board.exists():
            return 0
        with board.open(encoding="utf-8") as f:
            return sum(1 for row in csv.DictReader(f) if row["status"] in ENDED)

