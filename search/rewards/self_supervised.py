"""`reward.kind: self_supervised`: search the views of contrastive pre-training (SimCLR, Chen et
al. 2020; SelfAugment, Reed et al. 2021) for data with few or no labels.

Each trial pre-trains the space's child trunk with NT-Xent on two views per image drawn from its
policy (after the base crop/flip), on the train split's images without their labels and any
`dataset.unlabelled` images (`children.ssl`), checkpointing every epoch like a child training.
Its reward is a score of the frozen features: a linear probe (or k-NN) fitted on the
`dataset.labelled_size` labelled images and scored on the validation pool, or SelfAugment's
rotation prediction where there are no labels. The audit accuracy is the probe's on the audit
set (the rotation score there without labels), so the search's reward/audit Spearman of a
rotation-scored search with labels is the label-free score's rank correlation with the probe.

A trial trains a model over epochs, so ASHA can stop it early and the confirmation keeps the
selecting trial as replicate 0 (`child_per_trial`). PBT is refused: it would swap policies and
weights mid-training, and the pre-training loop does not replay a policy schedule. Cohorts are
refused: `children.cohort` trains supervised children only.

The reference arms are the base (crop/flip) and SimCLR's default views for CIFAR written in the
space's ops (`search.trials.simclr`), in place of TrivialAugment.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

from search.errors import SearchError
from search.rewards.base import RewardKind, register_reward_kind
from search.trials.cohorts import members
from search.trials.context import Checkpointed, TrialContext
from search.trials.hooks import maybe_crash_once
from search.trials.references import policy_of
from search.trials.seeds import trial_seeds
from search.trials.simclr import JITTER_OPS, simclr_policy, simclr_text
from spaces.schema import Space

# ---------------------------------------------------------------- one trial


def run_ssl(config: dict[str, Any], ctx: TrialContext, splits: Any, report: Any,
            restored: Checkpointed | None = None) -> Any:
    """One trial: pre-train under the config's views, report every epoch with a checkpoint (the
    reward so far: `reward_from_history` over the scored epochs). A diverging run is a failed
    trial (reward NaN, status `diverged`), not a crash to retry."""
    from children.errors import DivergedError
    from children.reward import reward_from_history
    from children.ssl import pretrain_ssl

    if members(config) is not None:
        raise ValueError("reward.kind: self_supervised trains no cohorts; use search.cohort: 1")
    space = ctx.space
    seed, aug_seed = trial_seeds(ctx, config)

    def on_epoch(stats: Any, state: Any) -> None:
        metrics = dict(asdict(stats))
        metrics["reward"] = reward_from_history(state.history, space.reward)[0]
        metrics["train_val_gap"] = math.nan  # contrastive accuracy and a probe's: no gap
        metrics["common_seed"], metrics["aug_seed"] = seed, aug_seed
        report(metrics, Checkpointed(state))
        maybe_crash_once(config, stats.epoch)

    try:
        return pretrain_ssl(space.child, space.reward, policy_of(space, config), splits,
                            seed=seed, aug_seed=aug_seed, threads=ctx.threads, on_epoch=on_epoch,
                            state=restored.state if restored else None)
    except DivergedError as err:
        report({"reward": math.nan, "status": "diverged", "error": str(err)}, None)
        return None


# ---------------------------------------------------------------- the floor

FLOOR_FILE = "floor.json"


def measure_floor(plan: Any) -> dict[str, Any]:
    """The untrained trunk's scores at the search's common seed (the initial weights of every
    trial's first replicate), on the driver's CPU."""
    from children.ssl import untrained_scores

    space = plan.ctx.space
    seed, _ = trial_seeds(plan.ctx, {})
    s = untrained_scores(space.child, space.reward, plan.splits, seed)
    return {"seed": seed, "score": space.reward.contrastive().score,
            "reward": _finite(s["val_accuracy"]), "audit": _finite(s["audit_accuracy"]),
            **{k: _finite(s[f"{k}_accuracy"]) for k in ("probe", "knn", "rotation")
               if f"{k}_accuracy" in s}}


def floor_text(floor: dict[str, Any]) -> str:
    return (f"the untrained trunk (seed {floor['seed']}, before any pre-training) scores "
            f"{floor['reward']:.4f} by the reward ({floor['score']}) and {floor['audit']:.4f} "
            f"on the audit images: a policy's reward shows learned features only above it")


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


# ---------------------------------------------------------------- the plug-in


def score_text(space: Space) -> str:
    """How a trial's reward is measured, in one line."""
    spec, d = space.reward.contrastive(), space.dataset
    labelled = d.train_size if d.labelled_size is None else d.labelled_size
    if spec.score == "rotation":
        how = (f"rotation prediction (0/90/180/270) by a linear classifier fitted on "
               f"{spec.rotation_images} pre-training images, on the rotated validation pool")
    elif spec.score == "knn":
        how = f"{spec.knn_k}-NN accuracy on the validation pool among {labelled} labelled images"
    else:
        how = (f"a linear probe fitted on {labelled} labelled images ({spec.probe_steps} "
               f"steps), its accuracy on the validation pool")
    n = space.reward.last_epochs
    return (f"{how}, of frozen features; "
            + ("at the last epoch" if n == 1 else f"mean of the last {n} epochs"))


class SelfSupervised(RewardKind):
    """A model pre-trained contrastively per trial; its frozen features' score is the reward."""

    name: ClassVar[str] = "self_supervised"
    summary: ClassVar[str] = ("contrastive pre-training under the policy's views; a probe of "
                              "its frozen features")
    trial = staticmethod(run_ssl)
    child_per_trial: ClassVar[bool] = True

    def check(self, space: Space, strategy: Any, opts: Any) -> None:
        """PBT swaps policies and weights mid-training (the pre-training replays no schedule);
        cohorts group supervised children only."""
        if strategy.population_based:
            raise SearchError(f"--searcher {strategy.name} cannot search with reward.kind: "
                              f"{self.name} (space {space.name}): contrastive pre-training "
                              f"replays no policy schedule; use --searcher tpe or random")
        if space.search.cohort > 1:
            raise SearchError(f"--cohort {space.search.cohort} (search.cohort, space "
                              f"{space.name}) cannot be used: reward.kind: {self.name} "
                              f"pre-trains one model per trial; use --cohort 1")

    def prepare(self, plan: Any, tracker: Any, output: Any, resume: bool) -> Any:
        """The floor first (`floor.json`): the untrained trunk every trial starts from, scored
        as a trial is; then the trials."""
        path = Path(output) / FLOOR_FILE
        if not (resume and path.is_file()):
            floor = measure_floor(plan)
            path.write_text(json.dumps(floor, indent=2), encoding="utf-8")
            print(f"[augsearch] {floor_text(floor)}", flush=True)
        return replace(plan, trial=self.trial, cohort=1)

    def result_notes(self, space: Space, output: Path) -> tuple[list[str], dict[str, float]]:
        """The floor beside the best reward: a policy's reward shows learned features only
        above it."""
        path = Path(output) / FLOOR_FILE
        if not path.is_file():
            return [], {}
        floor = json.loads(path.read_text(encoding="utf-8"))
        return ([f"floor: {floor_text(floor)}"],
                {"floor_reward": floor["reward"], "floor_audit": floor["audit"]})

    def summary_lines(self, space: Space) -> list[str]:
        d, c, spec = space.dataset, space.child, space.reward.contrastive()
        extra = f" + the images in {d.unlabelled}" if d.unlabelled else ""
        labels = ("no labels" if d.labelled_size == 0 else
                  f"{d.labelled_size if d.labelled_size is not None else d.train_size} "
                  f"labelled")
        simclr = simclr_policy(space)
        return [
            f"  reward    {self.name}: {score_text(space)}",
            f"  pretrain  {c.model} trunk + projection head ({spec.projection_dim}-d), NT-Xent "
            f"at temperature {spec.temperature:g}, {c.epochs} epochs on the {d.train_size} "
            f"train images{extra} ({labels}), two views per image from the policy",
            f"  audit     {'rotation score' if d.labelled_size == 0 else 'probe accuracy'} on "
            f"the {d.audit_size} audit images",
            f"  simclr    {simclr_text(space) if simclr else 'no arm: the space lists none of '}"
            f"{'' if simclr else ', '.join(JITTER_OPS)}",
        ]

    def params(self, space: Space) -> dict[str, Any]:
        d = space.dataset
        out = {f"ssl_{k}": v for k, v in space.reward.contrastive().model_dump().items()}
        out.update(labelled_size=d.labelled_size if d.labelled_size is not None
                   else d.train_size, unlabelled=d.unlabelled or "")
        return out

    def provenance(self, space: Space) -> dict[str, Any]:
        return {"reward_kind": self.name, "ssl_score": space.reward.contrastive().score}

    def accuracy_reward(self, space: Space) -> bool:
        """A probe's or k-NN's accuracy, like the audit's; a rotation score is comparable with
        the audit only where that is a rotation score too (no labels)."""
        return (space.reward.contrastive().score != "rotation"
                or space.dataset.labelled_size == 0)


SELF_SUPERVISED = register_reward_kind(SelfSupervised())
