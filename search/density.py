"""Density matching in a search: the fold stage, the search plan that uses it, the merged policy.

Before the search, a child is trained once per fold (`children.density`) as a Tune experiment
of K fixed runs (`folds`, nested MLflow runs tagged `stage=fold`, checkpointed every epoch like
any child training). Their final weights are read from the runs' last checkpoints and written
to `fold_models.pkl` in the output directory, so `--resume` never trains them again. The search
then runs through the same Tune path as child training, with a trainable that gets the fold
models through Ray's object store (`tune.with_parameters`) and scores its policy in one
inference pass, reporting once and checkpointing nothing.

After the search, Fast AutoAugment's merge: the `top` policies of each fold's ranking, their
sub-policies in one longer policy. `reward.density.final` makes it (`merged`) or the best trial
(`single`) the search's proposal, which the confirmation stage retrains with real children
next to the base and the next best policies.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from search.confirm import Candidate
from search.errors import SearchError
from search.events import Progress, finite
from search.references import BASE, policy_of, reference_of
from search.trials.config import TrialConfig, decode, encode
from spaces.policy import Policy, export_albumentations, policy_to_dict, save_policy
from spaces.schema import Space

FOLD_STAGE = "fold"  # the fold runs' MLflow stage tag and progress label
FOLD_EXPERIMENT = "folds"  # the fold stage's Tune experiment, beside the search's
FOLDS_FILE = "fold_models.pkl"  # the trained fold models (read on resume)
MERGED = "merged"  # the merged policy's name as a trial / confirmation candidate
MERGED_FILES = ("merged_policy.json", "merged_policy.yaml")


def held_out_rows(space: Space, y: np.ndarray, seed: int) -> list[np.ndarray]:
    """The train-split rows each fold holds out (deterministic from the search seed)."""
    from children.density import fold_rows

    spec = space.reward.matching()
    return fold_rows(y, spec.folds, spec.held_out_share(), seed)


def fold_configs(space: Space) -> list[dict[str, Any]]:
    """The fold stage's runs: the base policy (crop/flip only), one run per fold."""
    return [encode(TrialConfig(reference=BASE, fold=k))
            for k in range(space.reward.matching().folds)]


# ---------------------------------------------------------------- the fold stage


def train_fold_models(plan: Any, tracker: Any, output: Path, resume: bool) -> Any:
    """The K fold models: read back from `fold_models.pkl`, or trained now (a resumed fold stage
    continues from its checkpoints). None when the stage was interrupted."""
    from search import tune_adapter
    from search.tracking.trials import STAGE_TAG

    path = output / FOLDS_FILE
    if resume and path.exists():
        print(f"[augsearch] fold models restored from {path}: not trained again", flush=True)
        return load_fold_models(path)
    space = plan.ctx.space
    configs = fold_configs(space)
    stage = replace(plan, configs=configs, name=FOLD_EXPERIMENT, trials=len(configs),
                    references=False, early_stop=False, extra_config={},
                    ctx=replace(plan.ctx, record_schedule=False))
    again = resume and tune_adapter.can_resume(plan.storage, FOLD_EXPERIMENT)
    print(f"[augsearch] training {len(configs)} fold models (density matching), "
          f"{plan.resources.cpus:g} CPU / {plan.resources.gpus:g} GPU each", flush=True)
    listeners = [Progress(len(configs), stage=FOLD_STAGE),
                 tracker.stage({STAGE_TAG: FOLD_STAGE}, name="fold-{}", resume=again)]
    outcomes = tune_adapter.run_search(stage, listeners, resume=again)
    if len(outcomes) < len(configs) or any(o.status == "interrupted" for o in outcomes):
        return None
    models = collect(space, plan.splits, plan.seed, outcomes, tune_adapter.final_state)
    save_fold_models(models, path)
    return models


def collect(space: Space, splits: Any, seed: int, outcomes: list[Any],
            final_state: Any) -> Any:
    """Fold models from the fold stage's outcomes (their last checkpoints), in fold order; a
    fold that did not train stops the search, since no policy could be scored without it."""
    from children.density import FoldModels

    by_fold = {decode(o.config).fold: o for o in outcomes}
    for k in sorted(by_fold):
        o = by_fold[k]
        if o.status != "ok" or o.checkpoint is None:
            raise SearchError(f"fold model {k} did not train ({o.status}: "
                              f"{o.error or 'no checkpoint'}); density matching needs all "
                              f"{len(by_fold)}; fix the child settings (e.g. lower "
                              f"child.optimizer.lr) and start a new search")
    states = [final_state(by_fold[k]).state.model for k in sorted(by_fold)]
    rows = held_out_rows(space, splits.train.y, seed)
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
    """The search's Tune plan with density matching's trainable: fold models shared through the
    object store, one report per trial and no checkpoint."""
    from search import tune_adapter

    return replace(plan, trainable=tune_adapter.density_trainable, shared={"folds": models},
                   epochs=1)


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
    subs = tuple(s for o in ordered for s in policy_of(space, o.config).sub_policies)
    return Policy(subs, provenance={"merged_from": [o.trial_id for o in ordered],
                                    "top_per_fold": spec.top, "folds": spec.folds})


def _fold_rewards(outcome: Any, folds: int) -> list[float]:
    values = outcome.result.get("fold_rewards")
    if not isinstance(values, list) or len(values) != folds or not all(map(finite, values)):
        return []
    return [float(v) for v in values]


def merged_config(merged: Policy) -> dict[str, Any]:
    """A config naming the merged policy explicitly (it is no point of the searched space)."""
    return encode(TrialConfig(policy=policy_to_dict(merged)))


def proposal_row(space: Space, merged: Policy | None) -> dict[str, Any] | None:
    """The row to export when nothing is confirmed: the merged policy under `final: merged`
    (None: the best trial, as for child training)."""
    if space.reward.matching().final != MERGED or merged is None:
        return None
    return {"trial_id": MERGED, "reward": math.nan, "audit_accuracy": math.nan,
            "config": merged_config(merged), "schedule": None}


def with_proposal(space: Space, cands: list[Candidate], merged: Policy | None,
                  top: int) -> list[Candidate]:
    """The confirmation's candidates: the base, the merged policy under `final: merged`, then
    the best trials, `top` besides the base in all."""
    if space.reward.matching().final != MERGED or merged is None:
        return cands
    return [cands[0], Candidate(MERGED, merged_config(merged)), *cands[1:]][:top + 1]


def write_merged(space: Space, merged: Policy | None, output: Path) -> dict[str, Path]:
    """merged_policy.json (albumentations) and .yaml (augsearch), whatever `final` says, so both
    of density matching's answers can be evaluated."""
    if merged is None:
        return {}
    base, size = space.child.base_augmentation, space.dataset.image_size
    json_name, yaml_name = MERGED_FILES
    return {json_name: export_albumentations(merged, base, size, output / json_name),
            yaml_name: save_policy(merged, output / yaml_name)}
