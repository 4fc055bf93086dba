"""The Ray Tune adapter: the only package that imports `ray.tune`.

Ray renamed its report/checkpoint API several times; keeping every call here means the next
rename touches one package. Everything else in augsearch speaks in plain Python objects: a
`TunePlan` in, `TrialOutcome`s and listener events out. By concern: `plan` (what an experiment
runs, plain data), `connection` (Ray started or attached, resources checked), `trainables` (the
function trainable and its checkpoints), `searchers` (strategies as Tune search algorithms),
`schedulers` (PBT, ASHA, the param space), `callbacks` (driver-side events to listeners) and
`experiment` (the Tuner, run or restored).
"""

from __future__ import annotations

from search.tune.connection import (
    WORKER_ENV,
    Connection,
    check_resources,
    cluster_address,
    connect,
    current_node_id,
    local_node,
    precheck_resources,
    probe_address,
    shutdown,
)
from search.tune.experiment import can_resume, experiment_path, run_search, storage_of
from search.tune.plan import EXPERIMENT, METRIC, MODE, Resources, TrialOutcome, TunePlan
from search.tune.trainables import final_state, load_checkpoint, report_epoch, trainable

__all__ = ["EXPERIMENT", "METRIC", "MODE", "WORKER_ENV", "Connection", "Resources",
           "TrialOutcome", "TunePlan", "can_resume", "check_resources", "cluster_address",
           "connect", "current_node_id", "experiment_path", "final_state", "load_checkpoint",
           "local_node", "precheck_resources", "probe_address", "report_epoch", "run_search",
           "shutdown", "storage_of", "trainable"]
