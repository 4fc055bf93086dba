"""Fault injection for tests: the test hooks a trial config may carry (`TrialConfig.crash_once`)."""

from __future__ import annotations

import json
import os
from typing import Any

from search.trials.config import decode, policy_config


def maybe_crash_once(config: dict[str, Any], epoch: int) -> None:
    """Kill this worker process once, after epoch 1, where the config names a marker file that
    does not exist yet (it is written first, so the retry runs through)."""
    marker = decode(config).crash_once
    if marker and epoch == 1 and not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8") as f:
            f.write(json.dumps(policy_config(config)))
        os._exit(1)
