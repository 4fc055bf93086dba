"""`reward.kind: density_matching` (Fast AutoAugment, Lim et al. 2019): score a policy with
children trained once, without training one per trial.

Before the search, a child is trained once per fold (`children.density`) as a Tune experiment
of K fixed runs (`folds`, nested MLflow runs tagged `stage=fold`, checkpointed every epoch like
any child training). Their final weights are read from the runs' last checkpoints and written
to `fold_models.pkl` in the output directory, so `--resume` never trains them again. The search
then runs through the same Tune path as child training, its trials getting the fold models
through Ray's object store and scoring their policy in one inference pass (`score_trial`),
reporting once and checkpointing nothing.

After the search, Fast AutoAugment's merge: the `top` policies of each fold's ranking, their
sub-policies in one longer policy. `reward.density.final` makes it (`merged`) or the best trial
(`single`) the search's proposal, which the confirmation stage retrains with real children
next to the base and the next best policies.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from search.errors import SearchError
from search.events import Progress, finite
from search.rewards.base import Proposal, RewardKind, register_reward_kind
from search.trials.config import TrialConfig, decode, encode
from search.trials.context import TrialContext
from search.trials.references import BASE, policy_of, reference_of
from search.trials.seeds import trial_seeds
from search.trials.trial import run_child
from spaces.policy import Policy, export_albumentations, save_policy
from spaces.schema import Space

FOLD_STAGE = "fold"  # the fold runs' MLflow stage tag and progress label
FOLD_EXPERIMENT = "folds"  # the fold stage's Tune experiment, beside the search's
FOLDS_FILE = "fold_models.pkl"  # the trained fold models (read on resume)
MERGED = "merged"  # the merged policy's name as a trial / confirmation candidate
MERGED_FILES = ("merged_policy.json", "merged_policy.yaml")


# ---------------------------------------------------------------- one trial of each stage


def score_trial(config: dict[str, Any], ctx: TrialContext, splits: Any, report: Any,
                restored: Any = None, folds: Any = None) -> dict[str, Any]:
    """Score one policy by density matching with the trained fold models (no training) and
    report the one result of the trial, without a checkpoint. Under common random numbers every
    policy is augmented from the same draws (the common seed), so scores differ by the policy."""
    from children.density import score_policy

    space = ctx.space
    seed, aug_seed = trial_seeds(ctx, config)
    score = score_policy(policy_of(space, config), folds, splits, space.reward.matching(),
                         space.child.base_augmentation, seed=seed, threads=ctx.threads,
                         augmentation=space.child.augmentation)
    result = {"epoch": 1, "reward": score.reward, "val_accuracy": score.accuracy,
              "val_nll": score.nll, "audit_accuracy": score.audit_accuracy,
              "fold_rewards": score.fold_rewards, "images_per_s": score.images / score.seconds,
              "score_seconds": score.seconds, "score_cpu_seconds": score.cpu_seconds,
              "common_seed": seed, "aug_seed": aug_seed,
              "tags": {"fold_rewards": " ".join(f"{v:.4f}" for v in score.fold_rewards),
                       "augmentation": score.augmentation}}
    report(result, None)
    return result


def train_fold(config: dict[str, Any], ctx: TrialContext, splits: Any, report: Any,
               restored: Any = None) -> Any:
    """Fold k's model: a child trained on the train split without fold k's held-out rows,
    which become its validation pool, scored on the whole of that pool."""
    from children.density import fold_training_splits, held_out_rows

    rows = held_out_rows(ctx.space.reward.matching(), splits.train.y, ctx.search_seed)
    reward = ctx.space.reward.model_copy(update={"validation": "pool"})
    return run_child(config, ctx, fold_training_splits(splits, rows[decode(config).fold]),
                     report, restored, reward=reward)


# ---------------------------------------------------------------- the fold stage


def fold_configs(space: Space) -> list[dict[str, Any]]:
    """The fold stage's runs: the base policy (crop/flip only), one run per fold."""
    return [encode(TrialConfig(reference=BASE, fold=k))
            for k in range(space.reward.matching().folds)]


