"""`policy.family` in a space: the family's settings (defaults, fixed values, errors that name
the key) and what the RandAugment and TrivialAugment families decode a config to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from search.trials.compile import count_dimensions, decode, flat_dimensions
from search.trials.references import identity_config
from spaces.drawn import Draw, DrawnOp
from spaces.errors import SpaceError
from spaces.families import family_of
from spaces.ops import get_op
from spaces.policy import policy_from_dict
from spaces.schema import builtin_spaces, load_space, parse_space
from tests.spaces.family_spaces import family_space, family_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_built_in_space_names_a_family_whose_policies_use_its_ops() -> None:
    from search.trials.compile import sample_policies

    for name in builtin_spaces():
        space = load_space(name)
        assert family_of(space).name == space.policy.family, name
        ops = {o.name for o in space.policy.ops}
        for policy in sample_policies(space, 5, seed=0):
            assert set(policy.op_names()) <= ops, name


def test_defaults_need_no_family_section_and_no_sub_policy_keys() -> None:
    ra = family_space("randaugment")
    assert [(d.name, d.low, d.high, d.integer) for d in flat_dimensions(ra)] == [
        ("ra_n", 1, 3, True), ("ra_magnitude", 0.0, 1.0, False),
        ("ra_probability", 0.5, 1.0, False), ("mixup_alpha", 0.0, 0.4, False)]
    ta = family_space("trivialaugment")
    assert [d.name for d in flat_dimensions(ta)] == ["ta_ceiling", "mixup_alpha"]
    assert count_dimensions(ta) == 2 and identity_config(ta) is None
    assert family_of(ta).settings(ta).levels == 11


def test_a_range_of_one_point_is_fixed_and_searches_nothing() -> None:
    space = family_space("randaugment", {"n": [2, 2], "magnitude": [0.3, 0.3],
                                         "probability": [1, 1]}, batch_ops={})
    assert flat_dimensions(space) == [] and count_dimensions(space) == 0
    policy = decode(space, {})
    assert policy.draw is not None and policy.draw.n == 2 and policy.draw.levels == 1
    rotate = next(op for op in policy.draw.ops if op.name == "Rotate")
    assert rotate == DrawnOp("Rotate", (0.15, 0.15), 1.0)  # 0.3 of Rotate's [0, 0.5]


def test_randaugment_applies_one_shared_magnitude_as_a_fraction_of_each_range() -> None:
    space = family_space("randaugment")
    policy = decode(space, {"ra_n": 3, "ra_magnitude": 0.5, "ra_probability": 0.75,
                            "mixup_alpha": 0.1})
    declared = {o.name: o.magnitude for o in space.policy.ops}
    assert policy.draw.n == 3 and len(policy.draw.ops) == len(declared)
    for op in policy.draw.ops:
        low, high = declared[op.name]
        level = low + 0.5 * (high - low) if get_op(op.name).has_magnitude else 0.0
        assert op.magnitude == (pytest.approx(level), pytest.approx(level))
        assert op.probability == 0.75
    assert policy.batch.mixup_alpha == 0.1


def test_trivialaugment_draws_each_magnitude_up_to_the_ceiling_of_its_range() -> None:
    space = family_space("trivialaugment", {"ceiling": [0.2, 0.8], "levels": 31})
    policy = decode(space, {"ta_ceiling": 0.6})
    assert policy.draw.n == 1 and policy.draw.levels == 31
    shear = next(op for op in policy.draw.ops if op.name == "ShearX")
    assert shear.magnitude == (0.0, pytest.approx(0.48)) and shear.probability == 1.0  # 0.6*0.8
    assert next(op for op in policy.draw.ops if op.name == "Invert").magnitude == (0.0, 0.0)
    assert policy.draw == decode(space, {"ta_ceiling": 0.6}).draw


def _refused(data: dict[str, Any]) -> str:
    with pytest.raises(SpaceError) as info:
        parse_space(yaml.safe_dump(data), "mine.yaml")
    return str(info.value)


def _with(name: str, section: dict | None = None, **policy: Any) -> dict[str, Any]:
    """The digits space under family `name` with its section, and `policy` keys set."""
    data = family_yaml(name, section)
    data["policy"].update(policy)
    return data


REFUSED = [
    ("unknown family", _with("randaugment", family="randaugmnet"),
     ["policy.family: unknown policy family 'randaugmnet'",
      "registered families: subpolicies, randaugment, trivialaugment"]),
    ("N reversed", _with("randaugment", {"n": [3, 1]}),
     ["policy.randaugment.n", "`1 <= low <= high <= 16` must hold", "low=3, high=1"]),
    ("N of 0", _with("randaugment", {"n": [0, 2]}), ["policy.randaugment.n", "low=0"]),
    ("M above 1", _with("randaugment", {"magnitude": [0.2, 1.5]}),
     ["policy.randaugment.magnitude", "high=1.5"]),
    ("M as one number", _with("randaugment", {"magnitude": 0.5}),
     ["policy.randaugment.magnitude", "write [0.5, 0.5] for a fixed value"]),
    ("noise", _with("randaugment", {"noise": [0, 0.2]}),
     ["policy.randaugment.noise: unknown key"]),
    ("ceiling reversed", _with("trivialaugment", {"ceiling": [0.9, 0.1]}),
     ["policy.trivialaugment.ceiling", "low=0.9, high=0.1"]),
    ("one level", _with("trivialaugment", {"levels": 1}),
     ["policy.trivialaugment.levels", "greater than or equal to 2"]),
    ("another family's section", _with("randaugment", trivialaugment={"ceiling": [0.1, 1]}),
     ["`policy.trivialaugment` applies to `policy.family: trivialaugment`, but family is "
      "randaugment"]),
    ("a section without its family", _with("subpolicies", randaugment={"n": [1, 2]}),
     ["`policy.randaugment` applies to `policy.family: randaugment`, but family is "
      "subpolicies"]),
    ("a sub-policy key", _with("randaugment", sub_policies=3),
     ["`policy.sub_policies` applies to `policy.family: subpolicies`, but family is "
      "randaugment; remove it"]),
    ("a fixed probability of the sub-policies", _with("trivialaugment", probability=[0.5, 0.5]),
     ["`policy.probability` applies to `policy.family: subpolicies`"]),
]


@pytest.mark.parametrize("what,data,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_family_settings_are_refused_naming_the_key(what: str, data: dict,
                                                         words: list[str]) -> None:
    message = _refused(data)
    assert message.startswith("mine.yaml: ") and "\n" not in message
    for word in words:
        assert word in message, (what, message)


def test_density_matching_cannot_merge_drawn_policies_but_picks_one_by_default() -> None:
    data = _with("randaugment", batch_ops={})
    data["reward"]["kind"] = "density_matching"
    space = parse_space(yaml.safe_dump(data), "mine.yaml")  # `final` left out: single here
    assert space.reward.matching().final_under(space.policy.family) == "single"
    data["reward"]["density"] = {"final": "merged"}
    assert "`reward.density.final: merged` concatenates" in _refused(data)
    data["reward"]["density"] = {"final": "single"}
    assert parse_space(yaml.safe_dump(data), "mine.yaml").policy.family == "randaugment"


def test_a_family_space_survives_replace_and_its_own_dump() -> None:
    space = family_space("trivialaugment", {"ceiling": [0.3, 0.9]})
    again = space.replace(**{"child.epochs": 3})
    assert again.policy == space.policy and again.child.epochs == 3
    dumped = yaml.safe_dump(space.model_dump(mode="json"))
    assert parse_space(dumped, "space.yaml") == space


def test_ops_drawn_per_image_reach_every_op_of_the_space() -> None:
    space = family_space("randaugment")
    policy = decode(space, {"ra_n": 1, "ra_magnitude": 0.2, "ra_probability": 1.0})
    assert isinstance(policy.draw, Draw)
    assert policy.op_names() == [o.name for o in space.policy.ops]


def _yaml_blocks(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    return [yaml.safe_load(block.split("```", 1)[0]) for block in text.split("```yaml\n")[1:]]


def test_the_documented_spaces_and_policy_validate() -> None:
    """docs/FAMILIES.md's examples, and the commented switch in spaces/cifar10.yaml."""
    *spaces, policy = _yaml_blocks(ROOT / "docs" / "FAMILIES.md")
    for snippet in spaces:
        data = family_yaml(snippet["policy"]["family"], base="cifar10")
        data["policy"] = snippet["policy"]
        assert parse_space(yaml.safe_dump(data), "doc").policy.family == data["policy"]["family"]
    assert policy_from_dict(policy, "doc").draw.levels == 11
    lines = (ROOT / "spaces" / "cifar10.yaml").read_text(encoding="utf-8").splitlines()
    for name in ("trivialaugment",):  # the commented switch from cifar10's randaugment
        at = lines.index(f"  #   family: {name}")
        switch = yaml.safe_load("\n".join(line.replace("  #   ", "", 1)
                                          for line in lines[at:at + 2]))
        data = family_yaml(name, switch[name], base="cifar10")
        assert parse_space(yaml.safe_dump(data), "cifar10").policy.family == name


def test_with_family_moves_a_space_between_families_and_back() -> None:
    from spaces.families import with_family

    digits = load_space("digits")  # randaugment
    sub = with_family(digits, "subpolicies", **{"policy.sub_policies": 3})
    assert (sub.policy.family, sub.policy.sub_policies, sub.policy.randaugment) == (
        "subpolicies", 3, None)
    back = with_family(sub, "randaugment")  # the sub-policy keys return to their defaults
    assert back.policy.family == "randaugment" and back.policy.sub_policies == 5
    assert with_family(digits, "randaugment") is digits
