"""Temporary (#18): the names search/session.py, search/tracking/trials.py and
tests/search/test_tracking.py import from here until they can be edited; one trial lives in
`search.trials`."""

from __future__ import annotations

from search.trials.config import policy_config
from search.trials.context import Checkpointed, TrialContext
from search.trials.trial import run_trial

CRASH_ONCE_KEY = "_crash_once"

__all__ = ["CRASH_ONCE_KEY", "Checkpointed", "TrialContext", "policy_config", "run_trial"]
