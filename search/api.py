"""The search as one function call: `search("cifar10", "tpe", trials=64) -> SearchResult`.

The CLI is a thin layer over the same two steps: `search.prepare.prepare` checks everything
(flags, space, data, resources, output, tracking) without creating anything, then
`search.stages.session.SearchSession` runs the checked request.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.prepare.checks import Prepared, prepare
from search.prepare.options import SearchOptions, option_names
from search.stages.outputs import SearchResult
from search.stages.session import SearchSession
from spaces.schema import Space


def search(space: str | Path | Space | None = None, searcher: str | None = None,
           **options: Any) -> SearchResult:
    """Search augmentation policies for `space` with `searcher` (tpe, random, pbt).

    Keyword options are those of `SearchOptions` (the CLI flags). Returns the best policy, the
    leaderboard and the paths of the files written to the output directory. `space` defaults to
    digits and `searcher` to tpe, or with `resume=True` to the interrupted search's own;
    `resume=True` on a search that finished raises `search.errors.SearchFinished` (nothing to do).
    """
    return SearchSession(prepare(space, searcher, SearchOptions.build(options))).run()


def prepare_from_args(args: argparse.Namespace) -> Prepared:
    """The CLI's flags, checked (a dry run stops here)."""
    names = set(option_names()) - {"max_failures", "crash_once"}
    opts = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    return prepare(args.space, args.searcher, SearchOptions.build(opts))


def run_prepared(prepared: Prepared) -> SearchResult:
    """Run a checked search."""
    return SearchSession(prepared).run()


__all__ = ["SearchOptions", "SearchResult", "prepare_from_args", "run_prepared", "search"]
