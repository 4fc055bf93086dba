"""The typed trial config: one record of what the orchestration adds to a trial's search
dimensions, one encoding, and seeds that stay what they were before it existed."""

from __future__ import annotations

import pytest

from search.trials.cohorts import cohort_config, members
from search.trials.config import (
    TrialConfig,
    decode,
    dimensions,
    encode,
    fixed_runs,
    flat,
    policy_config,
    seed_config,
    updated,
    with_fields,
)
from search.trials.context import TrialContext
from search.trials.seeds import trial_seeds
from spaces.policy import Op, Policy, SubPolicy, policy_to_dict
from spaces.schema import load_space

DIMS = {"sp0_op0": "Rotate", "sp0_op0_Rotate_mag": 0.25, "sp0_op0_prob": 0.5,
        "sp0_op1": "Identity", "sp0_op1_prob": 0.7, "sp1_op0": "Cutout",
        "sp1_op0_Cutout_mag": 0.5, "sp1_op0_prob": 0.3, "sp1_op1": "Invert", "sp1_op1_prob": 0.9,
        "sp2_op0": "ShearX", "sp2_op0_ShearX_mag": 0.1, "sp2_op0_prob": 0.2,
        "sp2_op1": "Identity", "sp2_op1_prob": 0.4, "mixup_alpha": 0.1}
IDENTITY = {k: "Identity" for k in DIMS if k.count("_") == 1 and "_op" in k}
MERGED = policy_to_dict(Policy((SubPolicy((Op("Rotate", 0.2, 0.5),)),),
                               provenance={"merged_from": ["a", "b"]}))
SCHEDULE = [[0, DIMS], [5, {**DIMS, "sp0_op0_Rotate_mag": 0.3}]]
# Configs as the modules wrote them before the typed config existed (private keys by hand), with
# the seeds trial_seeds gave them then: (search seed 3, common random numbers) and
# (search seed 0, independent seeds). A default search's outputs depend on these staying equal.
PINNED = {
    "searched": (DIMS, (1576890651, 1325270535), 1322270526),
    "confirmed": ({**DIMS, "_replicate": 2, "_stage": "confirm", "_candidate": "abc"},
                  (960329833, 1325286373), 1322286364),
    "base": ({"_reference": "base"}, (1576890651, 606493983), 603493974),
    "base in space": ({**IDENTITY, "_reference": "base"}, (1576890651, 621700843), 618700834),
    "trivial confirmed": ({"_reference": "trivialaugment", "_replicate": 1, "_stage": "confirm",
                           "_candidate": "trivialaugment"}, (457190280, 1125237110), 1122237101),
    "fold": ({"_reference": "base", "_fold": 1}, (1576890651, 606493983), 603493974),
    # an explicit policy's seeds come from its content alone since its provenance (Tune's random
    # trial ids) left them: before, (1576890651, 221278152) and 218278143
    "explicit policy": ({"_policy": MERGED}, (1576890651, 91417459), 88417450),
    "replayed schedule": ({**DIMS, "_replicate": 3, "_schedule": SCHEDULE},
                          (2105776027, 1408724010), 1405724001),
    "explored": ({**DIMS, "_reference": ""}, (1576890651, 1325270535), 1322270526),
    "test hook": ({**DIMS, "_crash_once": "/tmp/x"}, (1576890651, 1325270535), 1322270526),
}


@pytest.mark.parametrize("name", list(PINNED))
def test_seeds_are_what_they_were_before_the_typed_config(name: str) -> None:
    config, crn, independent = PINNED[name]
    space = load_space("digits")
    assert trial_seeds(TrialContext(space, 3), config) == crn
    off = space.replace(**{"reward.common_random_numbers": False})
    assert trial_seeds(TrialContext(off, 0), config) == (independent, independent)


@pytest.mark.parametrize("name", list(PINNED))
def test_encoding_a_decoded_config_gives_it_back(name: str) -> None:
    config = PINNED[name][0]
    trial = decode(config)
    again = {**dimensions(config), **encode(trial)}
    if name == "explored":  # an empty reference is the default: not written again
        assert again == DIMS
    else:
        assert again == config
    assert decode(again) == trial


def test_a_decoded_config_is_typed() -> None:
    trial = decode({**DIMS, "_replicate": 2, "_stage": "confirm", "_candidate": "abc",
                    "_fold": 0, "_schedule": SCHEDULE})
    assert trial == TrialConfig(replicate=2, stage="confirm", candidate="abc", fold=0,
                                schedule=SCHEDULE)
    assert decode(DIMS) == TrialConfig()  # a searched policy of the search itself
    assert encode(TrialConfig()) == {}
    assert encode(TrialConfig(fold=0)) != {}  # fold 0 is a fold


def test_the_policy_and_the_seed_keep_only_what_names_them() -> None:
    config = {**DIMS, "_replicate": 2, "_stage": "confirm", "_candidate": "abc",
              "_schedule": SCHEDULE, "_crash_once": "/tmp/x", "_fold": 1}
    assert policy_config(config) == DIMS
    assert seed_config(config) == {**DIMS, **encode(TrialConfig(schedule=SCHEDULE))}
    named = policy_config({**DIMS, **encode(TrialConfig(reference="base", policy=MERGED))})
    assert decode(named) == TrialConfig(reference="base", policy=MERGED)


def test_fields_are_written_as_given_and_changed_by_name() -> None:
    cleared = with_fields({**DIMS, **encode(TrialConfig(reference="base"))}, reference="")
    assert dimensions(cleared) == DIMS and decode(cleared).reference == ""
    assert cleared != DIMS  # written: PBT's explore overrides a reference this way
    with pytest.raises(TypeError, match="not TrialConfig fields: seed"):
        with_fields(DIMS, seed=1)
    moved = updated({**DIMS, **encode(TrialConfig(reference="base"))}, replicate=4)
    assert decode(moved) == TrialConfig(reference="base", replicate=4)


def test_wrapped_configs() -> None:
    wrapped_members = [{**DIMS, **encode(TrialConfig(replicate=1))}, dict(IDENTITY)]
    assert members(cohort_config(wrapped_members)) == wrapped_members
    assert members(DIMS) is None
    wrapped = {**fixed_runs(wrapped_members[0]), "extra": 1}
    assert flat(wrapped) == {**wrapped_members[0], "extra": 1}
    assert flat(DIMS) == DIMS


def test_an_explicit_policy_seeds_by_its_content_not_its_provenance() -> None:
    """A merged policy names the Tune trial ids it came from, random in every run: a rerun of the
    same search must still train it under the same draws (its confirmation rewards repeat)."""
    rerun = policy_to_dict(Policy((SubPolicy((Op("Rotate", 0.2, 0.5),)),),
                                  provenance={"merged_from": ["c", "d"]}))
    other = policy_to_dict(Policy((SubPolicy((Op("Rotate", 0.3, 0.5),)),),
                                  provenance={"merged_from": ["a", "b"]}))
    ctx = TrialContext(load_space("digits"), 3)
    confirmed = encode(TrialConfig(replicate=1, candidate="merged"))
    assert trial_seeds(ctx, {"_policy": MERGED, **confirmed}) == \
        trial_seeds(ctx, {"_policy": rerun, **confirmed})
    assert trial_seeds(ctx, {"_policy": MERGED})[1] != trial_seeds(ctx, {"_policy": other})[1]
    assert policy_config({"_policy": MERGED})["_policy"]["provenance"]  # still exported
