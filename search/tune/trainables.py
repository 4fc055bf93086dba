"""The Tune function trainable: a plan's trial function (a reward kind's, without Ray) with Tune's
report and checkpoint calls, the only ones in augsearch."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune import Checkpoint

from search.trials.config import flat
from search.trials.context import Checkpointed, TrialContext
from search.trials.trial import run_child
from search.tune.connection import current_node_id
from search.tune.plan import TrialOutcome

STATE_FILE = "trial_state.pkl"


def load_checkpoint() -> Checkpointed | None:
    """The trial's checkpoint after a retry, a restore or a PBT exploit (None on a fresh start)."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d, open(os.path.join(d, STATE_FILE), "rb") as f:
        return pickle.load(f)


def report_epoch(metrics: dict[str, Any], saved: Checkpointed | None) -> None:
    """Report one epoch's metrics to Tune with a checkpoint of the trial's state (none for a
    trial with nothing to resume, such as a one-report trial or a diverged child)."""
    metrics = {**metrics, "node_id": current_node_id()}
    if saved is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, STATE_FILE), "wb") as f:
            pickle.dump(saved, f)
        tune.report(metrics, checkpoint=Checkpoint.from_directory(d))


def final_state(outcome: TrialOutcome) -> Checkpointed:
    """What a finished trial saved in its last checkpoint."""
    with outcome.checkpoint.as_directory() as d, open(os.path.join(d, STATE_FILE), "rb") as f:
        return pickle.load(f)


def trainable(config: dict[str, Any], ctx: TrialContext, splits: Any,
              trial: Callable[..., Any] | None = None, **shared: Any) -> None:
    """The Tune function trainable: the plan's trial (a reward kind's; by default one child
    training, or one cohort's, `search.trials.trial.run_child`), reporting through Tune,
    resumed from its last checkpoint after a retry, a restore or a PBT exploit."""
    run = trial or run_child
    run(flat(config), ctx, splits, report=report_epoch, restored=load_checkpoint(), **shared)
