"""One checked search run end to end: Ray, the output directory, tracking, the reward kind's own
stage, Tune, the confirmation, the outputs.

The request was checked completely by `search.prepare` before this starts. Ray starts (or is
attached to) first, and a cluster's resources are checked, before anything is written. Then the
output directory, the MLflow store and the parent run are created; if that set-up fails, a
directory this run created is removed again. The reward kind (`search.rewards`) prepares what
it needs once (density matching's fold models) and names the trial each Tune trial runs; after
the search it may propose a policy of its own and export files. Whatever finished is written out
even when the search is interrupted. Whatever stops the run after the tracker exists, writing
the outputs included, ends its MLflow record (parent run FAILED, or KILLED on Ctrl-C) and writes
every queued call before the exception reaches the caller unchanged.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, replace
from typing import Any

import yaml

from search.events import Progress
from search.prepare.checks import Prepared
from search.prepare.output import SPACE_FILE
from search.prepare.resume import RunRecord
from search.rewards import Proposal, reward_kind
from search.stages import confirm, headroom
from search.stages.outputs import SearchResult, leaderboard_rows, write_outputs
from search.tracking.trials import STAGE_TAG
from search.trials.config import TrialConfig, encode
from search.trials.context import TrialContext

CONFIRM_EXPERIMENT = "confirm"  # the confirmation stage's Tune experiment, beside the search's
CONFIRM_FILE = "confirm_candidates.json"  # what the confirmation retrains (read on resume)

# Statuses of trials that a resumed search does not run again.
ENDED = ("ok", "failed", "diverged")


@dataclass(frozen=True)
class Stages:
    """What the stages left: the leaderboard rows, the reward kind's proposal, the
    confirmation, whether a stage was interrupted, the headroom and why the search stopped
    after it ('' when it did not)."""

    rows: list[dict[str, Any]]
    proposal: Proposal | None
    confirmation: Any
    interrupted: bool
    headroom: Any = None
    stopped: str = ""


class SearchSession:
    """A prepared search; `run()` executes it and writes the outputs."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.space = prepared.space
        self.strategy = prepared.strategy
        self.kind = reward_kind(prepared.space)
        self.opts = prepared.opts
        self.output = prepared.output

    def run(self) -> SearchResult:
        from search import tune

        s = self.space.search
        connection = tune.connect(self.opts.address)
        tracker = None
        try:
            try:
                tune.check_resources(tune.Resources(s.cpus_per_trial, s.gpus_per_trial),
                                     cluster=connection.cluster)
                tracker = self._set_up()
                done = self._stages(tracker)
            finally:
                if connection.started:
                    tune.shutdown()
            result = write_outputs(self.space, self.strategy.name, done.rows, self.output,
                                   s.trials, done.confirmation, done.proposal, done.headroom,
                                   done.stopped)
            result.files.update(self.kind.export(self.space, done.proposal, self.output))
            result.notes, result.metrics = self.kind.result_notes(self.space, self.output)
            result.interrupted = done.interrupted
        except BaseException as err:
            if tracker is not None:
                tracker.abort(err)
            raise
        tracker.finish(result)
        if result.complete:  # a later --resume says so and starts nothing
            RunRecord.mark_finished(self.output)
        return result

    def _stages(self, tracker: Any) -> Stages:
        """The headroom check, the reward kind's own stage, the search and the confirmation."""
        plan = self._plan(self.prepared.splits)
        room, interrupted = self._headroom(plan, tracker)
        stopped = self._stop(room)
        if interrupted or stopped:
            return Stages([], None, None, interrupted, room, stopped)
        searching = self.kind.prepare(plan, tracker, self.output, self.opts.resume)
        outcomes = [] if searching is None else self._search(searching, tracker)
        rows = leaderboard_rows(self.space, outcomes)
        proposal = self.kind.propose(self.space, outcomes)
        confirmation, interrupted = self._confirm(plan, rows, tracker, proposal)
        return Stages(rows, proposal, confirmation, interrupted or searching is None, room)

    def _headroom(self, plan: Any, tracker: Any) -> tuple[Any, bool]:
        """The reference arms under fresh seeds before the search (a Tune experiment
        `headroom`, nested MLflow runs tagged stage=headroom): the headroom (None when off) and
        whether the stage was interrupted."""
        seeds = self.space.search.headroom_seeds
        cands = headroom.arms(self.space)
        if seeds == 0 or len(cands) < 2:
            return None, False
        configs = headroom.headroom_configs(cands, seeds)
        print(f"[augsearch] headroom: the base and {len(cands) - 1} reference arms under "
              f"{seeds} fresh seeds before the search: {len(configs)} trainings", flush=True)
        outcomes, complete = self._run_stage(plan, configs, tracker, headroom.HEADROOM)
        if not complete:
            return None, True
        measured = confirm.measurements(cands)
        confirm.record(measured, outcomes)
        room = headroom.decide(cands, measured, seeds)
        print(f"[augsearch] {room.text() if room else 'headroom: no arm finished a run'}",
              flush=True)
        return room, False

    def _stop(self, room: Any) -> str:
        """Why the search stops after the headroom check ('' when it goes on)."""
        if self.opts.headroom_only:
            return "--headroom-only: the search was not run"
        if self.opts.stop_without_headroom and (room is None or room.state != headroom.SHOWN):
            return "--stop-without-headroom: the headroom check showed none, so the search was " \
                   "not run"
        return ""

    def _search(self, plan: Any, tracker: Any) -> list[Any]:
        from search import tune

        print(f"[augsearch] {self.strategy.name} search on space {self.space.name}: "
              f"{plan.trials} trials, {plan.resources.cpus:g} CPU / "
              f"{plan.resources.gpus:g} GPU each; outputs in {self.output}", flush=True)
        listeners = [Progress(plan.trials, already_done=self._ended_before()), tracker]
        # a search interrupted in its reward kind's own stage (fold models) has no state yet
        resume = self.opts.resume and tune.can_resume(plan.storage, plan.name)
        return tune.run_search(plan, listeners, resume=resume)

    # ------------------------------------------------------------ confirmation

    def _confirm(self, plan: Any, rows: list[dict[str, Any]], tracker: Any,
                 proposal: Proposal | None) -> tuple[Any, bool]:
        """Train the top policies and the base under fresh seeds (a second Tune experiment,
        nested MLflow runs tagged stage=confirm); the search's rewards chose the candidates and
        are no replicate. Returns the confirmation (None when off; INTERRUPTED or FAILED, with
        its reason, when it was asked for and decided nothing) and whether it was
        interrupted."""
        s = self.space.search
        if s.confirm == 0:
            return None, False
        # The search's reward is no child's (PBT's changed policy mid-training, replayed from
        # its schedule; a reward kind that trains no child per trial): confirm.csv leaves it out.
        replay = self.strategy.population_based or not self.kind.child_per_trial
        if any(r["status"] == "interrupted" for r in rows) or len(rows) < s.trials:
            return confirm.Confirmation.unfinished(
                confirm.INTERRUPTED, "the search was interrupted before the confirmation ran",
                replay=replay), False
        cands = self._candidates(rows, proposal, replay)
        if cands is None:  # no searched policy finished: nothing to confirm
            return confirm.Confirmation.unfinished(
                confirm.FAILED, "no searched policy finished, so there was nothing to confirm",
                replay=replay), False
        measured = confirm.measurements(cands)
        configs = confirm.confirm_configs(cands, s.confirm_seeds)
        outcomes, complete = self._retrain(plan, configs, tracker, len(cands) - 1)
        confirm.record(measured, [o for o in outcomes if o.status != "interrupted"])
        if not complete:
            done = sum(o.status != "interrupted" for o in outcomes)
            return confirm.Confirmation.unfinished(
                confirm.INTERRUPTED, f"the confirmation was interrupted after {done} of its "
                f"{len(configs)} trainings", cands, measured, replay), True
        return confirm.Confirmation.decide(cands, measured, s.confirm_seeds, replay), False

    def _candidates(self, rows: list[dict[str, Any]], proposal: Proposal | None,
                    replay: bool) -> list[Any] | None:
        """What the confirmation retrains: the base, the kind's chosen proposal and the best
        policies (saved, so that a resume confirms the same ones); None when only the base."""
        saved = self.output / CONFIRM_FILE
        if self.opts.resume and saved.exists():  # the same candidates as before the interrupt
            return confirm.load_candidates(saved)
        top = self.space.search.confirm
        cands = confirm.candidates(rows, top, replay, self.kind.trial_epochs(self.space))
        cands = confirm.with_proposal(cands, proposal, top)
        if len(cands) < 2:
            return None
        confirm.save_candidates(cands, saved)
        return cands

    def _retrain(self, plan: Any, configs: list[dict[str, Any]], tracker: Any,
                 best: int) -> tuple[list[Any], bool]:
        """The confirmation's Tune experiment: its outcomes and whether every run ended."""
        print(f"[augsearch] confirming the {best} best policies and the base with "
              f"{self.space.search.confirm_seeds} fresh seeds: {len(configs)} trainings",
              flush=True)
        return self._run_stage(plan, configs, tracker, CONFIRM_EXPERIMENT)

    def _run_stage(self, plan: Any, configs: list[dict[str, Any]], tracker: Any,
                   name: str) -> tuple[list[Any], bool]:
        """Fixed runs as one more Tune experiment `name` on the same Ray, each trained by the
        reward kind's confirmation plan (a child, or the kind's own model per trial), with
        nested MLflow runs tagged stage=`name`: the outcomes and whether every run ended."""
        from search import tune

        stage = replace(self.kind.confirmation(plan), configs=configs, name=name,
                        trials=len(configs), references=False, early_stop=False, extra_config={},
                        ctx=replace(plan.ctx, record_schedule=False))
        resume = self.opts.resume and tune.can_resume(plan.storage, name)
        listeners = [Progress(len(configs), stage=name),
                     tracker.stage({STAGE_TAG: name}, name=f"{name}-{{}}", resume=resume)]
        outcomes = tune.run_search(stage, listeners, resume=resume)
        complete = len(outcomes) >= len(configs) and all(o.status != "interrupted"
                                                         for o in outcomes)
        return outcomes, complete

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
        """The search's Tune plan, before the reward kind names its trial."""
        from search import tune
        from search.tune import Resources, TunePlan

        s = self.space.search
        extra = encode(TrialConfig(crash_once=self.opts.crash_once or ""))
        return TunePlan(
            ctx=TrialContext(self.space, self.opts.seed or 0,
                             threads=max(1, int(s.cpus_per_trial)),
                             record_schedule=self.strategy.population_based),
            splits=splits, strategy=self.strategy,
            resources=Resources(s.cpus_per_trial, s.gpus_per_trial), trials=s.trials,
            concurrency=s.concurrency, storage=tune.storage_of(self.output),
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

