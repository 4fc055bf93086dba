"""Preparing a search: every check it makes before anything exists (`checks.prepare`), by
concern: the flags (`options`), the run record `--resume` reads (`resume`), the output
directory (`output`), where a run writes (`paths`), and the dry run's summary (`summary`)."""

from __future__ import annotations

from search.prepare.checks import Prepared, apply_options, load_splits, prepare
from search.prepare.options import SearchOptions
from search.prepare.output import SPACE_FILE

__all__ = ["SPACE_FILE", "Prepared", "SearchOptions", "apply_options", "load_splits", "prepare"]
