"""What every trial of a search shares besides its config, and what a trial checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spaces.schema import Space


@dataclass
class TrialContext:
    """What a trial needs besides its config; built once in the driver, shared by all trials."""

    space: Space
    search_seed: int
    threads: int | None = None
    record_schedule: bool = False


@dataclass
class Checkpointed:
    """What goes into a trial checkpoint: the child's state and, for PBT, its policy schedule."""

    state: Any
    schedule: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
