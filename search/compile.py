"""Temporary (#18): an alias of `search.trials.compile` for files that still import
`search.compile` (search/session.py, search/prepare.py, search/tracking/*,
tests/search/test_tracking.py) until they can be edited."""

from __future__ import annotations

import importlib
import sys

sys.modules[__name__] = importlib.import_module("search.trials.compile")
