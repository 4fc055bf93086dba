"""The space schema: built-ins validate; a corpus of malformed spaces is each refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spaces.errors import SpaceError
from spaces.schema import builtin_spaces, load_space, parse_space
from tests.conftest import python_path

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_spaces_are_listed_and_valid() -> None:
    names = builtin_spaces()
    assert {"digits", "cifar10", "cifar100", "svhn"} <= set(names)
    for name in names:
        space = load_space(name)
        assert space.name == name
        assert space.policy.ops, name


def test_short_and_long_op_forms_are_equivalent() -> None:
    space = load_space("digits")
    rotate = next(o for o in space.policy.ops if o.name == "Rotate")
    assert rotate.magnitude == (0.0, 0.5)
    identity = next(o for o in space.policy.ops if o.name == "Identity")
    assert identity.magnitude == (0.0, 1.0)


def _base() -> dict:
    return yaml.safe_load((ROOT / "spaces" / "digits.yaml").read_text())


def _set(data: dict, path: str, value: object) -> dict:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_DELETE = object()

# (what is wrong, key path, value, words the error must contain)
MALFORMED = [
    ("unknown top-level key", "searcher", "tpe", ["searcher: unknown key"]),
    ("misspelt nested key", "child.epoch", 3, ["child.epoch: unknown key"]),
    ("missing section", "reward", _DELETE, ["reward: required key is missing"]),
    ("missing dataset size", "dataset.train_size", _DELETE,
     ["dataset.train_size: required key is missing"]),
    ("unknown op", "policy.ops", ["Rotat", "Invert"],
     ["policy.ops[0].name", "unknown op 'Rotat'", "known ops:", "AutoContrast"]),
    ("op listed twice", "policy.ops", ["Invert", "Invert"], ["'Invert' is listed twice"]),
    ("empty op list", "policy.ops", [], ["at least one op"]),
    ("magnitude bounds reversed", "policy.ops", [{"name": "Rotate", "magnitude": [0.9, 0.1]}],
     ["policy.ops[0].magnitude", "low <= high", "low=0.9, high=0.1"]),
    ("magnitude above 1", "policy.ops", [{"name": "Rotate", "magnitude": [0.0, 1.5]}],
     ["policy.ops[0].magnitude", "high=1.5"]),
    ("negative epochs", "child.epochs", -3, ["child.epochs", "greater than or equal to 1"]),
    ("epochs not a number", "child.epochs", "many", ["child.epochs", "valid integer"]),
    ("unknown dataset", "dataset.name", "imagenet", ["dataset.name", "'imagenet'"]),
    ("bad channel count", "dataset.channels", 2, ["dataset.channels"]),
    ("bad probability range", "policy.probability", [0.5, 0.2],
     ["policy.probability", "low=0.5, high=0.2"]),
    ("batch op range bad", "policy.batch_ops.mixup_alpha", [1.0, 0.0],
     ["mixup_alpha", "low=1, high=0"]),
    ("sample larger than pool", "reward.val_sample_size", 100000,
     ["val_sample_size <= dataset.val_pool_size", "val_sample_size=100000"]),
    ("reward epochs beyond training", "reward.last_epochs", 999,
     ["last_epochs <= child.epochs", "last_epochs=999"]),
    ("unknown child model", "child.model", "resnet9000",
     ["child.model", "unknown child model 'resnet9000'", "known models: basiccnn"]),
    ("misspelt child model", "child.model", "basicnn", ["did you mean 'basiccnn'?"]),
    ("unknown optimiser", "child.optimizer.name", "adagrad", ["child.optimizer.name"]),
    ("malformed reward kind", "reward.kind", "Distillation!",
     ["reward.kind", "a reward kind's name is lower-case", "'Distillation!'"]),
    ("density matching with batch ops", "reward.kind", "density_matching",
     ["`reward.kind: density_matching` cannot score batch ops (mixup_alpha)",
      "set `policy.batch_ops: {}`"]),
    ("density settings for child training", "reward.density", {"folds": 3},
     ["`density` applies to `kind: density_matching`, but kind is child_training"]),
    ("negative learning rate", "child.optimizer.lr", -0.1, ["child.optimizer.lr"]),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_space_is_refused_with_its_own_message(case: tuple) -> None:
    _, path, value, words = case
    text = yaml.safe_dump(_set(_base(), path, value))
    with pytest.raises(SpaceError) as info:
        parse_space(text, "spaces/my.yaml")
    message = str(info.value)
    assert message.startswith("spaces/my.yaml: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_reward_kind_is_any_name_the_search_may_have_registered() -> None:
    """spaces/ does not import search/: a well-formed kind passes here, and the search's
    preparation refuses one its registry lacks (tests/search/test_reward_kinds.py)."""
    text = yaml.safe_dump(_set(_base(), "reward.kind", "distillation"))
    assert parse_space(text, "s.yaml").reward.kind == "distillation"


def test_malformed_messages_are_distinct() -> None:
    messages = set()
    for _, path, value, _ in MALFORMED:
        with pytest.raises(SpaceError) as info:
            parse_space(yaml.safe_dump(_set(_base(), path, value)), "s.yaml")
        messages.add(str(info.value))
    assert len(messages) == len(MALFORMED)


def test_yaml_syntax_error_gives_the_line() -> None:
    text = "name: x\ndataset:\n  name: digits\n  train_size: [1, 2\nchild: {}\n"
    with pytest.raises(SpaceError, match=r"my.yaml: line \d+, column \d+: YAML syntax error"):
        parse_space(text, "my.yaml")


def test_not_a_mapping() -> None:
    with pytest.raises(SpaceError, match="must be a YAML mapping"):
        parse_space("- just\n- a list\n", "list.yaml")


def test_unknown_space_name_lists_builtins() -> None:
    with pytest.raises(SpaceError, match="unknown space 'cifar11'; built-in spaces: .*cifar10"):
        load_space("cifar11")


def test_missing_space_file() -> None:
    with pytest.raises(SpaceError, match="no such space file"):
        load_space("does/not/exist.yaml")


def test_user_space_file_by_path(tmp_path: Path) -> None:
    data = _set(_base(), "name", "mine")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_space(str(path)).name == "mine"


def test_replace_revalidates() -> None:
    space = load_space("digits")
    assert space.replace(**{"child.epochs": 4}).child.epochs == 4
    with pytest.raises(SpaceError, match="child.epochs"):
        space.replace(**{"child.epochs": 0})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.run", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_bad_space_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_set(_base(), "policy.ops", ["Rotat"])))
    proc = _cli("--space", str(path), "--dry-run")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown op 'Rotat'" in proc.stderr


def test_cli_unknown_space_and_searcher_exit_2() -> None:
    proc = _cli("--space", "nope", "--dry-run")
    assert proc.returncode == 2
    assert "built-in spaces: cifar10, cifar100, cifar10_ssl, digits, svhn" in proc.stderr
    proc = _cli("--searcher", "grid", "--dry-run")
    assert proc.returncode == 2 and "choose one of: tpe, random, pbt" in proc.stderr


def test_cli_dry_run_checks_the_data_and_summarises_without_starting_anything(
        tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "search.run", "--space", "digits", "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "space digits" in out and "ops (17)" in out
    assert "50 train, 600 validation pool, 800 audit, 300 test images (checked)" in out
    assert "dimensions 4" in out  # RandAugment's N, M, p + mixup
    assert out.count("\n  [") == 3
    assert list(tmp_path.iterdir()) == []  # no output directory, no MLflow store
    check = subprocess.run(
        [sys.executable, "-c",
         "import sys; from search.run import main; main(['--dry-run']); import ray; "
         "print('STARTED' if ray.is_initialized() or 'torch' in sys.modules else 'LIGHT')"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": python_path()})
    assert check.stdout.strip().endswith("LIGHT"), check.stdout + check.stderr


def test_a_space_file_that_is_not_utf8_is_a_space_error(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match=r"latin1.yaml: not UTF-8 text .*save the space file as "
                                         r"UTF-8"):
        load_space(str(path))


def _density(**density: object) -> dict:
    data = _set(_base(), "reward.kind", "density_matching")
    data["policy"]["batch_ops"] = {}
    data["reward"]["density"] = density
    return data


def test_density_matching_settings_default_and_validate() -> None:
    space = parse_space(yaml.safe_dump(_density()), "s.yaml")
    spec = space.reward.matching()
    assert (spec.folds, spec.held_out_share(), spec.final) == (5, 0.2, None)
    assert spec.final_under(space.policy.family) == "single"  # RandAugment draws ops per image
    assert spec.final_under("subpolicies") == "merged"  # Fast AutoAugment's merge
    assert spec.held_out_size(space.dataset.train_size) == 10
    assert parse_space(yaml.safe_dump(space.model_dump(mode="json")), "again.yaml") == space
    child = load_space("digits")
    assert child.reward.density is None and not child.reward.density_matching
    assert parse_space(yaml.safe_dump(child.model_dump(mode="json")), "again.yaml") == child


@pytest.mark.parametrize(("density", "words"), [
    ({"folds": 20, "held_out": 0.02}, ["each of the 20 folds holds out 1 of the 50 train images",
                                       "at least dataset.num_classes=10"]),
    ({"held_out": 0.9}, ["trains on 5", "raise dataset.train_size"]),
    ({"folds": 1}, ["reward.density.folds", "greater than or equal to 2"]),
    ({"held_out": 1.0}, ["reward.density.held_out", "less than 1"]),
    ({"copies": 0}, ["reward.density.copies"]),
    ({"score": "loss"}, ["reward.density.score", "'loss'"]),
    ({"final": "both"}, ["reward.density.final", "'both'"]),
    ({"tops": 3}, ["reward.density.tops: unknown key"]),
])
def test_bad_density_settings_are_refused_by_key(density: dict, words: list[str]) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(yaml.safe_dump(_density(**density)), "s.yaml")
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
