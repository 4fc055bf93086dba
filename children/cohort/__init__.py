"""A cohort: K children of one architecture trained together in one process, as one network.

`grouped`: the K models as one grouped network (`group_models`, `child_state`); `members`: the
cohort's training strategy for `children.trainer` and `train_cohort` (each member's batches,
losses, states and failures). The scales of fp16 loss scaling per member are
`children.scaling.MemberScaler`'s.
"""

from __future__ import annotations

from children.cohort.grouped import child_state, group_models
from children.cohort.members import Failure, train_cohort

__all__ = ["Failure", "child_state", "group_models", "train_cohort"]
