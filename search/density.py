"""Temporary (#18): the names search/session.py and search/prepare.py use until they ask the
reward kind (`search.rewards`); density matching itself is `search.rewards.density_matching`."""

from __future__ import annotations

from typing import Any

from search.rewards.density_matching import (
    FOLD_EXPERIMENT,
    FOLDS_FILE,
    merged_policy,
    proposal_of,
    search_plan,
    train_fold_models,
    write_merged,
)
from search.stages.confirm import Candidate
from search.stages.confirm import with_proposal as _with_proposal
from spaces.policy import Policy
from spaces.schema import Space

__all__ = ["FOLDS_FILE", "FOLD_EXPERIMENT", "merged_policy", "proposal_row", "search_plan",
           "train_fold_models", "with_proposal", "write_merged"]


def proposal_row(space: Space, merged: Policy | None) -> Any:
    return proposal_of(space, merged)


def with_proposal(space: Space, cands: list[Candidate], merged: Policy | None,
                  top: int) -> list[Candidate]:
    return _with_proposal(cands, proposal_of(space, merged), top)
