"""One trial of child training, without Ray: decode the config, train the child (or hand a
cohort's members to `search.trials.cohorts`), report each epoch with a checkpoint.

The Tune adapter's trainable runs a trial function like `run_child` with Tune's report and
checkpoint calls; keeping this part free of Ray lets it be tested and debugged by calling it
directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from search.trials.cohorts import members, run_cohort
from search.trials.config import decode, policy_config
from search.trials.context import Checkpointed, TrialContext
from search.trials.hooks import maybe_crash_once
from search.trials.references import policy_of
from search.trials.schedule import schedule_policies, schedule_to_json
from search.trials.seeds import trial_seeds
from spaces.policy import Policy

Report = Callable[[dict[str, Any], "Checkpointed | None"], None]  # metrics, checkpoint or None


def run_child(config: dict[str, Any], ctx: TrialContext, splits: Any, report: Report,
              restored: Checkpointed | None = None, reward: Any = None) -> Any:
    """A trial of child training (`reward.kind: child_training`, the trial the Tune adapter
    runs by default): a cohort's members trained together (`cohorts.run_cohort`), or one child
    (`run_trial`, scored by `reward`, default the space's). A diverging child is a failed trial,
    not a crash to retry: it reports reward NaN and status `diverged` without a checkpoint."""
    from children.train import DivergedError

    configs = members(config)
    if configs is not None:  # members fail alone: a cohort reports them, never raises
        return run_cohort(configs, ctx, splits, report, restored)
    try:
        return run_trial(config, ctx, splits, report, restored, reward)
    except DivergedError as err:
        report({"reward": float("nan"), "status": "diverged", "error": str(err)}, None)
        return None


def run_trial(config: dict[str, Any], ctx: TrialContext, splits: Any, report: Report,
              restored: Checkpointed | None = None, reward: Any = None) -> Any:
    """Train one child under the config's policy, calling `report` after every epoch.

    Every report carries the reward so far (the final reward at the last epoch), so schedulers
    (ASHA, PBT) and searchers see one consistent metric. While PBT records a schedule, the
    reward averages only epochs trained under the current policy (since its last explore, not
    the donor's epochs or the old policy's); until one of them is scored it is NaN. Ray's PBT
    reads the reward only at a perturbation, which falls on a scored epoch (its interval is a
    multiple of the validation interval, `search.tune.schedulers._aligned`, and an exploit
    carries the donor's perturbation time over), and it leaves NaN scores out of its quantiles.
    Returns
    the child's `Metrics`.
    """
    from children.train import reward_from_history, train_child

    space, reward = ctx.space, reward or ctx.space.reward
    cfg = policy_config(config)
    schedule = list(restored.schedule) if restored else []
    start = restored.state.epoch if restored and restored.state is not None else 0
    if ctx.record_schedule and (not schedule or schedule[-1][1] != cfg):
        schedule.append((start, cfg))
    seed, aug_seed = trial_seeds(ctx, config)

    def on_epoch(stats: Any, state: Any) -> None:
        metrics = dict(asdict(stats))  # stats.epoch counts from 1
        since = schedule[-1][0] if ctx.record_schedule else 0  # the current policy's start
        metrics["reward"] = reward_from_history(state.history, reward, since=since)[0]
        metrics["train_val_gap"] = stats.train_accuracy - stats.val_accuracy
        metrics["common_seed"], metrics["aug_seed"] = seed, aug_seed
        if ctx.record_schedule:
            metrics["schedule"] = json.dumps(schedule_to_json(space, schedule, space.child.epochs))
        report(metrics, Checkpointed(state, list(schedule)))
        maybe_crash_once(config, stats.epoch)

    return train_child(
        space.child, reward, policy_of(space, config), splits, seed=seed,
        aug_seed=aug_seed, threads=ctx.threads, on_epoch=on_epoch,
        state=restored.state if restored else None, schedule=_schedule(ctx, config, schedule),
    )


def _schedule(ctx: TrialContext, config: dict[str, Any],
              recorded: list[tuple[int, dict[str, Any]]]) -> Callable[[int], Policy] | None:
    """The policy per epoch: a PBT schedule being recorded or one being replayed, else None."""
    replay = decode(config).schedule
    if replay:
        return schedule_policies(ctx.space, [(int(start), cfg) for start, cfg in replay])
    return schedule_policies(ctx.space, recorded) if ctx.record_schedule else None
