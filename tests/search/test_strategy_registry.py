"""The strategy registry is the one place a searcher is named: an unknown name is one line,
wherever it enters (the `--searcher` flag, the API, a resumed run's `run.json`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from search.api import search
from search.errors import SearchError
from search.run import main
from search.strategies import (
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)
from spaces.schema import load_space

UNKNOWN = "unknown searcher 'grid'; choose one of: tpe, random, pbt"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_built_ins_in_their_order() -> None:
    assert strategy_names() == ["tpe", "random", "pbt"]
    assert get_strategy("pbt").population_based and get_strategy("pbt").make_sampler is None


def test_tpe_keeps_its_settings_and_random_is_random() -> None:
    import optuna

    tpe = get_strategy("tpe").make_sampler(7)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._multivariate and tpe._group and tpe._constant_liar
    assert tpe._n_startup_trials == 8
    assert isinstance(get_strategy("random").make_sampler(7), optuna.samplers.RandomSampler)


def test_the_flag_refuses_an_unknown_searcher_in_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["--searcher", "grid", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"augsearch: error: {UNKNOWN}"
    assert not out.exists()


@pytest.mark.parametrize("searcher", ["grid", 3])
def test_the_api_refuses_an_unknown_searcher(tmp_path: Path, searcher) -> None:
    out = tmp_path / "out"
    with pytest.raises(SearchError) as err:
        search("digits", searcher, output=out)
    assert str(err.value) == f"unknown searcher {searcher!r}; choose one of: tpe, random, pbt"
    assert "\n" not in str(err.value) and not out.exists()


def test_a_resumed_run_json_naming_an_unknown_searcher_is_refused(tmp_path: Path,
                                                                  capsys) -> None:
    """A run record naming a searcher this installation does not have (a plug-in not imported,
    a hand-edited file): one line, and the directory is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(
        {"version": 1, "space": "digits", "searcher": "grid", "options": {"seed": 0}}))
    (out / "space.yaml").write_text(yaml.safe_dump(
        load_space("digits").model_dump(mode="json"), sort_keys=False))
    before = snapshot(out)
    with pytest.raises(SearchError, match=UNKNOWN):
        search(output=out, resume=True)
    assert main(["--resume", "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"augsearch: error: {UNKNOWN}"
    assert snapshot(out) == before


def test_a_plug_in_registers_once_and_is_found_by_name() -> None:
    toy = Strategy("toy-random", "a toy", lambda seed: None)
    register_strategy(toy)
    try:
        assert get_strategy("toy-random") is toy
        assert strategy_names()[-1] == "toy-random"
        with pytest.raises(ValueError, match="already registered"):
            register_strategy(Strategy("toy-random", "again", lambda seed: None))
    finally:
        unregister_strategy("toy-random")
    assert "toy-random" not in strategy_names()


def test_a_strategy_has_a_sampler_or_a_population() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        Strategy("neither", "no sampler, no population")
    with pytest.raises(ValueError, match="exactly one of"):
        Strategy("both", "both", lambda seed: None, population_based=True)
