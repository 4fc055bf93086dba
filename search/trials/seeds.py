"""A trial's seeds: the common random numbers every trial of a search shares, and its own
augmentation draws, both from the search seed and what the config names (never Tune's trial id)."""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from search.trials.config import decode, seed_config
from search.trials.context import TrialContext


def trial_seeds(ctx: TrialContext, config: dict[str, Any]) -> tuple[int, int]:
    """A trial's (common seed, augmentation seed).

    The common seed fixes the child's initial weights, batch order and dropout; it comes from the
    search seed and the replicate alone, so every trial of a search shares it (common random
    numbers) and a reward difference is the policies' difference. The augmentation seed comes
    from the policy's content as well (never Tune's trial id), so the same policy in two trials
    trains identically and a repeated search reproduces every reward. With
    `reward.common_random_numbers: false`, both are the augmentation seed (independent draws).
    """
    replicate = decode(config).replicate
    text = json.dumps(seed_config(config), sort_keys=True, default=str)
    aug = (ctx.search_seed * 1_000_003 + replicate * 7_919 + zlib.crc32(text.encode())) % 2**31
    if not ctx.space.reward.common_random_numbers:
        return aug, aug
    common = int(np.random.SeedSequence((ctx.search_seed, replicate)).generate_state(1)[0])
    return common % 2**31, aug