def train_fold_models(plan: Any, tracker: Any, output: Path, resume: bool) -> Any:
    """The K fold models: read back from `fold_models.pkl`, or trained now (a resumed fold stage
    continues from its checkpoints). None when the stage was interrupted."""
    from search import tune
    from search.tracking.trials import STAGE_TAG

    path = output / FOLDS_FILE
    if resume and path.exists():
        print(f"[augsearch] fold models restored from {path}: not trained again", flush=True)
        return load_fold_models(path)
    space = plan.ctx.space
    configs = fold_configs(space)
    stage = replace(plan, configs=configs, name=FOLD_EXPERIMENT, trials=len(configs),
                    references=False, early_stop=False, extra_config={}, trial=train_fold,
                    cohort=1, ctx=replace(plan.ctx, record_schedule=False))
    again = resume and tune.can_resume(plan.storage, FOLD_EXPERIMENT)
    print(f"[augsearch] training {len(configs)} fold models (density matching), "
          f"{plan.resources.cpus:g} CPU / {plan.resources.gpus:g} GPU each", flush=True)
    listeners = [Progress(len(configs), stage=FOLD_STAGE),
                 tracker.stage({STAGE_TAG: FOLD_STAGE}, name="fold-{}", resume=again)]
    outcomes = tune.run_search(stage, listeners, resume=again)
    if len(outcomes) < len(configs) or any(o.status == "interrupted" for o in outcomes):
        return None
    models = collect(space, plan.splits, plan.seed, outcomes, tune.final_state)
    save_fold_models(models, path)
    return models


def collect(space: Space, splits: Any, seed: int, outcomes: list[Any],
            final_state: Any) -> Any:
    """Fold models from the fold stage's outcomes (their last checkpoints), in fold order; a
    fold that did not train stops the search, since no policy could be scored without it."""
    from children.density import FoldModels, held_out_rows

    by_fold = {decode(o.config).fold: o for o in outcomes}
    for k in sorted(by_fold):
        o = by_fold[k]
        if o.status != "ok" or o.checkpoint is None:
            raise SearchError(f"fold model {k} did not train ({o.status}: "
                              f"{o.error or 'no checkpoint'}); density matching needs all "
                              f"{len(by_fold)}; fix the child settings (e.g. lower "
                              f"child.optimizer.lr) and start a new search")
    states = [final_state(by_fold[k]).state.model for k in sorted(by_fold)]
    rows = held_out_rows(space.reward.matching(), splits.train.y, seed)
    return FoldModels.from_states(space.child, splits, rows, states)


def save_fold_models(models: Any, path: Path) -> None:
    temp = path.with_suffix(".tmp")
    with temp.open("wb") as f:
        pickle.dump(models, f, protocol=pickle.HIGHEST_PROTOCOL)
    temp.replace(path)  # whole or absent: an interrupted write is trained again on resume


def load_fold_models(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)  # written by this search (like Tune's own tuner.pkl)


def search_plan(plan: Any, models: Any) -> Any:
    """The search's Tune plan for density matching: its trials score with the fold models,
    shared through the object store, reporting once without a checkpoint."""
    return replace(plan, trial=score_trial, shared={"folds": models}, epochs=1, cohort=1)


# ---------------------------------------------------------------- after the search


def merged_policy(space: Space, outcomes: list[Any]) -> Policy | None:
    """Fast AutoAugment's final policy: the `top` searched policies of each fold's ranking
    (a trial in several folds' top is taken once), their sub-policies concatenated, best mean
    reward first. Reference arms are not merged. None when no searched trial has a score."""
    spec = space.reward.matching()
    scored = [o for o in outcomes if o.status == "ok" and not reference_of(o.config)
              and _fold_rewards(o, spec.folds)]
    if not scored:
        return None
    chosen: dict[str, Any] = {}
    for k in range(spec.folds):
        ranked = sorted(scored, key=lambda o: (-_fold_rewards(o, spec.folds)[k], o.trial_id))
        chosen.update({o.trial_id: o for o in ranked[:spec.top]})
    ordered = sorted(chosen.values(), key=lambda o: (-float(o.result["reward"]), o.trial_id))
    policies = [policy_of(space, o.config) for o in ordered]
    if any(p.draw is not None for p in policies):  # ops drawn per image: nothing to concatenate
        return None
    subs = tuple(s for p in policies for s in p.sub_policies)
    return Policy(subs, provenance={"merged_from": [o.trial_id for o in ordered],
                                    "top_per_fold": spec.top, "folds": spec.folds})


