"""SimCLR's default views (Chen et al. 2020, CIFAR-10 settings) written in a space's own ops: the
reference arm `simclr` of a self-supervised search (`reward.kind: self_supervised`), in place of
TrivialAugment. What the space's ops cannot express is said in `simclr_text`."""

from __future__ import annotations

from spaces.ops import get_op
from spaces.policy import Op, Policy, SubPolicy
from spaces.schema import Space

# SimCLR's CIFAR-10 views (colour distortion strength s = 0.5): a random resized crop (scale
# 0.08-1, ratio 3/4-4/3) and a flip, then ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, then
# RandomGrayscale(p 0.2).
SIMCLR_JITTER = 0.4  # brightness, contrast and saturation factors uniform in [0.6, 1.4]
SIMCLR_JITTER_P = 0.8
SIMCLR_GRAY_P = 0.2
JITTER_OPS = ("Brightness", "Contrast", "Color")  # augsearch's ColorJitter parts, in order
CROP_OP = "RandomResizedCrop"  # at magnitude 1: SimCLR's scale (0.08, 1), ratio (3/4, 4/3)
LEVELS = 4  # factor offsets: the midpoints of 4 equal bins of [0, 0.4], each with either sign
SIMCLR_TEXT = (
    "SimCLR's CIFAR views in the space's ops: {crop}{ops}, each with p 0.8 and a factor 1 +- "
    "{{0.05, 0.15, 0.25, 0.35}} (a 4 x 4 Latin square of levels over 16 sub-policies: "
    "ColorJitter(0.4, 0.4, 0.4) drawn on a grid){gray}; not expressible: {uncropped}hue "
    "jitter, one joint p 0.8 for the jitter (each op fires on its own) and its random "
    "order{missing}")
CROPPED = ("RandomResizedCrop at magnitude 1 (scale 0.08-1, ratio 3/4-4/3, always) first in "
           "every sub-policy, after the base's crop and flip (its pad-and-crop still runs "
           "before), then ")
UNCROPPED = "the random resized crop (scale 0.08-1; the base's pad-and-crop stands in), "


def simclr_policy(space: Space) -> Policy | None:
    """SimCLR's default CIFAR views written in the space's ops, or None when the space lists none
    of Brightness, Contrast and Color. Magnitudes are in absolute units (a strength of 0.9 m:
    `spaces.ops`), whatever ranges the space searches. Where the space lists RandomResizedCrop,
    every sub-policy starts with SimCLR's crop (magnitude 1, p 1)."""
    listed = {o.name for o in space.policy.ops}
    jitter = [name for name in JITTER_OPS if name in listed]
    if not jitter:
        return None
    levels = [SIMCLR_JITTER * (k + 0.5) / LEVELS for k in range(LEVELS)]
    crop = [Op(CROP_OP, 1.0, 1.0)] if CROP_OP in listed else []

    def op(name: str, strength: float, p: float) -> Op:
        full = get_op(name).strength(1.0)
        return Op(name, round(min(1.0, strength / full), 6), p)

    subs = []
    for b in range(LEVELS):
        for c in range(LEVELS):
            level = {"Brightness": b, "Contrast": c, "Color": (b + c) % LEVELS}
            ops = crop + [op(name, levels[level[name]], SIMCLR_JITTER_P) for name in jitter]
            if "Color" in listed:  # saturation 0.1 or 1.9, each half the time: grey-ish at 0.2
                ops.append(Op("Color", 1.0, 2 * SIMCLR_GRAY_P))
            subs.append(SubPolicy(tuple(ops)))
    return Policy(tuple(subs), provenance={"reference": "simclr", "expressed": simclr_text(space)})


def simclr_text(space: Space) -> str:
    """What the SimCLR arm holds and what it could not express, in words."""
    listed = {o.name for o in space.policy.ops}
    jitter = [n for n in JITTER_OPS if n in listed]
    missing = [n for n in JITTER_OPS if n not in listed]
    cropped = CROP_OP in listed
    gray = ("; grayscale p 0.2 as Color at full strength with p 0.4 (its sign halves it: "
            "saturation 0.1 half the time, 1.9 the other half)" if "Color" in listed else "")
    return SIMCLR_TEXT.format(
        crop=CROPPED if cropped else "", ops=", ".join(jitter) or "none", gray=gray,
        uncropped="" if cropped else UNCROPPED,
        missing=f"; not in the space: {', '.join(missing)}" if missing else "")
