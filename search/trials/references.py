"""Reference arms: the policies every search trains first, to measure its winner against.

`base` is the space's base augmentation alone (crop/flip only): the answer a user gets without a
search. `trivialaugment` is TrivialAugment (Müller & Hutter 2021) written in the space's own op
table: one op per image, picked uniformly from the space's ops that TrivialAugment uses, at a
magnitude drawn uniformly from a grid over the op's declared range (the midpoints of 4 equal
bins), written as ops drawn per image (`spaces.drawn.Draw`, n = 1, 4 levels).

`randaugment` is a light RandAugment (Cubuk et al. 2020) in the same ops: N = 2 ops per image,
drawn uniformly with replacement, each at one magnitude M = 0.3 of its declared range (a draw
of n = 2 from 14 ops, not the 196 ordered pairs). It is no search reference; the headroom check
trains it
beside the other two (`arm_policies`), since RandAugment's magnitude, unlike TrivialAugment's
uniform one, is the strength a small child may afford.

A reference is named in a trial's config by its `TrialConfig.reference`; its policy comes from
here, not from the config's search dimensions, so a reference need not be expressible in the
searched shape (a 3 x 2 policy cannot hold TrivialAugment). A self-supervised space
(`reward.kind: self_supervised`) has SimCLR's default views in place of TrivialAugment
(`simclr`, written in its ops by `search.trials.simclr`).
"""

from __future__ import annotations

from typing import Any

from search.trials.compile import decode
from search.trials.config import decode as decode_trial
from search.trials.config import dimensions
from search.trials.simclr import simclr_policy
from spaces.families import family_of
from spaces.ops import get_op
from spaces.policy import Draw, DrawnOp, Policy, identity_policy
from spaces.schema import Space

BASE = "base"
TRIVIAL = "trivialaugment"
SIMCLR = "simclr"  # reward.kind: self_supervised (search.rewards.self_supervised)
# TrivialAugmentWide's ops (torchvision), by augsearch op name.
TRIVIAL_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
               "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast",
               "Equalize")
MAGNITUDE_LEVELS = 4  # magnitude grid per op: the midpoints of 4 equal bins of its range
MIN_TRIVIAL_OPS = 2  # fewer non-identity TrivialAugment ops than this: no TrivialAugment arm
RANDAUGMENT = "randaugment"
LIGHT_N, LIGHT_M = 2, 0.3  # the light RandAugment arm: ops per image, magnitude in its range


def trivial_policy(space: Space) -> Policy | None:
    """TrivialAugment in the space's op table, or None when the space holds too few of its ops."""
    chosen = [o for o in space.policy.ops if o.name in TRIVIAL_OPS]
    if sum(o.name != "Identity" for o in chosen) < MIN_TRIVIAL_OPS:
        return None
    ops = []
    for choice in chosen:
        low, high = choice.magnitude
        if not get_op(choice.name).has_magnitude:
            ops.append(DrawnOp(choice.name, (0.0, 0.0), 1.0))
            continue
        half_bin = (high - low) / (2 * MAGNITUDE_LEVELS)  # the grid: first and last midpoints
        ops.append(DrawnOp(choice.name, (round(low + half_bin, 6), round(high - half_bin, 6)),
                           1.0))
    return Policy(draw=Draw(tuple(ops), n=1, levels=MAGNITUDE_LEVELS))


def randaugment_policy(space: Space, n: int = LIGHT_N, m: float = LIGHT_M) -> Policy | None:
    """RandAugment in the space's op table (N ops per image, each at magnitude `m` of its
    range), or None when the space holds too few of its ops."""
    chosen = [o for o in space.policy.ops if o.name in TRIVIAL_OPS]
    if sum(o.name != "Identity" for o in chosen) < MIN_TRIVIAL_OPS:
        return None
    ops = []
    for choice in chosen:
        low, high = choice.magnitude
        level = round(low + (high - low) * m, 6) if get_op(choice.name).has_magnitude else 0.0
        ops.append(DrawnOp(choice.name, (level, level), 1.0))
    return Policy(draw=Draw(tuple(ops), n=n))


def arm_policies(space: Space) -> dict[str, Policy]:
    """Every named arm a trial may train: the reference arms and, for a supervised space, the
    light RandAugment the headroom check adds."""
    arms = reference_policies(space)
    light = None if space.reward.self_supervised else randaugment_policy(space)
    return arms if light is None else {**arms, RANDAUGMENT: light}


def reference_policies(space: Space) -> dict[str, Policy]:
    """The reference arms this space can express, by name, base first."""
    refs = {BASE: identity_policy()}
    if space.reward.self_supervised:  # contrastive views: SimCLR's in place of TrivialAugment
        simclr = simclr_policy(space)
        return refs if simclr is None else {**refs, SIMCLR: simclr}
    trivial = trivial_policy(space)
    if trivial is not None:
        refs[TRIVIAL] = trivial
    return refs


def identity_config(space: Space) -> dict[str, Any] | None:
    """Search dimensions that decode to the base policy, if the space's family has them (for
    sub-policies, every slot Identity)."""
    return family_of(space).identity_config(space)


def policy_of(space: Space, config: dict[str, Any]) -> Policy:
    """The policy a trial trains: its reference's, the one it names explicitly
    (`TrialConfig.policy`, a policy that is no point of the searched space, such as density
    matching's merge), or its search dimensions decoded."""
    trial = decode_trial(config)
    if trial.policy:
        from spaces.policy import policy_from_dict

        return policy_from_dict(trial.policy, "the policy in a trial config")
    name = trial.reference
    if name:
        refs = arm_policies(space)
        if name not in refs:
            raise ValueError(f"unknown reference arm {name!r}; this space has: "
                             f"{', '.join(refs)}")
        return refs[name]
    return decode(space, dimensions(config))


def reference_of(config: dict[str, Any]) -> str:
    """The reference arm a config names ('' for a searched policy)."""
    return decode_trial(config).reference
