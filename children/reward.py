"""A child's reward from its epochs, and which images score it.

The reward is the mean validation accuracy of the last (or best) epochs, DeepAugment's train−val
gap filter optional; PBT's reward counts only the epochs since the policy last changed. The
validation pool is scored whole or through a sample drawn from the common seed; the audit set,
which the reward never sees, only in the epochs the reward reads.
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from children.datasets import Arrays
from children.errors import DataError

if TYPE_CHECKING:
    from spaces.schema import RewardSpec

__all__ = ["first_audit_epoch", "pack_hits", "reward_from_history", "unpack_hits",
           "val_sample"]

_VAL_SAMPLE_STREAM = 7  # seed-sequence key of the trial's validation sample


def first_audit_epoch(reward: RewardSpec, total: int) -> int:
    """The audit set is scored only where the reward reads (the last epochs, or every epoch for
    `epochs: best`): on a small train split, scoring it every epoch would cost more than
    training."""
    return max(0, total - reward.last_epochs) if reward.epochs == "last" else 0


def reward_from_history(
    history: list[Any], reward: RewardSpec, since: int = 0
) -> tuple[float, list[int], str]:
    """Mean val accuracy of `reward.last_epochs` epochs: the last ones, or the best ones.

    With `reward.max_train_val_gap` set, epochs whose train − val accuracy exceeds it are left
    out (DeepAugment); when that leaves none, the last epoch counts and the note says so.
    `reward.epochs: best` averages the highest val accuracies of all epochs (DeepAugment).
    `since` (a 0-based epoch: PBT's last explore) leaves out the epochs trained before it, under
    another policy or by the donor whose weights were copied; with no scored epoch since, the
    reward is NaN.
    """
    n = reward.last_epochs
    scored = [h for h in history if math.isfinite(h.val_accuracy) and h.epoch > since]
    window = scored[-n:] if reward.epochs == "last" else scored
    kept = window
    note = ""
    gap = reward.max_train_val_gap
    if gap is not None:
        kept = [h for h in window if h.train_accuracy - h.val_accuracy <= gap]
        if not kept:
            kept = window[-1:]
            note = (f"all of the last {len(window)} epochs had train-val gap > {gap:g}; the "
                    f"reward is epoch {kept[0].epoch}'s val accuracy")
    if reward.epochs == "best":
        kept = sorted(sorted(kept, key=lambda h: -h.val_accuracy)[:n], key=lambda h: h.epoch)
    if not kept:
        return math.nan, [], (f"no epoch scored on the validation data since epoch {since} yet"
                              if since else "no epoch scored on the validation data yet")
    value = float(np.mean([h.val_accuracy for h in kept]))
    return value, [h.epoch for h in kept], note


def val_sample(pool: Arrays, reward: RewardSpec, seed: int) -> np.ndarray | None:
    """The rows of the validation pool a trial is scored on: all (None) or a fresh sample."""
    size = reward.val_sample_size
    if reward.validation == "pool" or size is None:
        return None
    if size > len(pool):
        raise DataError(f"reward.val_sample_size is {size} but the validation pool holds "
                        f"{len(pool)} images; lower reward.val_sample_size or raise "
                        f"dataset.val_pool_size")
    rng = np.random.default_rng((seed, _VAL_SAMPLE_STREAM))
    return np.sort(rng.choice(len(pool), size=size, replace=False))


def pack_hits(hits: np.ndarray) -> str:
    """Per-image correctness (bool, one per audit image) as a short text a trial can report:
    `<count>:<base64 of the packed bits>` (a confirmation decides with the images' spread)."""
    bits = np.packbits(np.asarray(hits, dtype=bool))
    return f"{len(hits)}:{base64.b64encode(bits.tobytes()).decode('ascii')}"


def unpack_hits(text: str) -> np.ndarray | None:
    """`pack_hits`'s bools back; None for an empty or malformed text."""
    count, _, data = str(text or "").partition(":")
    try:
        n = int(count)
        bits = np.frombuffer(base64.b64decode(data, validate=True), dtype=np.uint8)
    except ValueError:
        return None
    if n <= 0 or len(bits) * 8 < n:
        return None
    return np.unpackbits(bits)[:n].astype(bool)
