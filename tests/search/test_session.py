"""Resume guards that fail before any data, Ray or child is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.api import SearchOptions
from search.errors import SearchError
from search.session import RUN_FILE, SPACE_FILE, SearchSession
from search.strategies import get_strategy
from spaces.schema import load_space


def test_resume_needs_an_earlier_search(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="nothing to resume"):
        SearchSession(load_space("digits"), get_strategy("tpe"), SearchOptions(resume=True),
                      tmp_path)


def test_resume_refuses_another_searcher_and_keeps_the_seed(tmp_path: Path) -> None:
    (tmp_path / RUN_FILE).write_text(json.dumps({"searcher": "random", "seed": 7}))
    space = load_space("digits").replace(**{"child.epochs": 5, "reward.last_epochs": 1})
    (tmp_path / SPACE_FILE).write_text(json.dumps(space.model_dump(mode="json")))
    with pytest.raises(SearchError, match="holds a random search; resume it with --searcher "
                                          "random"):
        SearchSession(space, get_strategy("tpe"), SearchOptions(resume=True), tmp_path)
    session = SearchSession(load_space("digits"), get_strategy("random"),
                            SearchOptions(resume=True, seed=0), tmp_path)
    assert session.opts.seed == 7
    assert session.space.child.epochs == 5  # the saved space, not the one passed in