def merges(space: Space) -> bool:
    """Whether the search proposes the merged policy (`final`, or its family's default)."""
    return space.reward.matching().final_under(space.policy.family) == MERGED


def proposal_of(space: Space, merged: Policy | None) -> Proposal | None:
    """The merged policy as the search's proposal, chosen under `final: merged`."""
    if merged is None:
        return None
    prov = merged.provenance
    return Proposal(MERGED, merged, merges(space),
                    f"merged policy of trials {', '.join(prov['merged_from'])} (the top "
                    f"{prov['top_per_fold']} of each fold)")


def _fold_rewards(outcome: Any, folds: int) -> list[float]:
    values = outcome.result.get("fold_rewards")
    if not isinstance(values, list) or len(values) != folds or not all(map(finite, values)):
        return []
    return [float(v) for v in values]


def write_merged(space: Space, merged: Policy | None, output: Path) -> dict[str, Path]:
    """merged_policy.json (albumentations) and .yaml (augsearch)."""
    if merged is None:
        return {}
    base, size = space.child.base_augmentation, space.dataset.image_size
    json_name, yaml_name = MERGED_FILES
    return {json_name: export_albumentations(merged, base, size, output / json_name),
            yaml_name: save_policy(merged, output / yaml_name)}


def dry_run_lines(space: Space) -> list[str]:
    """The dry run's reward lines: how a policy is scored, the fold plan, the final policy."""
    spec, d, c = space.reward.matching(), space.dataset, space.child
    held = spec.held_out_size(d.train_size)
    score = "accuracy" if spec.score == "accuracy" else "-NLL of the true class"
    final = (f"merge of the top {spec.top} policies of each fold" if merges(space)
             else "the single best policy")
    return [
        f"  reward    density_matching (Fast AutoAugment): {score} of each fold model on its "
        f"held-out images under the policy ({spec.copies} augmented copies each), mean over "
        f"folds; no child is trained per trial",
        f"  folds     {spec.folds} fold models ({c.model}, {c.epochs} epochs, base augmentation "
        f"only), each trained once before the search on {d.train_size - held} of the "
        f"{d.train_size} train images and scoring the other {held}; {spec.folds} trainings "
        f"with the search's resources, resumable",
        f"  final     {final}; audit accuracy: the fold models on the {d.audit_size} audit "
        f"images under the policy",
    ]


# ---------------------------------------------------------------- the plug-in


class DensityMatching(RewardKind):
    """Fold models trained once; each trial one scoring pass with them."""

    name: ClassVar[str] = "density_matching"
    summary: ClassVar[str] = "fold models trained once score each policy in one inference pass"
    child_per_trial: ClassVar[bool] = False
    trial_words: ClassVar[str] = "one scoring pass"

    trial = staticmethod(score_trial)

    def prepare(self, plan: Any, tracker: Any, output: Path, resume: bool) -> Any:
        models = train_fold_models(plan, tracker, output, resume)
        return None if models is None else search_plan(plan, models)

    def resumable(self, output: Path) -> bool:
        from search import tune

        storage = tune.storage_of(output)
        return (output / FOLDS_FILE).exists() or tune.can_resume(storage,
                                                                         FOLD_EXPERIMENT)

    def trial_epochs(self, space: Space) -> int:
        return 1  # a trial reports once: it "trained" its one epoch

    def propose(self, space: Space, outcomes: list[Any]) -> Proposal | None:
        return proposal_of(space, merged_policy(space, outcomes))

    def export(self, space: Space, proposal: Proposal | None, output: Path) -> dict[str, Path]:
        """merged_policy.json (albumentations) and .yaml (augsearch), whatever `final` says, so
        both of density matching's answers can be evaluated."""
        return write_merged(space, None if proposal is None else proposal.policy, output)

    def summary_lines(self, space: Space) -> list[str]:
        return dry_run_lines(space)

    def proposal_text(self, space: Space) -> str:
        return "the merged policy" if merges(space) else "the best trial"

    def params(self, space: Space) -> dict[str, Any]:
        spec = space.reward.matching()
        resolved = spec.model_copy(update={"final": spec.final_under(space.policy.family)})
        return {f"density_{k}": v for k, v in resolved.model_dump().items()}

    def accuracy_reward(self, space: Space) -> bool:
        return space.reward.matching().score == "accuracy"


DENSITY_MATCHING = register_reward_kind(DensityMatching())
