"""The free baselines a found policy is judged against in bench/search_quality.py and
bench/transfer.py: what a user gets without a search (search.evaluate's baseline arms), and
the words of the verdicts, computed from paired differences.

A found policy is to beat crop/flip (the base it adds to) and not to be worse than any of the
three free baselines: torchvision's RandAugment(2, 9) and TrivialAugmentWide, and crop/flip +
Cutout (DeVries & Taylor 2017, the baseline Fast AutoAugment reports its gains against).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CROPFLIP = "cropflip"
FREE = ("cutout", "randaugment", "trivialaugment")  # search.evaluate's order
LABELS = {"none": "no augmentation", CROPFLIP: "crop/flip", "cutout": "crop/flip + Cutout",
          "randaugment": "RandAugment", "trivialaugment": "TrivialAugment"}


def baselines(*, none: bool = False) -> str:
    """search.evaluate's `baselines`: crop/flip and the free ones (after `none` if asked)."""
    return ",".join((*(("none",) if none else ()), CROPFLIP, *FREE))


def present(ev: Any, names: Iterable[str] = (CROPFLIP, *FREE)) -> list[str]:
    """Those of `names` that the evaluation `ev` trained, in the order given."""
    trained = {a.name for a in ev.arms}
    return [n for n in names if n in trained]


def difference(ev: Any, arm: str, other: str) -> Any:
    """`arm` − `other`, paired by seed, as the evaluation computed it (a `Difference`)."""
    return next(d for d in ev.differences if d.arm == arm and d.other == other)


def paired(ev: Any, arm: str, other: str) -> Any:
    """`arm` − `other` over the seeds both ran, paired by seed, from the evaluation's runs (it
    computes no difference between two baselines)."""
    from search.evaluate.statistics import paired as paired_t

    by = {(run.arm, run.seed): run.accuracy for run in ev.runs}
    seeds = sorted({s for a, s in by if a == arm} & {s for a, s in by if a == other})
    return paired_t([by[arm, s] for s in seeds], [by[other, s] for s in seeds])


def relation(e: Any, other: str) -> str:
    """How an arm compares with `other`, read from the paired CI `e` of their difference."""
    label = LABELS.get(other, other)
    if e.ci_low > 0:
        return f"better than {label} (CI above 0)"
    if e.ci_high < 0:
        return f"worse than {label} (CI below 0)"
    return f"not distinguishable from {label} (CI contains 0)"


def not_worse(e: Any) -> bool:
    """The paired CI of a difference does not lie below 0."""
    return bool(e.ci_high >= 0)


def ci_text(e: Any) -> str:
    """`+0.0123 [-0.0040, +0.0286]`: a difference's mean and its CI."""
    return f"{e.mean:+.4f} [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"
