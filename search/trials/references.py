"""Reference arms: the policies every search trains first, to measure its winner against.

`base` is the space's base augmentation alone (crop/flip only): the answer a user gets without a
search. `trivialaugment` is TrivialAugment (Müller & Hutter 2021) written in the space's own op
table: one op per image, picked uniformly from the space's ops that TrivialAugment uses, at a
magnitude drawn uniformly from a grid over the op's declared range. A policy picks one sub-policy
per image uniformly, so each (op, magnitude level) pair is one single-op sub-policy; ops without
a magnitude are repeated as often, so every op is equally likely, as in TrivialAugment.

A reference is named in a trial's config by its `TrialConfig.reference`; its policy comes from
here, not from the config's search dimensions, so a reference need not be expressible in the
searched shape (a 3 x 2 policy cannot hold TrivialAugment). A self-supervised space
(`reward.kind: self_supervised`) has SimCLR's default views in place of TrivialAugment
(`simclr`, written in its ops by `search.trials.simclr`).
"""

from __future__ import annotations

from typing import Any

from search.trials.compile import decode, slot
from search.trials.config import decode as decode_trial
from search.trials.config import dimensions
from search.trials.simclr import simclr_policy
from spaces.ops import get_op
from spaces.policy import Op, Policy, SubPolicy, identity_policy
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


def trivial_policy(space: Space) -> Policy | None:
    """TrivialAugment in the space's op table, or None when the space holds too few of its ops."""
    chosen = [o for o in space.policy.ops if o.name in TRIVIAL_OPS]
    if sum(o.name != "Identity" for o in chosen) < MIN_TRIVIAL_OPS:
        return None
    subs = []
    for choice in chosen:
        low, high = choice.magnitude
        has_magnitude = get_op(choice.name).has_magnitude
        for k in range(MAGNITUDE_LEVELS):
            level = low + (high - low) * (k + 0.5) / MAGNITUDE_LEVELS if has_magnitude else 0.0
            subs.append(SubPolicy((Op(choice.name, round(level, 6), 1.0),)))
    return Policy(tuple(subs))


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
    """Search dimensions that decode to the base policy (every slot Identity), if the space can."""
    if "Identity" not in {o.name for o in space.policy.ops}:
        return None
    p = space.policy
    return {slot(i, j): "Identity" for i in range(p.sub_policies)
            for j in range(p.ops_per_sub_policy)}


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
        refs = reference_policies(space)
        if name not in refs:
            raise ValueError(f"unknown reference arm {name!r}; this space has: "
                             f"{', '.join(refs)}")
        return refs[name]
    return decode(space, dimensions(config))


def reference_of(config: dict[str, Any]) -> str:
    """The reference arm a config names ('' for a searched policy)."""
    return decode_trial(config).reference
